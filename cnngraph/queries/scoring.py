"""Degrees and node scores computed by Cypher in Neo4j, returned as numpy arrays.

``compute_scores`` runs ``scores.cypher``, which writes ``delta`` (entropy), ``delta_entropy``,
``delta_mean`` and ``delta_participation`` onto every ``:Position``; ``fetch_scores`` reads them back.
A model loaded with ``--layout compact`` (``:Model.layout``) runs ``scores_compact.cypher`` and
``degrees_compact.cypher`` instead, which read the per-class weight lists: the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from neo4j import Driver

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader.catalog import drop_model, list_models, require_model
from cnngraph.loader.guard import neo4j_errors, quiet_session
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

START_SCORING = "MATCH (m:Model {id: $model}) REMOVE m.scored_descriptor"
FINISH_SCORING = (
    "MATCH (m:Model {id: $model}) SET m.scored_descriptor = $descriptor, m.scored_at = datetime()"
)
LAYER_NAMES = "MATCH (l:Layer {model: $model}) RETURN l.index AS index, l.name AS name ORDER BY index"


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
    props = require_model(driver, model, database)
    descriptor = _check_descriptor(descriptor, props)
    query = for_layout("degrees", props.get("layout"))
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        columns = _run_columns(
            session, query, (*POSITION, "indegree", "outdegree"), model=model, descriptor=descriptor
        )
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
    """Run ``scores.cypher`` (writes ``delta*`` onto the nodes) and return every aggregator."""
    props = require_model(driver, model, database)
    descriptor = _check_descriptor(descriptor or str(props.get("descriptor", "mean")), props)
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        session.run(START_SCORING, model=model).consume()
        query = for_layout("scores", props.get("layout"))
        columns = _run_columns(session, query, SCORE_COLUMNS, model=model, descriptor=descriptor)
        session.run(cypher("size_labels"), model=model).consume()
        session.run(FINISH_SCORING, model=model, descriptor=descriptor).consume()
    return _node_scores(driver, model, descriptor, columns, database)


def fetch_scores(driver: Driver, model: str, database: str | None = None) -> NodeScores:
    """The scores that the last ``compute_scores`` (``cnngraph score``) wrote into the graph."""
    props = require_model(driver, model, database)
    descriptor = props.get("scored_descriptor")
    if descriptor is None:
        raise Neo4jError(f"model '{model}' has no scores yet; run 'cnngraph score --model {model}' first")
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        columns = _run_columns(session, cypher("stored_scores"), SCORE_COLUMNS, model=model)
    return _node_scores(driver, model, str(descriptor), columns, database)


def preview_scores(
    driver: Driver, model: str, descriptor: str | None = None, database: str | None = None
) -> NodeScores:
    """Every aggregator of every node, computed in memory from the degrees Cypher reads.

    Writes nothing into the graph (``prune --dry-run``); same values as :func:`compute_scores`.
    """
    props = require_model(driver, model, database)
    descriptor = _check_descriptor(descriptor or str(props.get("descriptor", "mean")), props)
    table = compute_degrees(driver, model, descriptor, database)
    values = {name: reference.score(table.total, name, absolute=True) for name in AGGREGATORS}
    names = tuple(str(r["name"]) for r in _fetch(driver, database, LAYER_NAMES, model=model))
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
    require_model(driver, model, database)
    return [dict(r) for r in _fetch(driver, database, cypher("layer_summary"), model=model)]


def top_nodes(driver: Driver, model: str, k: int = 25, database: str | None = None) -> list[dict[str, Any]]:
    """The ``k`` nodes with the highest stored ``delta``."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    require_model(driver, model, database)
    return [dict(r) for r in _fetch(driver, database, cypher("top_nodes"), model=model, k=int(k))]


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


def _run_columns(session: Any, query: str, columns: Sequence[str], **params: Any) -> dict[str, list[Any]]:
    """Run ``columnar(query, columns)``: each column as a list, all of one length (collect() skips
    nulls, so a column with a missing value is refused rather than misaligned)."""
    record = session.run(columnar(query, columns), params).single(strict=True)
    rows = int(record["rows"])
    short = [c for c in columns if len(record[c]) != rows]
    if short:
        raise Neo4jError(
            f"{', '.join(short)} missing on some of the {rows} nodes of model '{params.get('model')}'; "
            f"run 'cnngraph score --model {params.get('model')}' again"
        )
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
