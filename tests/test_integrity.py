"""Never a silently wrong graph: interrupted drops and replaces, two writers at once, model names.

Interruptions are real: ``cnngraph drop`` and ``cnngraph load`` run as processes against the test
server and get ``kill -9`` or SIGINT while they work; two loads of one name run at once. After each,
the graph is checked exactly: positions, relationships per class, their weight sums, no duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_loader import Interrupt, expected_counts, graph_counts, interrupt_after, synthetic_network

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader import catalog, lease, rows, schema
from cnngraph.loader.catalog import drop_model, get_model, require_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping.network import MultilayerNetwork

CLASS_SUMS = """
MATCH (:Position {model: $model})-[r:ARC]->()
RETURN r.class AS class, count(r) AS arcs, sum(r.mean) AS mean, sum(r.median) AS median ORDER BY class
"""
DUPLICATES = """
MATCH (a:Position {model: $model})-[r:ARC]->(b)
WITH a.nid AS s, b.nid AS d, r.class AS h, count(*) AS n WHERE n > 1
RETURN count(*) AS duplicates
"""
STEAL = """
MATCH (m:Model {id: $model})
SET m.writer = $token, m.writer_host = $host, m.writer_pid = $pid, m.lease_until = $until
"""
HOST = socket.gethostname()


def _free_lease(driver: Any, model: str) -> None:
    driver.execute_query("MATCH (m:Model {id: $model}) REMOVE m.writer, m.lease_until", model=model)


def assert_exact(driver: Any, model: str, net: MultilayerNetwork) -> None:
    """Counts, per-class weight sums against the loader's own rows, no duplicate arc, complete."""
    assert graph_counts(driver, model) == expected_counts(net)
    records, _, _ = driver.execute_query(CLASS_SUMS, model=model)
    arcs = net.topology.num_arcs
    batch = rows.arc_batch(net, 0, arcs)
    assert [r["class"] for r in records] == list(range(net.num_classes))
    for r in records:
        h = r["class"]
        assert r["arcs"] == arcs
        for descriptor in ("mean", "median"):
            weights = np.asarray(batch[f"w_{descriptor}"], dtype=np.float64).reshape(arcs, net.num_classes)
            assert r[descriptor] == pytest.approx(float(weights[:, h].sum()), rel=1e-9, abs=1e-9)
    dup, _, _ = driver.execute_query(DUPLICATES, model=model)
    assert dup[0]["duplicates"] == 0
    props = get_model(driver, model)
    assert props is not None and props["status"] == "complete"
    assert "writer" not in props and "lease_until" not in props


def mid_network() -> MultilayerNetwork:
    """About 4,300 arcs x 3 classes: loads in seconds, deletes in many small transactions."""
    return synthetic_network([(16, 16), (16, 16), (8, 8)], classes=3, seed=11)


def cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``cnngraph ARGS`` as its own process against the test server."""
    full_env = {**os.environ, **env, "COLUMNS": "250"}
    return subprocess.Popen(
        [sys.executable, "-m", "cnngraph", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str, str]:
    proc = cli(args, env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def deleting_under_way(driver: Any, model: str, positions: int) -> bool:
    props = get_model(driver, model)
    return props is not None and props["status"] == "deleting" and 0 < _positions(driver, model) < positions


def _positions(driver: Any, model: str) -> int:
    records, _, _ = driver.execute_query("MATCH (p:Position {model: $m}) RETURN count(p) AS n", m=model)
    return int(records[0]["n"])


# ------------------------------------------------------------------ names (no server)
@pytest.mark.parametrize("name", ["", " ", "\t", "a\nb", "bad\x00name", " padded", "x" * 201])
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="model name"):
        catalog.check_model_name(name)


def test_good_model_names_pass() -> None:
    for name in ("vgg", "demo-digits", "a b", "modèle_1.2", "x" * 200):
        assert catalog.check_model_name(name) == name


def test_cli_refuses_an_empty_name_before_reading_the_file(cli_app: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli_app, ["load", str(tmp_path / "missing.npz"), "--name", ""])
    assert result.exit_code == 2
    assert "model name is empty or blank" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------ API level, against the server
@pytest.mark.neo4j
def test_bad_name_writes_nothing(driver: Any) -> None:
    net = synthetic_network([(3, 3), (3, 3)], classes=2)
    long_name = "n" * 8150
    with pytest.raises(ConfigError, match="8,150 characters"):
        load_network(driver, net, long_name)
    assert get_model(driver, long_name) is None


@pytest.mark.neo4j
def test_interrupted_drop_is_marked_refused_and_finished(
    driver: Any, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = synthetic_network([(8, 8), (8, 8), (4, 4)], classes=3, seed=2)
    load_network(driver, net, model_id)
    real = catalog._delete_range
    calls = {"n": 0}

    def cut_after_two(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupt
        real(*args)

    monkeypatch.setattr(catalog, "_delete_range", cut_after_two)
    with pytest.raises(Interrupt):
        drop_model(driver, model_id, batch_size=400)
    monkeypatch.undo()
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "deleting" and "checksum" not in props
    assert 0 < _positions(driver, model_id) < net.topology.num_nodes
    with pytest.raises(Neo4jError, match="is being deleted"):
        require_model(driver, model_id)
    # A load of the very same mapping never calls this partial graph loaded: it finishes the drop.
    report = load_network(driver, net, model_id)
    assert report.status == "replaced"
    assert_exact(driver, model_id, net)


@pytest.mark.neo4j
def test_a_live_writer_blocks_loads_and_drops(driver: Any, model_id: str) -> None:
    net = synthetic_network([(8, 8), (8, 8)], classes=2, seed=3)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=50, progress=interrupt_after(2))
    # Another process of this host that still runs (here: this one, under another token) holds it.
    until = int(time.time() * 1000) + 60_000
    driver.execute_query(STEAL, model=model_id, token="other", host=HOST, pid=os.getpid(), until=until)
    with pytest.raises(lease.ModelBusyError, match="being written by another cnngraph process"):
        load_network(driver, net, model_id)
    with pytest.raises(lease.ModelBusyError):
        drop_model(driver, model_id)
    assert graph_counts(driver, model_id)["arcs"] == 100 * 2
    # Its lease expired: the load resumes exactly.
    driver.execute_query(STEAL, model=model_id, token="other", host=HOST, pid=os.getpid(), until=0)
    assert load_network(driver, net, model_id).status == "resumed"
    assert_exact(driver, model_id, net)


@pytest.mark.neo4j
def test_a_dead_holder_on_this_host_does_not_block(driver: Any, model_id: str) -> None:
    net = synthetic_network([(8, 8), (8, 8)], classes=2, seed=4)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=50, progress=interrupt_after(1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    until = int(time.time() * 1000) + 60_000
    driver.execute_query(STEAL, model=model_id, token="gone", host=HOST, pid=dead.pid, until=until)
    assert load_network(driver, net, model_id).status == "resumed"
    assert_exact(driver, model_id, net)


@pytest.mark.neo4j
def test_a_batch_is_never_written_twice_when_the_lease_is_taken_over(driver: Any, model_id: str) -> None:
    """Writer A pauses; its lease expires and B takes it: A's next batch fails and writes nothing."""
    net = synthetic_network([(8, 8), (8, 8)], classes=2, seed=5)
    steal_after = 2

    def thief(phase: str, done: int, total: int) -> None:
        if phase == "arcs" and done == 40 * steal_after:
            driver.execute_query(
                STEAL, model=model_id, token="thief", host=HOST, pid=os.getpid(), until=10**15
            )

    with pytest.raises(lease.LeaseLostError, match="taken over by another cnngraph process"):
        load_network(driver, net, model_id, batch_size=40, progress=thief)
    props = get_model(driver, model_id)
    assert props is not None and props["arcs_loaded"] == 40 * steal_after and props["status"] == "loading"
    assert graph_counts(driver, model_id)["arcs"] == 40 * steal_after * 2
    # The thief moves the counter (as if it wrote): A's stale view of it is refused too.
    _free_lease(driver, model_id)

    def rewind(phase: str, done: int, total: int) -> None:
        if phase == "arcs" and done == 40 * (steal_after + 1):
            driver.execute_query("MATCH (m:Model {id: $model}) SET m.arcs_loaded = 7", model=model_id)

    with pytest.raises(lease.LeaseLostError, match="records 7 arcs loaded, not 120"):
        load_network(driver, net, model_id, batch_size=40, progress=rewind)


@pytest.mark.neo4j
def test_resume_reports_real_positions_and_replace_times_its_deletion_apart(
    driver: Any, model_id: str
) -> None:
    net = synthetic_network([(8, 8), (8, 8)], classes=2, seed=6)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=50, progress=interrupt_after(2))
    calls: list[tuple[str, int, int]] = []
    report = load_network(driver, net, model_id, batch_size=50, progress=lambda *a: calls.append(a))
    assert report.status == "resumed"
    assert calls[0] == ("nodes", net.topology.num_nodes, net.topology.num_nodes)
    assert calls[1] == ("arcs", 100, net.topology.num_arcs)
    other = synthetic_network([(6, 6), (6, 6)], classes=2, seed=7)
    calls.clear()
    replaced = load_network(driver, other, model_id, replace=True, progress=lambda *a: calls.append(a))
    assert replaced.status == "replaced" and replaced.delete_seconds > 0
    deleted = [c for c in calls if c[0] == "deleting"]
    assert deleted and deleted[-1][1] == deleted[-1][2] == net.topology.num_nodes
    assert calls.index(deleted[-1]) < calls.index(("nodes", 0, other.topology.num_nodes))
    assert_exact(driver, model_id, other)


# ------------------------------------------------------------------ real processes
@pytest.mark.neo4j
@pytest.mark.slow
def test_drop_stopped_by_ctrl_c_is_refused_then_finished_by_drop(
    driver: Any, model_id: str, neo4j_env: dict[str, str]
) -> None:
    net = mid_network()
    load_network(driver, net, model_id)
    proc = cli(["drop", "--model", model_id, "--yes", "--batch-size", "300"], neo4j_env)
    try:
        wait_until(lambda: deleting_under_way(driver, model_id, net.topology.num_nodes), "the drop to delete")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "deleting" and "writer" not in props
    assert 0 < _positions(driver, model_id) < net.topology.num_nodes
    code, out, _ = run_cli(["models", "--json"], neo4j_env)
    assert code == 0
    assert {m["id"]: m for m in json.loads(out)}[model_id]["status"].startswith("deleting")
    code, _, err = run_cli(["score", "--model", model_id], neo4j_env)
    assert code == 2 and "is being deleted" in err and "Traceback" not in err, err
    code, out, err = run_cli(["drop", "--model", model_id, "--yes"], neo4j_env)
    assert code == 0 and f"dropped model '{model_id}'" in out, err
    assert graph_counts(driver, model_id) == {"positions": 0, "arcs": 0, "layers": 0, "classes": 0}
    assert get_model(driver, model_id) is None


@pytest.mark.neo4j
@pytest.mark.slow
def test_replace_killed_midway_is_finished_by_the_next_load(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    old = mid_network()
    load_network(driver, old, model_id)
    new = synthetic_network([(12, 12), (6, 6)], classes=2, seed=12)
    path = new.save(tmp_path / "new.npz")
    proc = cli(["load", str(path), "--name", model_id, "--replace", "--batch-size", "50"], neo4j_env)
    try:
        positions = old.topology.num_nodes
        wait_until(lambda: deleting_under_way(driver, model_id, positions), "the replace to delete")
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "deleting" and "checksum" not in props
    code, _, err = run_cli(["degrees", "--model", model_id, "--out", str(tmp_path / "d.csv")], neo4j_env)
    assert code == 2 and "is being deleted" in err, err
    # Right after the kill: the dead process's lease does not block the next load on this host.
    code, out, err = run_cli(["load", str(path), "--name", model_id], neo4j_env)
    assert code == 0 and f"model '{model_id}' replaced" in out, err
    assert_exact(driver, model_id, new)
    code, out, _ = run_cli(["load", str(path), "--name", model_id], neo4j_env)
    assert code == 0 and "already loaded" in out


@pytest.mark.neo4j
@pytest.mark.slow
def test_a_second_load_of_one_name_is_refused_while_the_first_runs(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    """The test holds the model node's lock, so the first load stalls mid-way, still running, while
    the second one arrives; once both wait on that lock it lets go."""
    net = mid_network()
    path = net.save(tmp_path / "dup.npz")
    first = cli(["load", str(path), "--name", model_id, "--batch-size", "200"], neo4j_env)

    def writing() -> bool:
        props = get_model(driver, model_id)
        return props is not None and int(props.get("arcs_loaded", 0)) > 0

    try:
        wait_until(writing, "the first load to write arcs")
        with driver.session() as session, session.begin_transaction() as stall:
            stall.run(schema.LOCK_MODEL, model=model_id).consume()
            arcs_when_stalled = get_model(driver, model_id)["arcs_loaded"]
            second = cli(["load", str(path), "--name", model_id], neo4j_env)
            wait_until(lambda: _waiting_on_the_model(driver) >= 2, "both loads to wait for the model")
            stall.rollback()
        _, err = second.communicate(timeout=300)
    finally:
        out_first, err_first = first.communicate(timeout=600)
    assert arcs_when_stalled < net.topology.num_arcs
    assert first.returncode == 0 and f"model '{model_id}' loaded" in out_first, err_first
    assert second.returncode == 2 and "being written by another cnngraph process" in err, err
    assert_exact(driver, model_id, net)


def _waiting_on_the_model(driver: Any) -> int:
    records, _, _ = driver.execute_query(
        "SHOW TRANSACTIONS YIELD currentQuery, status "
        "WHERE status STARTS WITH 'Blocked' AND currentQuery CONTAINS 'lease_lock' RETURN count(*) AS n"
    )
    return int(records[0]["n"])


@pytest.mark.neo4j
@pytest.mark.slow
def test_two_loads_started_together_write_every_arc_once(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    net = synthetic_network([(12, 12), (12, 12)], classes=3, seed=13)
    path = net.save(tmp_path / "pair.npz")
    procs = [cli(["load", str(path), "--name", model_id, "--batch-size", "40"], neo4j_env) for _ in range(2)]
    results = [(p.communicate(timeout=600), p.returncode) for p in procs]
    loaded = [out for (out, _), code in results if code == 0 and "loaded:" in out]
    others = [(out, err, code) for (out, err), code in results if not (code == 0 and "loaded:" in out)]
    assert len(loaded) == 1 and len(others) == 1, results
    out, err, code = others[0]
    assert (code == 2 and "another cnngraph process" in err) or (code == 0 and "already loaded" in out)
    assert_exact(driver, model_id, net)
