"""The local server launcher: real start/stop against Java, plus its bad-input paths."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnngraph.errors import ConfigError, Neo4jError, ServerError
from cnngraph.loader.catalog import list_models
from cnngraph.loader.connection import connect
from cnngraph.server import local
from cnngraph.settings import Neo4jSettings

runner = CliRunner()


@pytest.mark.neo4j
def test_session_server_answers_cypher_and_serves_browser(neo4j_driver, neo4j_settings) -> None:
    records, _, _ = neo4j_driver.execute_query("RETURN 1 AS one")
    assert records[0]["one"] == 1
    neo4j_driver.execute_query("CREATE (:ServerTest {value: $v})", v=42)
    records, _, _ = neo4j_driver.execute_query("MATCH (n:ServerTest) RETURN n.value AS v")
    assert [r["v"] for r in records] == [42]
    neo4j_driver.execute_query("MATCH (n:ServerTest) DELETE n")
    if os.environ.get("CNNGRAPH_TEST_NEO4J_URI"):
        pytest.skip("external server: its HTTP port is unknown")


@pytest.mark.neo4j
def test_wrong_password_is_one_clear_error(neo4j_settings) -> None:
    if neo4j_settings.password is None:
        pytest.skip("the server runs without auth")
    bad = Neo4jSettings(uri=neo4j_settings.uri, password=neo4j_settings.password + "x")
    with pytest.raises(Neo4jError, match="wrong or missing password"):
        connect(bad)


def test_unreachable_server_is_one_clear_error() -> None:
    port = local.free_port()
    with pytest.raises(Neo4jError, match="cannot reach Neo4j"):
        connect(Neo4jSettings(uri=f"bolt://127.0.0.1:{port}"))


def test_bad_uri_scheme() -> None:
    with pytest.raises(Neo4jError, match="bad Neo4j URI"):
        connect(Neo4jSettings(uri="http://127.0.0.1:7474"))


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = local.ServerConfig(tmp_path, bolt_port=port, http_port=local.free_port())
        with pytest.raises(ServerError, match=f"port {port} .* already in use"):
            local.start(config)


def test_missing_java_or_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = local.ServerConfig(tmp_path, bolt_port=local.free_port(), http_port=local.free_port())
    with pytest.raises(ConfigError, match="Java is not installed"):
        local.start(config)
    with pytest.raises(ConfigError, match="Maven"):
        local.launcher_classpath(rebuild=True)


def test_missing_launcher_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no launcher project"):
        local.launcher_classpath(tmp_path)


def test_stale_pid_file_is_cleared(tmp_path: Path) -> None:
    config = local.ServerConfig(tmp_path)
    config.pid_file.write_text("999999\n")
    assert local.status(config) is None
    assert not config.pid_file.exists()
    config.pid_file.write_text(f"{os.getpid()}\n")  # a live process that is not our launcher
    assert local.stop(config) is None
    assert not config.pid_file.exists()


def test_cli_user_errors_have_no_traceback(cli_app, tmp_path: Path) -> None:
    result = runner.invoke(cli_app, ["server", "start", "--state-dir", str(tmp_path), "--password", "short"])
    assert result.exit_code == 2
    assert "at least 8 characters" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli_app, ["server", "status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no cnngraph Neo4j is running" in result.output


@pytest.mark.neo4j
@pytest.mark.slow
def test_cli_start_status_stop_leaves_no_process(cli_app, tmp_path: Path) -> None:
    bolt, http = local.free_port(), local.free_port()
    args = ["--state-dir", str(tmp_path), "--bolt-port", str(bolt), "--http-port", str(http)]
    result = runner.invoke(cli_app, ["server", "start", *args])
    assert result.exit_code == 0, result.output
    pid = int((tmp_path / "neo4j.pid").read_text())
    survivor = connect(Neo4jSettings(uri=f"bolt://127.0.0.1:{bolt}"))
    try:
        with connect(Neo4jSettings(uri=f"neo4j://127.0.0.1:{bolt}")) as driver:
            records, _, _ = driver.execute_query("RETURN 1 AS one")
            assert records[0]["one"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/browser/", timeout=30) as page:
            assert page.status == 200
            assert b"Neo4j" in page.read()
        status = runner.invoke(cli_app, ["server", "status", *args])
        assert status.exit_code == 0
        assert "5.26" in status.output and "/browser/" in status.output
    finally:
        stopped = runner.invoke(cli_app, ["server", "stop", *args])
    assert stopped.exit_code == 0
    assert f"pid {pid}" in stopped.output
    assert not local.process_alive(pid)
    assert not (tmp_path / "neo4j.pid").exists()
    # A driver that outlives its server gets one clear error, not a driver traceback.
    with pytest.raises(Neo4jError, match="cannot reach Neo4j"):
        list_models(survivor)
    survivor.close()
