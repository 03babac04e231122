"""What people and scripts see: piped tables never cut a name or number, and the commands that
need no model never import torch. Both run the real CLI in a subprocess with stdout to a pipe."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_loader import synthetic_network

from cnngraph.loader.catalog import drop_model
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.mapping.summary import network_summary

# Runs the CLI in this process, then reports whether torch got imported and the exit code.
PROBE = """
import sys
from cnngraph.cli.main import main
sys.argv = ["cnngraph", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
sys.stderr.write(f"\\nPROBE torch={'torch' in sys.modules} exit={code}\\n")
"""


def cli(*args: str | Path, env: dict[str, str] | None = None) -> tuple[str, str, bool, str]:
    """``(stdout, stderr, torch imported, exit code)`` of one CLI run, stdout a pipe, 40 columns."""
    full_env = {**os.environ, "COLUMNS": "40", "TERM": "dumb", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        check=False,
    )
    probe = proc.stderr.strip().splitlines()[-1]
    assert probe.startswith("PROBE "), proc.stderr
    fields = dict(part.split("=") for part in probe.split()[1:])
    return proc.stdout, proc.stderr, fields["torch"] == "True", fields["exit"]


LONG_NAMES = (
    "features.stage_one_block_with_a_long_name.0",
    "features.stage_two_block_with_a_long_name.3",
    "features.stage_three_block_with_a_long_name.6",
)


@pytest.fixture
def long_network() -> MultilayerNetwork:
    net = synthetic_network([(6, 6), (6, 6), (3, 3)], classes=3, seed=5)
    layers = tuple(dataclasses.replace(la, name=n) for la, n in zip(net.layers, LONG_NAMES, strict=True))
    net.node_values = {k: v * 1234.5678 for k, v in net.node_values.items()}
    return dataclasses.replace(net, topology=dataclasses.replace(net.topology, layers=layers))


def test_piped_inspect_prints_every_name_and_number_whole(
    long_network: MultilayerNetwork, tmp_path: Path
) -> None:
    path = long_network.save(tmp_path / "long.npz")
    out, err, torch_loaded, code = cli("inspect", path)
    assert code == "0", err
    assert "…" not in out and "..." not in out
    summary = network_summary(long_network, "mean")
    lines = out.splitlines()
    header = [c.strip() for c in next(x for x in lines if "┃ layer" in x).strip("┃ ").split("┃")]
    for row in summary["layers"]:
        line = next(x for x in lines if row["name"] in x)
        cells = dict(zip(header, (c.strip() for c in line.strip("│ ").split("│")), strict=True))
        assert cells["name"] == row["name"] and cells["nodes"] == f"{row['nodes']:,}"
        for column, key in (("mean", "mean_value"), ("min", "min_value"), ("max", "max_value")):
            assert cells[column] == f"{row[key]:.4g}"
    assert not torch_loaded


def test_commands_without_a_model_do_not_import_torch(
    long_network: MultilayerNetwork, tmp_path: Path
) -> None:
    path = long_network.save(tmp_path / "net.npz")
    state = {"CNNGRAPH_STATE_DIR": str(tmp_path / "state"), "NEO4J_URI": "bolt://127.0.0.1:9"}
    runs = [
        (("--help",), "0"),
        (("browse",), "0"),
        (("browse", "--model", "net"), "2"),  # its queries need the (unreachable) server
        (("inspect", path, "--json"), "0"),
        (("export", path, "--out", tmp_path / "net.gexf"), "0"),
        (("server", "status"), "1"),  # no server runs from this state directory
        (("models",), "2"),  # unreachable server: the one-line error path
    ]
    for args, expected in runs:
        out, err, torch_loaded, code = cli(*args, env=state)
        assert code == expected, (args, out, err)
        assert not torch_loaded, f"'cnngraph {args[0]}' imported torch"
    assert (tmp_path / "net.gexf").is_file()
    # The check itself can fail: a command that needs a model does import torch.
    _, _, torch_loaded_run, _ = cli("map", "small_cnn", tmp_path / "none.npz", "--out", tmp_path / "m.npz")
    assert torch_loaded_run


@pytest.mark.neo4j
def test_graph_commands_piped_whole_and_without_torch(
    neo4j_env: dict[str, str], neo4j_driver: Any, long_network: MultilayerNetwork, tmp_path: Path
) -> None:
    model = f"a-rather-long-model-identifier-{uuid.uuid4().hex}"
    path = long_network.save(tmp_path / f"{model}.npz")
    try:
        for args in (("load", path), ("degrees", "--model", model, "--out", tmp_path / "d.csv")):
            out, err, torch_loaded, code = cli(*args, env=neo4j_env)
            assert code == "0", (args, out, err)
            assert not torch_loaded, f"'cnngraph {args[0]}' imported torch"

        out, err, torch_loaded, code = cli("models", env=neo4j_env)
        assert code == "0" and not torch_loaded, err
        line = next(x for x in out.splitlines() if model in x)
        assert f"{long_network.topology.num_arcs * 3:,}" in line
        assert f"{long_network.topology.num_nodes:,}" in line and "…" not in out

        out, err, torch_loaded, code = cli("score", "--model", model, env=neo4j_env)
        assert code == "0" and not torch_loaded, err
        doc, _, _, _ = cli("score", "--model", model, "--json", env=neo4j_env)
        assert "…" not in out
        for row in json.loads(doc)["layers"]:
            line = next(x for x in out.splitlines() if row["name"] in x)
            assert f"{row['mean_delta']:.4f}" in line and f"{row['max_delta']:.4f}" in line

        # Arcs carry w, the rounded caption weight the Browser style shows.
        records, _, _ = neo4j_driver.execute_query(
            "MATCH (:Position {model: $m})-[r:ARC]->() "
            "RETURN count(r) AS n, count(r.w) AS with_w, sum(abs(r.w - r.mean)) AS off, "
            "max(abs(r.w - round(r.mean, 3))) AS worst",
            m=model,
        )
        assert records[0]["n"] == records[0]["with_w"] == long_network.topology.num_arcs * 3
        assert records[0]["worst"] == 0.0 and records[0]["off"] > 0.0

        out, err, torch_loaded, code = cli("drop", "--model", model, "--yes", env=neo4j_env)
        assert code == "0" and not torch_loaded, err
    finally:
        drop_model(neo4j_driver, model)
    assert np.isfinite(long_network.node_values["mean"]).all()


def test_every_help_page_reads_whole_when_piped(cli_app: Any) -> None:
    """``--help`` of every command and sub-command at the 80 columns of a pipe: nothing cut off
    with an ellipsis (Rich truncates an unbreakable word it cannot fit)."""
    import typer
    from typer.testing import CliRunner

    def paths(command: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [prefix]
        for name, sub in getattr(command, "commands", {}).items():
            found += paths(sub, (*prefix, name))
        return found

    every = paths(typer.main.get_command(cli_app), ())
    assert ("train",) in every and ("server", "start") in every
    runner = CliRunner()
    for path in every:
        result = runner.invoke(cli_app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
        assert result.exit_code == 0, (path, result.output)
        assert "…" not in result.output, f"'cnngraph {' '.join(path)} --help' cuts a word:\n{result.output}"


def test_every_help_text_is_shown_as_written(cli_app: Any) -> None:
    """Rich reads ``[...]`` as markup, so an unescaped ``[default: ...]`` once vanished from
    ``--password``'s help, and a command summary wrapped by hand showed its line break in the list
    of commands. On a wide terminal every option's help and every command's summary reads whole."""
    import inspect

    import typer
    from typer.testing import CliRunner

    def walk(command: Any, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        found = [(prefix, command)]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, (*prefix, name))
        return found

    def words(text: str) -> str:
        return " ".join(text.split())

    runner = CliRunner()
    checked = 0
    for path, command in walk(typer.main.get_command(cli_app), ()):
        result = runner.invoke(cli_app, [*path, "--help"], env={"COLUMNS": "3000", "TERM": "dumb"})
        assert result.exit_code == 0, (path, result.output)
        shown = words(result.output)
        expected = [words(p.help.replace("\\[", "[")) for p in command.params if getattr(p, "help", None)]
        expected += [
            words(inspect.cleandoc(sub.help or "").split("\n\n")[0])
            for sub in getattr(command, "commands", {}).values()
        ]
        for text in expected:
            assert text in shown, f"'cnngraph {' '.join(path)} --help' does not show {text!r}"
            checked += 1
    assert checked > 100


def test_help_imports_neither_the_driver_nor_numpy_nor_torch() -> None:
    """``cnngraph --help`` lists every command without importing what only running one needs (its
    time is bench/bench_cli_startup.py's); the check fails when a command module imports them."""
    probe = (
        "import sys\n"
        "from cnngraph.cli import main\n"
        "main._register()\n"
        "heavy = ('neo4j', 'numpy', 'torch', 'matplotlib', 'captum', 'onnx', 'scipy', 'sklearn')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"registering the commands imported {done.stdout.strip()}"
    # The probe can fail: a module that a command needs to run does import them.
    done = subprocess.run(
        [sys.executable, "-c", probe.replace("main._register()", "import cnngraph.queries.scoring")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "neo4j" in done.stdout and "numpy" in done.stdout
