"""The graph commands end to end through the CLI: load, models, degrees, score, browse, drop."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from test_loader import synthetic_network
from typer.testing import CliRunner

from cnngraph.cli.browse_cmd import browser_url
from cnngraph.loader.catalog import drop_model
from cnngraph.mapping import reference

runner = CliRunner()


def _run(app: typer.Typer, env: dict[str, str], *args: str) -> Any:
    return runner.invoke(app, list(args), env=env)


@pytest.mark.neo4j
def test_graph_commands_end_to_end(
    cli_app: typer.Typer, neo4j_env: dict[str, str], neo4j_driver: Any, tmp_path: Path
) -> None:
    net = synthetic_network([(6, 6), (6, 6), (3, 3)], classes=3, seed=21)
    model = f"cli-{uuid.uuid4().hex[:8]}"
    path = net.save(tmp_path / f"{model}.npz")
    try:
        result = _run(cli_app, neo4j_env, "load", str(path), "--batch-size", "100", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["model"] == model and report["status"] == "loaded"
        assert report["relationships"] == net.topology.num_arcs * 3

        again = _run(cli_app, neo4j_env, "load", str(path))
        assert again.exit_code == 0 and "already loaded" in again.output

        listed = json.loads(_run(cli_app, neo4j_env, "models", "--json").output)
        mine = [m for m in listed if m["id"] == model]
        assert mine and mine[0]["status"] == "complete" and mine[0]["positions"] == net.topology.num_nodes

        out = tmp_path / "deg.csv"
        result = _run(cli_app, neo4j_env, "degrees", "--model", model, "--out", str(out))
        assert result.exit_code == 0, result.output
        with open(out) as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["layer", "i", "j", "class", "in", "out", "total"]
        assert len(rows) == net.topology.num_nodes * 3
        expected = reference.degrees(net, "mean")
        total = np.array([float(r["total"]) for r in rows]).reshape(-1, 3).T
        np.testing.assert_allclose(total, expected.total, rtol=1e-9, atol=1e-12)
        assert rows[3]["class"] == "0" and rows[3]["j"] == "1"

        scores_csv = tmp_path / "scores.csv"
        result = _run(cli_app, neo4j_env, "score", "--model", model, "--out", str(scores_csv))
        assert result.exit_code == 0, result.output
        assert "delta per layer" in result.output and "conv2" in result.output
        with open(scores_csv) as fh:
            scored = list(csv.DictReader(fh))
        assert list(scored[0]) == ["layer", "i", "j", "delta", "entropy", "mean", "participation"]
        delta = np.array([float(r["delta"]) for r in scored])
        np.testing.assert_allclose(delta, reference.node_scores(net), rtol=1e-9, atol=1e-12)

        summary = json.loads(_run(cli_app, neo4j_env, "score", "--model", model, "--json").output)
        assert [layer["nodes"] for layer in summary["layers"]] == [36, 36, 9]

        result = _run(cli_app, neo4j_env, "drop", "--model", model, "--yes")
        assert result.exit_code == 0 and f"dropped model '{model}'" in result.output
    finally:
        drop_model(neo4j_driver, model)


@pytest.mark.neo4j
def test_unknown_model_is_one_line_error(
    cli_app: typer.Typer, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    for args in (
        ("score", "--model", "no-such-model"),
        ("degrees", "--model", "no-such-model", "--out", str(tmp_path / "x.csv")),
        ("drop", "--model", "no-such-model", "--yes"),
    ):
        result = _run(cli_app, neo4j_env, *args)
        assert result.exit_code == 2, result.output
        assert "model 'no-such-model' is not loaded; 'cnngraph models' lists what is" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.neo4j
def test_wrong_password_is_one_line_error(cli_app: typer.Typer, neo4j_env: dict[str, str]) -> None:
    if not neo4j_env["NEO4J_PASSWORD"]:
        pytest.skip("the test server runs without auth")
    env = {**neo4j_env, "NEO4J_PASSWORD": neo4j_env["NEO4J_PASSWORD"] + "-wrong"}
    result = _run(cli_app, env, "models")
    assert result.exit_code == 2
    assert "wrong or missing password" in result.output and "Traceback" not in result.output


def test_unreachable_server_is_one_line_error(cli_app: typer.Typer) -> None:
    result = _run(cli_app, {"NEO4J_URI": "bolt://127.0.0.1:9", "NEO4J_PASSWORD": ""}, "models")
    assert result.exit_code == 2
    assert "cannot reach Neo4j at bolt://127.0.0.1:9" in result.output


def test_missing_mapping_file(cli_app: typer.Typer, tmp_path: Path) -> None:
    result = _run(cli_app, {}, "load", str(tmp_path / "nothing.npz"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_drop_asks_first(cli_app: typer.Typer) -> None:
    result = runner.invoke(
        cli_app, ["drop", "--model", "x"], input="n\n", env={"NEO4J_URI": "bolt://127.0.0.1:9"}
    )
    assert result.exit_code == 1 and "nothing deleted" in result.output


def test_browse(cli_app: typer.Typer, tmp_path: Path) -> None:
    env = {"NEO4J_URI": "bolt://127.0.0.1:9", "NEO4J_PASSWORD": "", "CNNGRAPH_HTTP_PORT": ""}
    env["CNNGRAPH_STATE_DIR"] = str(tmp_path)  # no local server runs from here
    result = _run(cli_app, env, "browse")
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:7474/browser/?dbms=bolt://127.0.0.1:9&preselectAuthMethod=NO_AUTH" in (
        result.output
    )
    assert "style.grass" in result.output and "--model NAME" in result.output
    assert Path(result.output.split("drop this file onto it: ")[1].split()[0]).is_file()
    assert "autoComplete: false" in result.output
    # The query menu needs the model from the database: unreachable, one line and exit 2.
    menu = _run(cli_app, env, "browse", "--model", "vgg")
    assert menu.exit_code == 2 and len(menu.output.strip().splitlines()) == 1, menu.output


def test_browse_prints_the_real_http_port(cli_app: typer.Typer) -> None:
    env = {"NEO4J_URI": "bolt://127.0.0.1:7999", "NEO4J_PASSWORD": "secret-password"}
    flag = _run(cli_app, env, "browse", "--http-port", "8123")
    assert "Neo4j Browser: http://127.0.0.1:8123/browser/?dbms=bolt://neo4j@127.0.0.1:7999\n" in flag.output
    assert "Log in as:     neo4j, password in the environment variable NEO4J_PASSWORD" in flag.output
    variable = _run(cli_app, {**env, "CNNGRAPH_HTTP_PORT": "8124"}, "browse")
    assert "http://127.0.0.1:8124/browser/" in variable.output


@pytest.mark.neo4j
def test_browse_finds_the_running_local_server(cli_app: typer.Typer, neo4j_server: Any) -> None:
    if neo4j_server is None:
        pytest.skip("the tests use an external server (CNNGRAPH_TEST_NEO4J_URI)")
    env = {"NEO4J_URI": neo4j_server.bolt_uri, "CNNGRAPH_STATE_DIR": str(neo4j_server.state_dir)}
    result = _run(cli_app, {**env, "CNNGRAPH_HTTP_PORT": ""}, "browse")
    assert result.exit_code == 0, result.output
    bolt = neo4j_server.bolt_uri.replace("bolt://", "bolt://neo4j@")
    assert f"http://127.0.0.1:{neo4j_server.http_port}/cnngraph/browser?dbms={bolt}" in result.output
    assert "autoComplete" not in result.output  # this server's opener turns "Connect result nodes" off
    assert str(neo4j_server.state_dir / "neo4j.password") in result.output  # where the password is


def test_browser_url() -> None:
    assert browser_url("neo4j://localhost:7687", auth=True) == (
        "http://localhost:7474/browser/?dbms=neo4j://neo4j@localhost:7687"
    )
    assert browser_url("bolt://10.0.0.5:7688", 8474, auth=False) == (
        "http://10.0.0.5:8474/browser/?dbms=bolt://10.0.0.5:7688&preselectAuthMethod=NO_AUTH"
    )
    assert browser_url("neo4j+s://abc.databases.neo4j.io") == (
        "https://browser.neo4j.io/?connectURL=neo4j+s://abc.databases.neo4j.io"
    )
    assert browser_url("bolt://127.0.0.1:7687", 7474, opener=True) == (
        "http://127.0.0.1:7474/cnngraph/browser?dbms=bolt://neo4j@127.0.0.1:7687"
    )
