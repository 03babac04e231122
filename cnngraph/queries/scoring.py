"""Degrees and node scores computed by Cypher in Neo4j, returned as numpy arrays.

``compute_scores`` runs ``scores.cypher``'s aggregation and writes ``delta`` (entropy),
``delta_entropy``, ``delta_mean`` and ``delta_participation`` onto every ``:Position`` (the same
properties that ``scores.cypher`` writes when run in Browser); ``fetch_scores`` reads them back.
A model loaded with ``--layout compact`` (``:Model.layout``) runs ``scores_compact.cypher`` and
``degrees_compact.cypher`` instead, which read the per-class weight lists: the same numbers.

Every reader runs under :func:`cnngraph.loader.guard.unchanged_model`: its result counts only if
the model is the same complete model after the read as before it, else it refuses in one line.
``compute_scores`` writes its scores back only after that check, in batches that each lock the
``:Model`` node and check it again, so a drop or replace racing it never gets scores of another graph.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from neo4j import Driver

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader import waits
from cnngraph.loader.catalog import drop_model, list_models
from cnngraph.loader.guard import (
    ModelSnapshot,
    hold_model,
    neo4j_errors,
    quiet_session,
    unchanged_model,
    verify,
)
from cnngraph.mapping import reference
from cnngraph.mapping.network import DESCRIPTORS
from cnngraph.queries import cypher, for_layout
from cnngraph.scores import NodeScores

__all__ = [
    "AGGREGATORS",
    "DegreeTable",
    "compute_degrees",
    "compute_scores",
    "drop_model",
    "fetch_scores",
    "layer_summary",
    "list_models",
    "preview_scores",
    "top_nodes",
]

AGGREGATORS = ("entropy", "mean", "participation")
POSITION = ("nid", "layer", "i", "j")
SCORE_COLUMNS = (*POSITION, *AGGREGATORS)

# A scoring run owns the model's scores while it writes them (m.scorer, a random token): a second
# run that starts meanwhile takes them over and the first one's next batch stops.
START_SCORING = "MATCH (m:Model {id: $model}) SET m.scorer = $token REMOVE m.scored_descriptor"
FINISH_SCORING = """
MATCH (m:Model {id: $model})
SET m.scored_descriptor = $descriptor, m.scored_at = datetime()
REMOVE m.scorer
"""
# The write-back of scores.cypher (its CALL ... IN TRANSACTIONS block), for one batch of positions
# with consecutive nids $nid[0] .. $nid[0] + size($nid) - 1: one index range seek for the batch; a
# position whose nid is not where it should be in the lists is not written (and the batch fails).
WRITE_SCORES = """
MATCH (p:Position {model: $model}) USING INDEX SEEK p:Position(model, nid)
WHERE $nid[0] <= p.nid < $nid[0] + size($nid)
WITH p, p.nid - $nid[0] AS k
WHERE $nid[k] = p.nid
SET p.delta = $entropy[k], p.delta_entropy = $entropy[k], p.delta_mean = $mean[k],
    p.delta_participation = $participation[k], p.delta_descriptor = $descriptor
RETURN count(p) AS written
"""
SCORE_BATCH = 10_000
WRITE_BACK = re.compile(
    r"^CALL \(p, entropy, mean, participation\) \{\n.*?^\} IN TRANSACTIONS OF \d+ ROWS\n", re.M | re.S
)
LAYER_NAMES = "MATCH (l:Layer {model: $model}) RETURN l.index AS index, l.name AS name ORDER BY index"
LAYER_GRIDS = (
    "MATCH (l:Layer {model: $model}) "
    "RETURN l.index AS index, l.name AS name, l.height AS height, l.width AS width ORDER BY index"
)
LAYER_FEEDS = (
    "MATCH (a:Layer {model: $model})-[f:FEEDS]->(b:Layer) "
    "RETURN a.index AS src, b.index AS dst, f.via AS via ORDER BY src, dst"
)


@dataclass(frozen=True)
class DegreeTable:
    """Per-class weighted degrees from Cypher: ``layer``/``i``/``j`` int64 [N], in/out float64 [t, N]."""

    model: str
    descriptor: str
    class_names: tuple[str, ...]
    layer: np.ndarray
    i: np.ndarray
    j: np.ndarray
    indegree: np.ndarray
    outdegree: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.indegree + self.outdegree


def compute_degrees(
    driver: Driver, model: str, descriptor: str = "mean", database: str | None = None
) -> DegreeTable:
    """Run ``degrees.cypher``: in/out degree of every node in every class network."""
    with unchanged_model(driver, model, database) as snap:
        props = snap.props
        descriptor = _check_descriptor(descriptor, props)
        query = for_layout("degrees", props.get("layout"))
        with neo4j_errors(driver), quiet_session(driver, database) as session:
            columns = _run_columns(
                session, query, (*POSITION, "indegree", "outdegree"), model=model, descriptor=descriptor
            )
        snap.read_positions(len(columns["nid"]))
        nid, layer, i, j = (np.asarray(columns[k], dtype=np.int64) for k in POSITION)
        order = np.argsort(nid, kind="stable")
        t = int(props["num_classes"])
        indeg = _matrix(columns["indegree"], t)[:, order]
        outdeg = _matrix(columns["outdegree"], t)[:, order]
    return DegreeTable(
        model=model,
        descriptor=descriptor,
        class_names=tuple(props.get("class_names", [])),
        layer=layer[order],
        i=i[order],
        j=j[order],
        indegree=indeg,
        outdegree=outdeg,
    )


def compute_scores(
    driver: Driver, model: str, descriptor: str | None = None, database: str | None = None
) -> NodeScores:
    """Score every node by ``scores.cypher``'s aggregation, write ``delta*`` onto the nodes (then the
    size labels of ``size_labels.cypher``) and return every aggregator.

    Nothing is written unless the read was of the same complete model; each write batch locks the
    ``:Model`` node and checks it again, so a drop, replace or second ``score`` racing this one makes
    it stop with one line, and no score lands on a graph it did not read.
    """
    with unchanged_model(driver, model, database) as snap:
        props = snap.props
        descriptor = _check_descriptor(descriptor or str(props.get("descriptor", "mean")), props)
        token = secrets.token_hex(16)
        meta = {"app": "cnngraph", "command": "score", "model": model}
        with neo4j_errors(driver), quiet_session(driver, database) as session:
            session.execute_write(waits.bounded(_start_scoring, waits.LOCK_WAIT, meta), snap, token)
            query = read_part(for_layout("scores", props.get("layout")))
            columns = _run_columns(session, query, SCORE_COLUMNS, model=model, descriptor=descriptor)
            snap.read_positions(len(columns["nid"]))
            verify(driver, snap, database)  # nothing is written from a read of another graph
            write = waits.bounded(_write_scores, waits.WRITE_TIMEOUT, meta)
            order = np.argsort(np.asarray(columns["nid"], dtype=np.int64), kind="stable")
            for lo in range(0, len(order), SCORE_BATCH):
                rows = order[lo : lo + SCORE_BATCH]
                batch = {c: [columns[c][r] for r in rows] for c in ("nid", *AGGREGATORS)}
                session.execute_write(write, snap, token, batch, descriptor)
            labels = waits.bounded_query(cypher("size_labels"), waits.LABELS_TIMEOUT, meta)
            session.run(labels, model=model).consume()
            finish = waits.bounded(_finish_scoring, waits.LOCK_WAIT, meta)
            session.execute_write(finish, snap, token, descriptor)
        result = _node_scores(driver, model, descriptor, columns, database)
    return result


def read_part(query: str) -> str:
    """``scores.cypher`` (or its compact variant) without its write-back: the aggregation alone,
    one row per node."""
    found = WRITE_BACK.search(query)
    if found is None:
        raise ValueError("the scores query has no 'CALL (p, entropy, mean, participation) {...}' write-back")
    return query[: found.start()] + query[found.end() :]


def _start_scoring(tx: Any, snap: ModelSnapshot, token: str) -> None:
    hold_model(tx, snap)
    tx.run(START_SCORING, model=snap.model, token=token).consume()


def _write_scores(
    tx: Any, snap: ModelSnapshot, token: str, batch: dict[str, list[Any]], descriptor: str
) -> None:
    hold_model(tx, snap, "scorer", token)
    written = tx.run(WRITE_SCORES, batch, model=snap.model, descriptor=descriptor).single(strict=True)
    if int(written["written"]) != len(batch["nid"]):
        raise Neo4jError(
            f"model '{snap.model}' lacks {len(batch['nid']) - int(written['written'])} of the positions "
            f"it was scored on; its graph is damaged: load its mapping again with --replace"
        )


def _finish_scoring(tx: Any, snap: ModelSnapshot, token: str, descriptor: str) -> None:
    hold_model(tx, snap, "scorer", token)
    tx.run(FINISH_SCORING, model=snap.model, descriptor=descriptor).consume()


def fetch_scores(driver: Driver, model: str, database: str | None = None) -> NodeScores:
    """The scores that the last ``compute_scores`` (``cnngraph score``) wrote into the graph."""
    with unchanged_model(driver, model, database, scores=True) as snap:
        descriptor = snap.props.get("scored_descriptor")
        if descriptor is None:
            raise Neo4jError(f"model '{model}' has no scores yet; run 'cnngraph score --model {model}' first")
        with neo4j_errors(driver), quiet_session(driver, database) as session:
            columns = _run_columns(session, cypher("stored_scores"), SCORE_COLUMNS, model=model, stored=True)
        snap.read_positions(len(columns["nid"]))
        result = _node_scores(driver, model, str(descriptor), columns, database)
    return result


def preview_scores(
    driver: Driver, model: str, descriptor: str | None = None, database: str | None = None
) -> NodeScores:
    """Every aggregator of every node, computed in memory from the degrees Cypher reads.

    Writes nothing into the graph (``prune --dry-run``); same values as :func:`compute_scores`.
    """
    with unchanged_model(driver, model, database) as snap:
        props = snap.props
        descriptor = _check_descriptor(descriptor or str(props.get("descriptor", "mean")), props)
        table = compute_degrees(driver, model, descriptor, database)
        names = tuple(str(r["name"]) for r in _fetch(driver, database, LAYER_NAMES, model=model))
    values = {name: reference.score(table.total, name, absolute=True) for name in AGGREGATORS}
    return NodeScores(
        layer=table.layer,
        i=table.i,
        j=table.j,
        values=values,
        layer_names=names,
        descriptor=descriptor,
        model=model,
    )


def layer_summary(driver: Driver, model: str, database: str | None = None) -> list[dict[str, Any]]:
    """One dict per layer: name, size, and mean/std/min/max of ``delta`` and the mean degree."""
    with unchanged_model(driver, model, database, scores=True):
        rows = [dict(r) for r in _fetch(driver, database, cypher("layer_summary"), model=model)]
    return rows


def layer_dag(
    driver: Driver, model: str, database: str | None = None
) -> tuple[list[tuple[int, str, int, int]], list[tuple[int, int, str]]]:
    """The layers ``(index, name, height, width)`` and the ``FEEDS`` pairs ``(src, dst, via)``, in
    order; the caller guards the read (:func:`cnngraph.loader.guard.unchanged_model`)."""
    layers = [
        (int(r["index"]), str(r["name"]), int(r["height"]), int(r["width"]))
        for r in _fetch(driver, database, LAYER_GRIDS, model=model)
    ]
    feeds = [
        (int(r["src"]), int(r["dst"]), str(r["via"]))
        for r in _fetch(driver, database, LAYER_FEEDS, model=model)
    ]
    return layers, feeds


def top_nodes(driver: Driver, model: str, k: int = 25, database: str | None = None) -> list[dict[str, Any]]:
    """The ``k`` nodes with the highest stored ``delta``."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    with unchanged_model(driver, model, database, scores=True):
        rows = [dict(r) for r in _fetch(driver, database, cypher("top_nodes"), model=model, k=int(k))]
    return rows


def _check_descriptor(descriptor: str, props: dict[str, Any]) -> str:
    """Only a known descriptor that the model stores may reach ``r[$descriptor]``."""
    stored = list(props.get("descriptors", DESCRIPTORS))
    if descriptor not in DESCRIPTORS:
        raise ConfigError(f"unknown descriptor '{descriptor}'; use one of {', '.join(DESCRIPTORS)}")
    if descriptor not in stored:
        raise ConfigError(
            f"model '{props['id']}' stores no '{descriptor}' arc weights (loaded with --descriptors, or "
            f"mapped by an older cnngraph); use {' or '.join(stored)}, or load it again with --replace"
        )
    return descriptor


def _fetch(driver: Driver, database: str | None, query: str, **params: Any) -> list[Any]:
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        return list(session.run(query, params))


def columnar(query: str, columns: Sequence[str]) -> str:
    """``query`` with its final (unindented) ``RETURN`` turned into one row: a list per column, plus
    ``rows``, the number of rows. The ``.cypher`` files return one row per node, which reads well in
    the Browser; through Bolt each row costs the Python driver tens of microseconds (about 1 s for
    25,000 nodes), a list of 25,000 values a few milliseconds."""
    ends = list(re.finditer(r"^RETURN\b", query, re.MULTILINE))
    if not ends:
        raise ValueError("the query has no top-level RETURN")
    at = ends[-1].start()
    collected = ", ".join(f"collect({c}) AS {c}" for c in columns)
    return f"{query[:at]}WITH{query[at + len('RETURN') :]}\nRETURN count(*) AS rows, {collected}"


def _run_columns(
    session: Any, query: str, columns: Sequence[str], stored: bool = False, **params: Any
) -> dict[str, list[Any]]:
    """Run ``columnar(query, columns)``: each column as a list, all of one length (collect() skips
    nulls, so a column with a missing value is refused rather than misaligned). ``stored``: the
    columns are scores that ``cnngraph score`` wrote (a missing one means: score again)."""
    record = session.run(columnar(query, columns), params).single(strict=True)
    rows = int(record["rows"])
    short = [c for c in columns if len(record[c]) != rows]
    if short:
        model = params.get("model")
        fix = (
            f"run 'cnngraph score --model {model}' again"
            if stored
            else f"its graph is damaged: load its mapping again with 'cnngraph load --replace --name {model}'"
        )
        raise Neo4jError(f"{', '.join(short)} missing on some of the {rows} nodes of model '{model}'; {fix}")
    return {c: record[c] for c in columns}


def _matrix(rows: list[Any], t: int) -> np.ndarray:
    """A [t, N] float64 array from N lists of t values."""
    if not rows:
        return np.zeros((t, 0), dtype=np.float64)
    return np.array(rows, dtype=np.float64).reshape(len(rows), t).T.copy()


def _node_scores(
    driver: Driver, model: str, descriptor: str, columns: dict[str, list[Any]], database: str | None
) -> NodeScores:
    nid, layer, i, j = (np.asarray(columns[k], dtype=np.int64) for k in POSITION)
    order = np.argsort(nid, kind="stable")
    values = {name: np.asarray(columns[name], dtype=np.float64)[order] for name in AGGREGATORS}
    names = tuple(str(r["name"]) for r in _fetch(driver, database, LAYER_NAMES, model=model))
    return NodeScores(
        layer=layer[order],
        i=i[order],
        j=j[order],
        values=values,
        layer_names=names,
        descriptor=descriptor,
        model=model,
    )
