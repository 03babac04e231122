"""Write an image's explanation onto its loaded model: ``(:Explanation)-[:HIGHLIGHTS]->(:Position)``.

Graph model (docs/GRAPH.md)::

    (:Explanation {model, image, label, predicted, probability, options, ...})
        -[:HIGHLIGHTS {score}]->(:Position {model, nid})

``label`` is the explained class (the predicted one unless asked otherwise), ``predicted`` the
model's prediction, ``probability`` the softmax probability of the explained class, ``options``
the explanation's options (JSON). An explanation is identified by ``(model, image, label)``
(a uniqueness constraint, created ``IF NOT EXISTS``): writing it again replaces it, also when
two copies run at once. One explanation is one write transaction that first locks the
``:Model`` node and checks that it is complete and still the mapping read before (same
checksum); values go only as parameters, the highlights in ``UNWIND`` batches. ``cnngraph
drop`` (and ``load --replace``) removes a model's explanations with the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from neo4j import Driver, ManagedTransaction, unit_of_work

from cnngraph.errors import Neo4jError
from cnngraph.loader import schema
from cnngraph.loader.guard import neo4j_errors, quiet_session

HIGHLIGHT_BATCH = 10_000
WRITE_TIMEOUT = 120.0
"""Seconds the server lets one explanation's transaction run (a few thousand highlights take well
under a second); a writer stopped inside it loses it, and nothing of it is kept."""

SCHEMA = (
    "CREATE CONSTRAINT cnngraph_explanation_key IF NOT EXISTS "
    "FOR (e:Explanation) REQUIRE (e.model, e.image, e.label) IS UNIQUE",
    "CREATE INDEX cnngraph_explanation_model IF NOT EXISTS FOR (e:Explanation) ON (e.model)",
)

MODEL_STATE = "MATCH (m:Model {id: $model}) RETURN m.status AS status, m.checksum AS checksum"

# MERGE on the constrained key: the one node of this identity, created when missing; its old
# highlights go, its properties are set anew.
UPSERT = """
MERGE (e:Explanation {model: $model, image: $image, label: $label})
SET e += $props, e.written = datetime()
WITH e
CALL (e) {
  MATCH (e)-[h:HIGHLIGHTS]->()
  DELETE h
}
RETURN count(e) AS explanations
"""

HIGHLIGHT = """
MATCH (e:Explanation {model: $model, image: $image, label: $label})
UNWIND range(0, size($nid) - 1) AS k
MATCH (p:Position {model: $model, nid: $nid[k]}) USING INDEX SEEK p:Position(model, nid)
CREATE (e)-[:HIGHLIGHTS {score: $score[k]}]->(p)
RETURN count(*) AS created
"""

DELETE_EXPLANATIONS = "MATCH (e:Explanation {model: $model}) DETACH DELETE e"
"""Every explanation of a model (run by ``drop`` after the positions, with the model)."""

COUNT = "MATCH (e:Explanation {model: $model}) RETURN count(e) AS explanations"


@dataclass(frozen=True)
class ExplanationRows:
    """What one explanation writes: its identity, properties, and the highlighted positions."""

    image: str
    label: str
    props: dict[str, Any]
    nid: list[int]
    score: list[float]


def highlighted(scores: np.ndarray, node_offsets: np.ndarray, quantile: float) -> np.ndarray:
    """Global ids of the positions to highlight: per layer, path score positive and at or above the
    layer's ``quantile`` of its scores (layers differ by orders of magnitude, so per layer)."""
    keep = []
    for k in range(len(node_offsets) - 1):
        lo, hi = int(node_offsets[k]), int(node_offsets[k + 1])
        part = scores[lo:hi]
        if part.size == 0:
            continue
        threshold = np.quantile(part, quantile) if quantile > 0 else -np.inf
        keep.append(lo + np.flatnonzero((part > 0) & (part >= threshold)))
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def explanation_rows(
    *,
    image: str,
    label: str,
    label_index: int,
    predicted: str,
    predicted_index: int,
    probability: float,
    options: dict[str, Any],
    scores: np.ndarray,
    node_offsets: np.ndarray,
    true_label: str | None = None,
) -> ExplanationRows:
    """The rows of one explanation (pure; no database)."""
    quantile = float(options.get("quantile", 0.0))
    nid = highlighted(np.asarray(scores, dtype=np.float64), np.asarray(node_offsets), quantile)
    props = {
        "label_index": int(label_index),
        "predicted": str(predicted),
        "predicted_index": int(predicted_index),
        "probability": float(probability),
        "options": json.dumps(options, sort_keys=True),
        "true_label": true_label,
        "positions": int(nid.size),
    }
    return ExplanationRows(
        image=image,
        label=label,
        props=props,
        nid=nid.astype(np.int64).tolist(),
        score=np.asarray(scores, dtype=np.float64)[nid].tolist(),
    )


def ensure_schema(driver: Driver, database: str | None = None) -> None:
    """The explanation's constraint and index, online before anything is written, created as the
    loader creates the graph's (idempotent under concurrency, bounded waits)."""
    from cnngraph.loader.writer import ensure_schema as ensure

    ensure(driver, database, SCHEMA)


def write_explanations(
    driver: Driver,
    model: str,
    checksum: str,
    explanations: Sequence[ExplanationRows],
    database: str | None = None,
) -> int:
    """Write each explanation in its own transaction; the number written."""
    ensure_schema(driver, database)
    work = unit_of_work(
        timeout=WRITE_TIMEOUT, metadata={"app": "cnngraph", "command": "explain", "model": model}
    )(_write_one)
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        for rows in explanations:
            session.execute_write(work, model, checksum, rows)
    return len(explanations)


def _write_one(tx: ManagedTransaction, model: str, checksum: str, rows: ExplanationRows) -> None:
    tx.run(schema.LOCK_MODEL, model=model).consume()  # held until commit: no drop or load in between
    record = tx.run(MODEL_STATE, model=model).single()
    if record is None:
        raise Neo4jError(
            f"model '{model}' was dropped before the explanation was written; nothing was written"
        )
    if record["status"] != "complete" or record["checksum"] != checksum:
        raise Neo4jError(
            f"model '{model}' changed (status '{record['status']}') since it was checked; nothing was "
            "written, run explain again once it is loaded"
        )
    key = {"model": model, "image": rows.image, "label": rows.label}
    tx.run(UPSERT, key, props=rows.props).consume()
    for start in range(0, len(rows.nid), HIGHLIGHT_BATCH):
        nid = rows.nid[start : start + HIGHLIGHT_BATCH]
        score = rows.score[start : start + HIGHLIGHT_BATCH]
        created = tx.run(HIGHLIGHT, key, nid=nid, score=score).single(strict=True)["created"]
        if created != len(nid):
            raise Neo4jError(
                f"model '{model}' lacks {len(nid) - created} of the positions to highlight; it is not the "
                "mapping of this model: map and load it again; nothing was written"
            )


def count_explanations(driver: Driver, model: str, database: str | None = None) -> int:
    """How many explanations the model has."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        return int(session.run(COUNT, model=model).single(strict=True)["explanations"])


def check_loaded(
    driver: Driver,
    model: str,
    layers: Sequence[str],
    num_nodes: int,
    input_shape: Sequence[int],
    database: str | None = None,
) -> dict[str, Any]:
    """The loaded model's properties, after checking it is complete and is this model's mapping:
    the same convolutions (names, in order), node count and input shape; else one clear error."""
    from cnngraph.loader.catalog import require_model

    props = require_model(driver, model, database)
    try:
        description = json.loads(str(props.get("description") or "{}"))
    except ValueError:
        description = {}
    recorded = description.get("layers") if isinstance(description, dict) else None
    problems = []
    if int(props.get("num_layers", -1)) != len(layers):
        problems.append(f"{props.get('num_layers')} layers, this model has {len(layers)} convolutions")
    elif isinstance(recorded, list) and [str(x) for x in recorded] != list(layers):
        problems.append("other convolutions than this model's")
    if int(props.get("num_nodes", -1)) != num_nodes:
        problems.append(f"{props.get('num_nodes')} positions, this model's network has {num_nodes}")
    shape = [int(x) for x in props.get("input_shape") or []]
    if shape and shape != [int(x) for x in input_shape]:
        problems.append(f"input shape {shape}, the images are {list(input_shape)}")
    if problems:
        raise Neo4jError(
            f"model '{model}' in Neo4j is not the mapping of this checkpoint ({'; '.join(problems)}); "
            "map and load this checkpoint, then pass its name to --model"
        )
    return props
