"""Readers racing writers: no reading command returns, prints or writes a result of a graph that
changed while it read it, and ``score`` never leaves scores of an old graph on a new one.

Two kinds of race, both against the real server. In-process, a hook runs a drop, a replace or a drop
and reload of the same mapping between a reader's status check and its query (or right after its
query), every time: the reader must refuse with one line. As real processes, ``cnngraph degrees``
(or ``score``) runs while ``cnngraph drop`` or ``cnngraph load --replace`` deletes the graph it reads,
several rounds: each reader either exits 0 with a result equal to the numpy reference of one whole
model, or refuses (exit 2, one line, no file).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import typer
from test_dry_run import tiny_checkpoint_and_mapping
from test_loader import Interrupt, synthetic_network
from typer.testing import CliRunner

from cnngraph.errors import Neo4jError
from cnngraph.loader import catalog, schema
from cnngraph.loader.catalog import drop_model, get_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping import reference
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.queries import scoring

pytestmark = pytest.mark.neo4j
runner = CliRunner()

SCORED = """
MATCH (p:Position {model: $model})
RETURN count(p.delta) + count(p.delta_entropy) + count(p.delta_descriptor) AS scored,
       sum(size([l IN labels(p) WHERE l STARTS WITH 'D'])) AS size_labels
"""


def small() -> MultilayerNetwork:
    return synthetic_network([(8, 8), (8, 8), (4, 4)], classes=3, seed=21)


def other() -> MultilayerNetwork:
    return synthetic_network([(6, 6), (6, 6)], classes=3, seed=22)


def scored(driver: Any, model: str) -> tuple[int, int, Any]:
    """Score properties and size labels on the model's positions, and its ``scored_descriptor``."""
    records, _, _ = driver.execute_query(SCORED, model=model)
    props = get_model(driver, model) or {}
    return int(records[0]["scored"]), int(records[0]["size_labels"] or 0), props.get("scored_descriptor")


def partial_drop(driver: Any, model: str) -> None:
    """A drop cut after two deletion batches: the model is left 'deleting', half deleted."""
    real = catalog._delete_range
    calls = {"n": 0}

    def cut(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Interrupt
        real(*args)

    with mock.patch.object(catalog, "_delete_range", cut), pytest.raises(Interrupt):
        drop_model(driver, model, batch_size=60)


def drop_and_reload(driver: Any, model: str, net: MultilayerNetwork) -> None:
    """The very same mapping dropped and loaded again: same checksum, a new load."""
    drop_model(driver, model)
    load_network(driver, net, model)


INTERFERENCE: dict[str, tuple[Callable[[Any, str, MultilayerNetwork], None], str]] = {
    "drop": (lambda d, m, net: partial_drop(d, m), "is being deleted"),
    "replace": (lambda d, m, net: load_network(d, other(), m, replace=True), "was replaced"),
    "reload": (lambda d, m, net: drop_and_reload(d, m, net), "was replaced"),
}


@contextmanager
def interfering(action: Callable[[], None], when: str = "before") -> Iterator[dict[str, int]]:
    """Run ``action`` once, just before (or right after) the reader's first graph query."""
    real = scoring._run_columns
    state = {"done": 0}

    def hooked(session: Any, query: str, columns: Any, **params: Any) -> Any:
        first = not state["done"]
        state["done"] = 1
        if first and when == "before":
            action()
        result = real(session, query, columns, **params)
        if first and when == "after":
            action()
        return result

    with mock.patch.object(scoring, "_run_columns", hooked):
        yield state


READERS: dict[str, Callable[[Any, str], Any]] = {
    "degrees": lambda d, m: scoring.compute_degrees(d, m),
    "preview": lambda d, m: scoring.preview_scores(d, m),
    "score": lambda d, m: scoring.compute_scores(d, m),
}


# ------------------------------------------------------------------ in process, every time
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("what", list(INTERFERENCE))
@pytest.mark.parametrize("reader", list(READERS))
def test_a_reader_refuses_a_graph_changed_while_it_read(
    driver: Any, model_id: str, reader: str, what: str, when: str
) -> None:
    net = small()
    load_network(driver, net, model_id)
    action, message = INTERFERENCE[what]
    hook = interfering(lambda: action(driver, model_id, net), when)
    with hook as state, pytest.raises(Neo4jError, match=message) as caught:
        READERS[reader](driver, model_id)
    assert state["done"]
    text = str(caught.value)
    assert "\n" not in text and "run 'cnngraph score" not in text, text
    if what != "drop":  # the new graph carries no score of the old one, nor a half of its own
        assert scored(driver, model_id) == (0, 0, None)


def test_stored_scores_recomputed_while_read_are_refused(driver: Any, model_id: str) -> None:
    load_network(driver, small(), model_id)
    scoring.compute_scores(driver, model_id, "mean")
    hook = interfering(lambda: scoring.compute_scores(driver, model_id, "median"))
    with hook, pytest.raises(Neo4jError, match=r"scores of model .* were recomputed"):
        scoring.fetch_scores(driver, model_id)
    assert scoring.fetch_scores(driver, model_id).descriptor == "median"


def test_a_second_score_started_meanwhile_wins_and_the_first_stops(driver: Any, model_id: str) -> None:
    net = small()
    load_network(driver, net, model_id)
    hook = interfering(lambda: scoring.compute_scores(driver, model_id, "median"), "after")
    with hook, pytest.raises(Neo4jError, match=r"another 'cnngraph score' of model .* began"):
        scoring.compute_scores(driver, model_id, "mean")
    stored = scoring.fetch_scores(driver, model_id)  # the second one's, whole
    assert stored.descriptor == "median"
    expected = reference.score(reference.degrees(net, "median").total, "entropy")
    np.testing.assert_allclose(stored.get("entropy"), expected, rtol=1e-9, atol=1e-12)


def test_an_undisturbed_read_still_works(driver: Any, model_id: str) -> None:
    net = small()
    load_network(driver, net, model_id)
    table = scoring.compute_degrees(driver, model_id)
    np.testing.assert_allclose(table.total, reference.degrees(net, "mean").total, rtol=1e-9)
    scores = scoring.compute_scores(driver, model_id)
    assert scored(driver, model_id)[2] == "mean"
    np.testing.assert_array_equal(
        scoring.fetch_scores(driver, model_id).get("entropy"), scores.get("entropy")
    )


# ------------------------------------------------------------------ the CLI, in process
@pytest.fixture(scope="module")
def trained(cli_app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint of small_cnn on tiny 8x8 two-class data, and its mapping (as test_dry_run)."""
    return tiny_checkpoint_and_mapping(cli_app, tmp_path_factory.mktemp("races"))


@pytest.mark.parametrize("what", ["drop", "replace"])
@pytest.mark.parametrize("command", ["degrees", "score", "sweep", "prune-dry-run"])
def test_reading_commands_refuse_with_one_line_and_write_nothing(
    cli_app: typer.Typer,
    driver: Any,
    model_id: str,
    neo4j_env: dict[str, str],
    tmp_path: Path,
    trained: tuple[Path, Path],
    command: str,
    what: str,
) -> None:
    checkpoint, mapping = trained
    net = MultilayerNetwork.load(mapping)
    load_network(driver, net, model_id)
    out = tmp_path / "out.csv"
    args = {
        "degrees": ["degrees", "--model", model_id, "--out", str(out)],
        "score": ["score", "--model", model_id, "--out", str(out)],
        "sweep": ["sweep", "--model", model_id, "--out", str(tmp_path / "sweep")],
        "prune-dry-run": ["prune", "--model", model_id, "--checkpoint", str(checkpoint), "--dry-run"],
    }[command]
    action, message = INTERFERENCE[what]
    with interfering(lambda: action(driver, model_id, net)) as state:
        result = runner.invoke(cli_app, args, env=neo4j_env)
    assert state["done"]
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    if what == "replace":
        assert scored(driver, model_id) == (0, 0, None)


# ------------------------------------------------------------------ real processes, several rounds
def race_network() -> MultilayerNetwork:
    """About 10,000 arcs x 4 classes: the degree query takes long enough for a drop to overlap it."""
    return synthetic_network([(24, 24), (24, 24), (12, 12)], classes=4, seed=23)


def race_other() -> MultilayerNetwork:
    return synthetic_network([(20, 20), (20, 20)], classes=4, seed=24)


def cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "cnngraph", *args],
        env={**os.environ, **env, "COLUMNS": "250"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _count(driver: Any, query: str, **params: Any) -> int:
    records, _, _ = driver.execute_query(query, params)
    return int(records[0]["n"])


def _blocked_on_model(driver: Any) -> int:
    return _count(
        driver,
        "SHOW TRANSACTIONS YIELD currentQuery, status "
        "WHERE status STARTS WITH 'Blocked' AND currentQuery CONTAINS 'lease_lock' RETURN count(*) AS n",
    )


def _blocked(driver: Any) -> int:
    query = "SHOW TRANSACTIONS YIELD status WHERE status STARTS WITH 'Blocked' RETURN count(*) AS n"
    return _count(driver, query)


def _running(driver: Any, fragment: str) -> int:
    return _count(
        driver,
        "SHOW TRANSACTIONS YIELD currentQuery WHERE currentQuery CONTAINS $fragment RETURN count(*) AS n",
        fragment=fragment,
    )


def _query_or_exit(driver: Any, proc: subprocess.Popen[str], fragment: str) -> bool:
    return proc.poll() is not None or _running(driver, fragment) >= 1


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def degrees_csv(net: MultilayerNetwork) -> np.ndarray:
    """The CSV ``degrees`` must write for ``net``: layer, i, j, class, in, out, total."""
    ref = reference.degrees(net, "mean")
    layer, i, j = net.topology.node_positions()
    t, n = ref.indegree.shape
    columns = [np.repeat(layer, t), np.repeat(i, t), np.repeat(j, t), np.tile(np.arange(t), n)]
    values = [ref.indegree.T.ravel(), ref.outdegree.T.ravel(), ref.total.T.ravel()]
    return np.column_stack([*columns, *values]).astype(np.float64)


def read_csv(path: Path) -> np.ndarray:
    with path.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["layer", "i", "j", "class", "in", "out", "total"]
    return np.array(rows[1:], dtype=np.float64)


def _matches(got: np.ndarray, expected: np.ndarray) -> bool:
    return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=1e-9, atol=1e-12))


@pytest.mark.slow
def test_degrees_racing_a_real_drop_or_replace(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    """Four rounds: replace A by B, B by A, drop, and (A loaded again) drop. Each time the writer
    waits on the model's lock (held by the test) while ``degrees`` starts its query; then the test
    lets go and the writer deletes while the query runs."""
    nets = [race_network(), race_other()]
    paths = [net.save(tmp_path / f"net{k}.npz") for k, net in enumerate(nets)]
    load_network(driver, nets[0], model_id, batch_size=2000)
    current, overlapped = 0, 0
    for round_, writer in enumerate(["replace", "replace", "drop", "drop"]):
        if get_model(driver, model_id) is None:
            load_network(driver, nets[0], model_id, batch_size=2000)
            current = 0
        out = tmp_path / f"d{round_}.csv"
        if writer == "drop":
            write_args = ["drop", "--model", model_id, "--yes", "--batch-size", "400"]
        else:
            write_args = [
                "load",
                str(paths[1 - current]),
                "--name",
                model_id,
                "--replace",
                "--batch-size",
                "400",
            ]
        with driver.session() as session, session.begin_transaction(timeout=120) as stall:
            stall.run(schema.LOCK_MODEL, model=model_id).consume()
            writing = cli(write_args, neo4j_env)
            _wait(lambda: _blocked_on_model(driver) >= 1, "the writer to wait for the model")
            reading = cli(["degrees", "--model", model_id, "--out", str(out)], neo4j_env)
            _wait(lambda r=reading: _query_or_exit(driver, r, "AS outdegree"), "the degree query to run")
            overlapped += reading.poll() is None
            stall.rollback()
        _, r_err = reading.communicate(timeout=300)
        _, w_err = writing.communicate(timeout=300)
        assert writing.returncode == 0, w_err
        if reading.returncode == 0:
            got = read_csv(out)
            assert _matches(got, degrees_csv(nets[current])), f"round {round_}: exit 0 with a wrong CSV"
        else:
            assert reading.returncode == 2, r_err
            assert len(r_err.strip().splitlines()) == 1 and "Traceback" not in r_err, r_err
            assert "being deleted" in r_err or "was dropped" in r_err or "was replaced" in r_err, r_err
            assert not out.exists()
        current = 1 - current if writer == "replace" else current
    assert overlapped >= 3  # the race was on: the reader's query ran when the writer started


@pytest.mark.slow
def test_score_racing_a_real_replace_leaves_no_old_scores(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    nets = [race_network(), race_other()]
    path = nets[1].save(tmp_path / "other.npz")
    load_network(driver, nets[0], model_id, batch_size=2000)
    out = tmp_path / "s.csv"
    with driver.session() as session, session.begin_transaction(timeout=120) as stall:
        stall.run(schema.LOCK_MODEL, model=model_id).consume()
        writing = cli(["load", str(path), "--name", model_id, "--replace", "--batch-size", "400"], neo4j_env)
        _wait(lambda: _blocked_on_model(driver) >= 1, "the replace to wait for the model")
        reading = cli(["score", "--model", model_id, "--out", str(out)], neo4j_env)
        # score takes the model's lock to start (and waits on the test's): release once it waits too
        _wait(
            lambda: _query_or_exit(driver, reading, "participation") or _blocked(driver) >= 2,
            "the score to start",
        )
        stall.rollback()
    _, r_err = reading.communicate(timeout=300)
    _, w_err = writing.communicate(timeout=300)
    assert writing.returncode == 0, w_err
    if reading.returncode != 0:
        assert reading.returncode == 2 and len(r_err.strip().splitlines()) == 1, r_err
        assert not out.exists()
    assert scored(driver, model_id) == (0, 0, None)  # the new graph: no score of the old one
