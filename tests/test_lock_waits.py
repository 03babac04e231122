"""No unbounded waits: a writer stopped inside a transaction (Ctrl-Z, SIGSTOP) holds the model's
lock, and the next load or drop refuses within the documented bound, naming it; killed, it lets the
waiting writer finish; resumed after the server ended its transaction, it fails cleanly and the load
resumes exactly. Against the real server, with real processes where it matters.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_integrity import assert_exact, cli, mid_network, wait_until
from test_loader import graph_counts, synthetic_network

from cnngraph.errors import Neo4jError
from cnngraph.loader import lease, schema, waits, writer
from cnngraph.loader.catalog import drop_model, get_model
from cnngraph.loader.writer import load_network

pytestmark = pytest.mark.neo4j

SLACK = 15.0
"""Seconds allowed beyond ``waits.LOCK_WAIT`` for a CLI process to start, connect and report."""

HOLDING = """
SHOW TRANSACTIONS YIELD metaData, activeLockCount
WHERE metaData.pid = $pid AND activeLockCount > 0
RETURN count(*) AS n
"""
BLOCKED = """
SHOW TRANSACTIONS YIELD metaData, status
WHERE metaData.pid = $pid AND status STARTS WITH 'Blocked'
RETURN count(*) AS n
"""


def _count(driver: Any, query: str, **params: Any) -> int:
    records, _, _ = driver.execute_query(query, params)
    return int(records[0]["n"])


def stop_inside_a_transaction(driver: Any, proc: subprocess.Popen[str], model: str) -> None:
    """SIGSTOP ``proc`` (a load or drop) while it has a transaction open that holds locks: after the
    stop, its transaction must still be there half a second later (no commit was in flight)."""
    wait_until(lambda: get_model(driver, model) is not None, "the writer to start")
    for _ in range(200):
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        if _count(driver, HOLDING, pid=proc.pid) and _count(driver, HOLDING, pid=proc.pid):
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
        assert proc.poll() is None, "the writer ended before it could be stopped inside a transaction"
    raise AssertionError("could not stop the writer inside a transaction")


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ------------------------------------------------------------------ real processes
@pytest.mark.slow
def test_a_stopped_loader_makes_the_next_load_and_drop_refuse_within_the_bound(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    net = mid_network()
    path = net.save(tmp_path / "mid.npz")
    with reaped(cli(["load", str(path), "--name", model_id, "--batch-size", "100"], neo4j_env)) as first:
        stop_inside_a_transaction(driver, first, model_id)
        started = time.monotonic()
        behind = [
            cli(["load", str(path), "--name", model_id], neo4j_env),
            cli(["drop", "--model", model_id, "--yes"], neo4j_env),
        ]
        for proc in behind:
            out, err = proc.communicate(timeout=waits.LOCK_WAIT + 120)
            took = time.monotonic() - started
            assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, (out, err)
            assert "Traceback" not in err and "kill -CONT" in err, err
            assert f"(pid {first.pid} on {socket.gethostname()}), which is stopped" in err, err
            assert took < waits.LOCK_WAIT + SLACK, took
        # Resumed within its transaction's time, it goes on and finishes, exactly.
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert_exact(driver, model_id, net)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["load", "drop"])
def test_killing_a_stopped_writer_lets_the_waiting_one_finish(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    net = mid_network()
    path = net.save(tmp_path / "mid.npz")
    if command == "drop":
        load_network(driver, net, model_id)
        args = ["drop", "--model", model_id, "--yes", "--batch-size", "200"]
    else:
        args = ["load", str(path), "--name", model_id, "--batch-size", "100"]
    with reaped(cli(args, neo4j_env)) as first:
        stop_inside_a_transaction(driver, first, model_id)
        second = cli(args[:4], neo4j_env)  # the same command, without --batch-size
        with reaped(second):
            wait_until(lambda: _count(driver, BLOCKED, pid=second.pid) > 0, "the second writer to wait")
            killed = time.monotonic()
            first.kill()
            first.wait()
            out, err = second.communicate(timeout=600)
            took = time.monotonic() - killed
    assert second.returncode == 0, err
    if command == "load":
        assert f"model '{model_id}' resumed" in out or f"model '{model_id}' loaded" in out, out
        assert_exact(driver, model_id, net)
    else:
        assert f"dropped model '{model_id}'" in out
        assert get_model(driver, model_id) is None
        assert graph_counts(driver, model_id) == {"positions": 0, "arcs": 0, "layers": 0, "classes": 0}
    assert took < waits.LOCK_WAIT, took  # it went on as soon as the lock was free, not at a timeout


# ------------------------------------------------------------------ in process, short bounds
@contextmanager
def holding_the_model(driver: Any, model: str, metadata: dict[str, Any] | None = None) -> Iterator[None]:
    """Another transaction (not a cnngraph writer unless ``metadata`` says so) locks the model node."""
    with driver.session() as session:
        tx = session.begin_transaction(timeout=120, metadata=metadata)
        try:
            tx.run(schema.LOCK_MODEL, model=model).consume()
            yield
        finally:
            tx.rollback()


def test_a_foreign_lock_makes_load_and_drop_refuse_after_the_wait(
    driver: Any, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = synthetic_network([(6, 6), (6, 6)], classes=2, seed=31)
    load_network(driver, net, model_id)
    other = synthetic_network([(5, 5), (5, 5)], classes=2, seed=32)
    monkeypatch.setattr(waits, "LOCK_WAIT", 2.0)
    with holding_the_model(driver, model_id):
        for attempt in (
            lambda: load_network(driver, other, model_id, replace=True),
            lambda: drop_model(driver, model_id),
        ):
            started = time.monotonic()
            with pytest.raises(lease.ModelBusyError, match="locked by another transaction that has not"):
                attempt()
            assert time.monotonic() - started < 2.0 + 8.0
    assert_exact(driver, model_id, net)  # nothing was written or deleted
    assert load_network(driver, other, model_id, replace=True).status == "replaced"
    assert_exact(driver, model_id, other)


def test_a_stalled_cnngraph_transaction_is_named(
    driver: Any, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_network(driver, synthetic_network([(4, 4), (4, 4)], classes=2, seed=33), model_id)
    monkeypatch.setattr(waits, "LOCK_WAIT", 2.0)
    meta = {"app": "cnngraph", "command": "score", "model": model_id, "pid": 4242, "host": "elsewhere"}
    with holding_the_model(driver, model_id, meta), pytest.raises(lease.ModelBusyError) as caught:
        drop_model(driver, model_id)
    text = str(caught.value)
    assert "being written by a cnngraph score (pid 4242 on elsewhere), which is not making progress" in text
    assert "\n" not in text


def test_a_writer_whose_transaction_the_server_ended_fails_cleanly_and_resumes(
    driver: Any, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a writer stopped inside a batch past its timeout and then resumed: the server ends the
    transaction, the writer stops with one line, nothing of that batch is kept, a re-run resumes."""
    net = synthetic_network([(8, 8), (8, 8)], classes=2, seed=34)
    real = writer._batch_tx
    calls = {"n": 0}

    def stalls_in_the_third(*args: Any) -> None:
        calls["n"] += 1
        real(*args)
        if calls["n"] == 3 and args[-1] == "arcs_loaded":
            time.sleep(waits.WRITE_TIMEOUT + 5.0)  # inside the transaction: it is not committed yet

    monkeypatch.setattr(waits, "WRITE_TIMEOUT", 2.0)
    monkeypatch.setattr(writer, "_batch_tx", stalls_in_the_third)
    with pytest.raises(Neo4jError, match="Neo4j ended a transaction of this load") as caught:
        load_network(driver, net, model_id, batch_size=50)
    assert "run the same 'cnngraph load' again to resume it" in str(caught.value)
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "loading" and "writer" not in props
    assert calls["n"] == 3 and props["arcs_loaded"] == 50  # the first arc batch, not the stalled one
    assert graph_counts(driver, model_id)["arcs"] == 50 * net.num_classes
    monkeypatch.undo()
    assert load_network(driver, net, model_id, batch_size=50).status == "resumed"
    assert_exact(driver, model_id, net)


def test_a_waiting_writer_is_named_in_show_transactions(driver: Any, model_id: str) -> None:
    """What SHOW TRANSACTIONS shows of a load that another transaction makes wait: the metadata that
    names the writer (its timeout is not listed there; the tests above show it is enforced)."""
    net = synthetic_network([(6, 6), (6, 6)], classes=2, seed=35)
    with pytest.raises(RuntimeError, match="stop"):
        load_network(driver, net, model_id, batch_size=20, progress=_stop_after_nodes)
    seen: dict[str, Any] = {}

    def look() -> bool:
        records, _, _ = driver.execute_query(
            "SHOW TRANSACTIONS YIELD metaData, status WHERE metaData.app = 'cnngraph' "
            "AND metaData.model = $model AND status STARTS WITH 'Blocked' RETURN metaData",
            model=model_id,
        )
        if records:
            seen.update(dict(records[0]))
        return bool(records)

    import threading

    with holding_the_model(driver, model_id):
        resumed = threading.Thread(target=lambda: load_network(driver, net, model_id, batch_size=20))
        resumed.start()
        wait_until(look, "the load's transaction to wait for the model")
    resumed.join(timeout=120)
    meta = seen["metaData"]
    assert meta["command"] == "load" and meta["pid"] == os.getpid() and meta["host"] == socket.gethostname()
    assert_exact(driver, model_id, net)


def _stop_after_nodes(phase: str, done: int, total: int) -> None:
    if phase == "arcs":
        raise RuntimeError("stop")


def test_the_local_server_bounds_lock_waits_and_transactions(driver: Any, neo4j_server: Any) -> None:
    if neo4j_server is None:
        pytest.skip("an external server (CNNGRAPH_TEST_NEO4J_URI) has its own settings")
    records, _, _ = driver.execute_query(
        "SHOW SETTINGS YIELD name, value WHERE name IN ['db.lock.acquisition.timeout', "
        "'db.transaction.timeout'] RETURN name, value"
    )
    values = {r["name"]: r["value"] for r in records}
    assert values == {"db.lock.acquisition.timeout": "1m30s", "db.transaction.timeout": "15m"}
