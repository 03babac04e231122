"""The local server launcher: real start/stop against Java, plus its bad-input paths."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


@pytest.mark.neo4j
def test_tls_to_a_server_without_tls_says_tls_failed(neo4j_server: Any) -> None:
    config = _session(neo4j_server)
    for scheme in ("bolt+s", "neo4j+s", "bolt+ssc"):
        with pytest.raises(
            Neo4jError, match=f"TLS with Neo4j at {re.escape(scheme)}://.* failed .*use bolt://"
        ):
            connect(Neo4jSettings(uri=f"{scheme}://127.0.0.1:{config.bolt_port}", password="whatever1"))
    with pytest.raises(Neo4jError, match="cannot reach Neo4j"):
        connect(Neo4jSettings(uri=f"bolt+s://127.0.0.1:{local.free_port()}"))


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
    args = ["server", "start", "--state-dir", str(tmp_path), "--password", "long-enough", "--no-auth"]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 2 and "either --password or --no-auth" in result.output
    assert not (tmp_path / "neo4j.password").exists()


# ------------------------------------------------------------------ safe by default (session server)
def _session(neo4j_server: Any) -> Any:
    if neo4j_server is None:
        pytest.skip("external server: not started by cnngraph")
    return neo4j_server


@pytest.mark.neo4j
def test_default_start_has_auth_and_owner_only_files(neo4j_server: Any, neo4j_settings: Any) -> None:
    config = _session(neo4j_server)
    password = local.stored_password(config)
    assert password is not None and len(password) >= 16 and password == neo4j_settings.password
    assert stat.S_IMODE(config.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.store_dir.stat().st_mode) == 0o700
    assert password not in Path(f"/proc/{local.status(config).pid}/cmdline").read_text(errors="replace")
    with pytest.raises(Neo4jError, match="wrong or missing password"):
        connect(Neo4jSettings(uri=config.bolt_uri))


@pytest.mark.neo4j
def test_cli_and_api_pick_up_the_stored_password(
    neo4j_server: Any, cli_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _session(neo4j_server)
    env = {"CNNGRAPH_STATE_DIR": str(config.state_dir), "NEO4J_URI": f"neo4j://localhost:{config.bolt_port}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    result = runner.invoke(cli_app, ["models", "--json"], env={**env, "NEO4J_PASSWORD": None})
    assert result.exit_code == 0, result.output
    assert Neo4jSettings.from_env().password == local.stored_password(config)
    # Another server's address never gets this password.
    assert Neo4jSettings(uri="bolt://127.0.0.1:1").with_local_password().password is None


@pytest.mark.neo4j
def test_cross_origin_requests_get_no_data(neo4j_server: Any) -> None:
    config = _session(neo4j_server)
    url = f"http://127.0.0.1:{config.http_port}/db/neo4j/tx/commit"
    body = json.dumps({"statements": [{"statement": "MATCH (n) RETURN count(n) AS n"}]}).encode()
    headers = {"Origin": "https://evil.example", "Content-Type": "application/json"}
    status, got, text = _http("POST", url, body, headers)
    assert status == 401 and '"results"' not in text
    assert got.get("Access-Control-Allow-Origin") in (None, f"http://127.0.0.1:{config.http_port}")
    # Even a request that carried the password would be unreadable to that page: not its origin.
    token = base64.b64encode(f"neo4j:{local.stored_password(config)}".encode()).decode()
    status, got, text = _http("POST", url, body, {**headers, "Authorization": f"Basic {token}"})
    assert status == 200 and '"results"' in text
    assert got.get("Access-Control-Allow-Origin") == f"http://127.0.0.1:{config.http_port}"
    status, got, _ = _http("OPTIONS", url, None, {**headers, "Access-Control-Request-Method": "POST"})
    assert got.get("Access-Control-Allow-Origin") in (None, f"http://127.0.0.1:{config.http_port}")
    # Neo4j 5.26 has no origin check for Bolt over WebSocket: the upgrade is accepted and auth is
    # what keeps the page out. Without the password its HELLO fails; with it, the same bytes pass.
    assert _bolt_over_websocket(config.bolt_port, "https://evil.example", None) == (101, 0x7F)
    password = local.stored_password(config)
    assert _bolt_over_websocket(config.bolt_port, "https://evil.example", password) == (101, 0x70)


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")


def _bolt_over_websocket(port: int, origin: str, password: str | None) -> tuple[int, int | None]:
    """A page's view of Bolt: WebSocket upgrade with ``origin``, Bolt 4.4 handshake, HELLO.

    Returns the HTTP status of the upgrade and the signature of the answer to HELLO (0x70 SUCCESS,
    0x7F FAILURE), hand-encoded so that nothing but the wire is trusted.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        code = int(head.split()[1])
        if code != 101:
            return code, None
        _ws_send(sock, bytes.fromhex("6060b017") + bytes.fromhex("00000404") + bytes(12))
        assert _ws_recv(sock) == bytes.fromhex("00000404")
        auth = {"scheme": "none"} if password is None else {
            "scheme": "basic", "principal": "neo4j", "credentials": password
        }  # fmt: skip
        hello = b"\xb1\x01" + _pack_map({"user_agent": "evil/1.0", **auth})
        _ws_send(sock, len(hello).to_bytes(2, "big") + hello + b"\x00\x00")
        answer = _ws_recv(sock)
    return code, answer[3]  # chunk size (2 bytes), struct marker, signature


def _pack_map(entries: dict[str, str]) -> bytes:
    def text(value: str) -> bytes:
        data = value.encode()
        return (bytes([0x80 + len(data)]) if len(data) < 16 else bytes([0xD0, len(data)])) + data

    return bytes([0xA0 + len(entries)]) + b"".join(text(k) + text(v) for k, v in entries.items())


def _ws_send(sock: socket.socket, payload: bytes) -> None:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
    sock.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + masked)


def _ws_recv(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the WebSocket"
            data += chunk
        return data

    head = exactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(exactly(2), "big")
    return exactly(size)


# ------------------------------------------------------------------ stop/status by store, start lock
@pytest.mark.neo4j
def test_a_stale_pid_file_never_stops_another_state_dirs_server(
    neo4j_server: Any, cli_app: Any, tmp_path: Path
) -> None:
    session = _session(neo4j_server)
    other_pid = local.status(session).pid
    config = local.ServerConfig(tmp_path / "state")
    config.state_dir.mkdir()
    config.pid_file.write_text(f"{other_pid}\n")  # the PID now belongs to the session's server
    assert local.status(config) is None
    config.pid_file.write_text(f"{other_pid}\n")
    assert local.stop(config) is None
    assert local.process_alive(other_pid)
    result = runner.invoke(cli_app, ["server", "stop", "--state-dir", str(config.state_dir)])
    assert result.exit_code == 0 and "no cnngraph Neo4j is running" in result.output
    assert local.process_alive(other_pid)
    with connect(Neo4jSettings(uri=session.bolt_uri, password=local.stored_password(session))) as driver:
        assert driver.execute_query("RETURN 1 AS one").records[0]["one"] == 1


@pytest.mark.neo4j
@pytest.mark.slow
def test_two_starts_give_one_server_that_status_and_stop_see(cli_app: Any, tmp_path: Path) -> None:
    """Two 'server start' at once on one state dir, with a password; then a restart without one."""
    state = tmp_path / "state"
    bolt, http = local.free_port(), local.free_port()
    args = ["--state-dir", str(state), "--bolt-port", str(bolt), "--http-port", str(http)]
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("NEO4J_PASSWORD", None)
    password = "correct-horse-battery"
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "cnngraph", "server", "start", *args, "--password", password],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]  # fmt: skip
    results = [(p.communicate(timeout=400), p.returncode) for p in starts]
    config = local.ServerConfig(state, bolt_port=bolt, http_port=http)
    try:
        codes = sorted(code for _, code in results)
        assert codes == [0, 2], results
        loser = next(err for (_, err), code in results if code == 2)
        assert "already runs from" in loser
        winner = next(out for (out, _), code in results if code == 0)
        pid = int(config.pid_file.read_text())
        assert f"pid {pid}" in winner and "auth on" in winner
        assert local.status(config) is not None and local.status(config).pid == pid
        status = subprocess.run(
            [sys.executable, "-m", "cnngraph", "server", "status", *args],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert status.returncode == 0 and str(pid) in status.stdout and "5.26" in status.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/browser/", timeout=30) as page:
            assert page.status == 200 and b"Neo4j" in page.read()
        survivor = connect(Neo4jSettings(uri=f"bolt://127.0.0.1:{bolt}", password=password))
    finally:
        stopped = runner.invoke(cli_app, ["server", "stop", *args])
    assert stopped.exit_code == 0 and f"pid {pid}" in stopped.output
    assert not local.process_alive(pid) and not config.pid_file.exists()
    # A driver that outlives its server gets one clear error, not a driver traceback.
    with pytest.raises(Neo4jError, match="cannot reach Neo4j"):
        list_models(survivor)
    survivor.close()
    # Restarted without --password, the store keeps auth on with the stored password. Given too
    # short a time to start, the server is not killed: it is said to keep running, and it answers.
    try:
        with pytest.raises(ServerError, match="is not ready after 1 s and keeps running"):
            local.start(config, timeout=1)
        info = local.status(config)
        assert info is not None and not info.ready and info.auth
        _wait_for_bolt(config.bolt_uri, password)
        with pytest.raises(ServerError, match="already runs"):
            local.start(config)
        with pytest.raises(Neo4jError, match="wrong or missing password"):
            connect(Neo4jSettings(uri=config.bolt_uri))
        with connect(Neo4jSettings(uri=config.bolt_uri, password=password)) as driver:
            assert driver.execute_query("RETURN 1 AS one").records[0]["one"] == 1
    finally:
        restarted = local.stop(config)
    assert restarted is not None and not local.process_alive(restarted)


def _wait_for_bolt(uri: str, password: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with connect(Neo4jSettings(uri=uri, password=password)):
                return
        except Neo4jError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


# ------------------------------------------------- issue 33: password mode, a store in use, recovery
def test_a_loose_password_file_is_made_owner_only_at_start(tmp_path: Path) -> None:
    """An existing neo4j.password with mode 0644 (copied, restored from a backup) is 0600 after a
    start, even one that fails later (here a heap size the JVM refuses)."""
    config = local.ServerConfig(
        tmp_path / "state", bolt_port=local.free_port(), http_port=local.free_port(), heap="not-a-size"
    )
    config.state_dir.mkdir()
    config.password_file.write_text("kept-password-123\n")
    os.chmod(config.password_file, 0o644)
    with pytest.raises(ServerError, match="exited during start"):
        local.start(config, timeout=60)
    assert stat.S_IMODE(config.password_file.stat().st_mode) == 0o600
    assert local.stored_password(config) == "kept-password-123"


@pytest.mark.neo4j
def test_a_store_open_in_another_server_is_refused_in_one_line(
    neo4j_server: Any, neo4j_settings: Any, cli_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second server on the session server's store (reached from another state directory, whose
    PID file knows nothing of it): one line naming the holder, no Java stack, nothing left running.
    Both ways it is found: the lock probe before any JVM starts, and the launcher's own failure
    when a start races past the probe."""
    session = _session(neo4j_server)
    holder = local.status(session).pid
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "store").symlink_to(session.store_dir)
    config = local.ServerConfig(state, bolt_port=local.free_port(), http_port=local.free_port(), heap="256m")
    expected = f"the store '{config.store_dir}' is open in another process (pid {holder})"
    with pytest.raises(ServerError) as probed:
        local.start(config, timeout=120)
    assert str(probed.value).startswith(expected) and "\n" not in str(probed.value)
    args = [
        "--state-dir",
        str(state),
        "--bolt-port",
        str(config.bolt_port),
        "--http-port",
        str(config.http_port),
    ]
    result = runner.invoke(cli_app, ["server", "start", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [f"error: {probed.value}"]
    monkeypatch.setattr(local, "_refuse_a_store_in_use", lambda config: None)  # as if a start raced it
    with pytest.raises(ServerError) as raced:
        local.start(config, timeout=120)
    message = str(raced.value)
    assert message.startswith(expected) and "\n" not in message
    assert "at org.neo4j" not in message and "Exception" not in message
    assert local.status(config) is None and not config.pid_file.exists()
    with connect(neo4j_settings) as driver:  # the holder was not disturbed
        assert driver.execute_query("RETURN 1 AS one").records[0]["one"] == 1
    assert local.process_alive(holder)


@pytest.mark.neo4j
@pytest.mark.slow
def test_a_start_after_kill_9_says_the_store_is_recovering(tmp_path: Path) -> None:
    """kill -9 of a server, its password file loosened to 0644, then 'cnngraph server start': it
    says the last server did not stop cleanly and that Neo4j recovers the store (on stderr, so
    piped output sees it too), reports the recovery, and the password file is 0600 again."""
    state = tmp_path / "state"
    bolt, http = local.free_port(), local.free_port()
    config = local.ServerConfig(state, bolt_port=bolt, http_port=http, heap="512m", pagecache="64m")
    killed = local.start(config, timeout=300).pid
    try:
        os.kill(killed, signal.SIGKILL)
        deadline = time.time() + 30
        while local.process_alive(killed) and time.time() < deadline:
            time.sleep(0.1)
        assert not local.process_alive(killed)
        os.chmod(config.password_file, 0o644)
        env = {**os.environ, "COLUMNS": "250"}
        env.pop("NEO4J_PASSWORD", None)
        args = ["--state-dir", str(state), "--bolt-port", str(bolt), "--http-port", str(http)]
        args += ["--heap", "512m", "--pagecache", "64m"]
        proc = subprocess.run(
            [sys.executable, "-m", "cnngraph", "server", "start", *args],
            env=env, capture_output=True, text=True, check=False, timeout=400,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"the last Neo4j of this store (pid {killed}) did not stop cleanly" in proc.stderr
        assert "Neo4j is recovering the store from its transaction logs" in proc.stderr
        assert "after recovering the store" in proc.stdout and "Maven" not in proc.stdout + proc.stderr
        info = local.status(config)
        assert info is not None and info.recovered and info.pid != killed
        assert stat.S_IMODE(config.password_file.stat().st_mode) == 0o600
    finally:
        local.stop(config)
