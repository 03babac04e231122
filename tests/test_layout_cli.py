"""The whole command chain on both graph layouts, through the CLI against the real Neo4j: map, load
(per-class and ``--layout compact``), score, degrees, prune ``--dry-run`` and sweep give the same
numbers on both."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cnngraph.loader.catalog import drop_model, get_model
from cnngraph.mapping import reference
from cnngraph.mapping.network import MultilayerNetwork

runner = CliRunner()


@pytest.fixture(scope="module")
def mapped(cli_app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small_cnn trained one epoch on a 3-class set, mapped: (checkpoint, mapping file)."""
    folder = tmp_path_factory.mktemp("layouts")
    rng = np.random.default_rng(5)
    labels = np.arange(36) % 3
    images = (rng.random((36, 8, 8)) * 60 + labels[:, None, None] * 60).astype(np.uint8)
    data = folder / "three.npz"
    np.savez(data, images=images, labels=labels, classes=np.array(["low", "mid", "high"]))
    checkpoint = folder / "model.pt"
    args = ["train", "--model", "small_cnn", "--data", str(data), "--width", "0.25", "--epochs", "1"]
    result = runner.invoke(cli_app, [*args, "--batch-size", "12", "--seed", "1", "--out", str(checkpoint)])
    assert result.exit_code == 0, result.output
    mapping = folder / "three_map.npz"
    args = ["map", "--checkpoint", str(checkpoint), str(data), "--images-per-class", "4", "--device", "cpu"]
    result = runner.invoke(cli_app, [*args, "--out", str(mapping)])
    assert result.exit_code == 0, result.output
    return checkpoint, mapping


@pytest.fixture
def names(neo4j_driver: Any) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    out = {"per-class": f"lay-pc-{tag}", "compact": f"lay-c-{tag}"}
    yield out
    for name in out.values():
        drop_model(neo4j_driver, name)


@pytest.mark.neo4j
@pytest.mark.slow
def test_every_command_agrees_on_both_layouts(
    cli_app: typer.Typer,
    neo4j_driver: Any,
    neo4j_env: dict[str, str],
    mapped: tuple[Path, Path],
    names: dict[str, str],
    tmp_path: Path,
) -> None:
    checkpoint, mapping = mapped
    network = MultilayerNetwork.load(mapping)
    outputs: dict[str, dict[str, Any]] = {}
    for layout, name in names.items():
        result = runner.invoke(
            cli_app, ["load", str(mapping), "--name", name, "--layout", layout, "--json"], env=neo4j_env
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["layout"] == layout and report["status"] == "loaded"
        per_arc = 1 if layout == "compact" else network.num_classes
        assert report["relationships"] == network.topology.num_arcs * per_arc
        props = get_model(neo4j_driver, name)
        assert props is not None and props["layout"] == layout
        scores_csv, degrees_csv = tmp_path / f"{layout}-scores.csv", tmp_path / f"{layout}-degrees.csv"
        result = runner.invoke(cli_app, ["score", "--model", name, "--out", str(scores_csv)], env=neo4j_env)
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            cli_app, ["degrees", "--model", name, "--out", str(degrees_csv)], env=neo4j_env
        )
        assert result.exit_code == 0, result.output
        prune = ["prune", "--model", name, "--checkpoint", str(checkpoint), "--dry-run", "--json"]
        result = runner.invoke(cli_app, [*prune, "--rule", "fraction:0.5"], env=neo4j_env)
        assert result.exit_code == 0, result.output
        sweep = ["sweep", "--model", name, "--checkpoint", str(checkpoint), "--json"]
        swept = runner.invoke(
            cli_app,
            [*sweep, "--gamma-start", "0.99", "--gamma-stop", "1.01", "--gamma-step", "0.01"],
            env=neo4j_env,
        )
        assert swept.exit_code == 0, swept.output
        outputs[layout] = {
            "scores": _read_csv(scores_csv),
            "degrees": _read_csv(degrees_csv),
            "prune": json.loads(result.stdout),
            "sweep": json.loads(swept.stdout)["rows"],
        }
    pc, cp = outputs["per-class"], outputs["compact"]
    delta = np.array([float(r["delta"]) for r in cp["scores"]])
    np.testing.assert_allclose(delta, reference.node_scores(network), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(delta, [float(r["delta"]) for r in pc["scores"]], rtol=1e-9, atol=1e-12)
    assert len(cp["degrees"]) == network.topology.num_nodes * network.num_classes
    for a, b in zip(pc["degrees"], cp["degrees"], strict=True):
        assert (a["layer"], a["i"], a["j"], a["class"]) == (b["layer"], b["i"], b["j"], b["class"])
        assert float(a["total"]) == pytest.approx(float(b["total"]), rel=1e-9, abs=1e-12)
    assert pc["prune"]["removed"] == cp["prune"]["removed"]
    assert pc["prune"]["threshold"] == pytest.approx(cp["prune"]["threshold"], rel=1e-9)
    assert [r["layers_removed"] for r in pc["sweep"]] == [r["layers_removed"] for r in cp["sweep"]]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
