"""The graph model's constraints, indexes and write statements (all Cypher of the loader).

Graph model (docs/GRAPH.md)::

    (:Model {id})-[:HAS_LAYER]->(:Layer {model, index})
    (:Model {id})-[:HAS_CLASS]->(:Class {model, index})
    (:Layer)-[:FEEDS {via, arcs}]->(:Layer)   the layer DAG (docs/METHOD.md section 8)
    (:Position:L<k> {model, layer, i, j, nid})-[:ARC {class, mean, median, max, sum, w}]->(:Position)

Every node carries its model id, so several models live side by side in one database.
Community edition has uniqueness constraints (also composite ones) but no node keys.
"""

from __future__ import annotations

SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT cnngraph_model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT cnngraph_position_nid IF NOT EXISTS "
    "FOR (p:Position) REQUIRE (p.model, p.nid) IS UNIQUE",
    "CREATE CONSTRAINT cnngraph_layer_index IF NOT EXISTS FOR (l:Layer) REQUIRE (l.model, l.index) IS UNIQUE",
    "CREATE CONSTRAINT cnngraph_class_index IF NOT EXISTS FOR (c:Class) REQUIRE (c.model, c.index) IS UNIQUE",
    "CREATE INDEX cnngraph_position_layer IF NOT EXISTS FOR (p:Position) ON (p.model, p.layer)",
    "CREATE INDEX cnngraph_position_ij IF NOT EXISTS FOR (p:Position) ON (p.model, p.layer, p.i, p.j)",
    "CREATE INDEX cnngraph_position_model IF NOT EXISTS FOR (p:Position) ON (p.model)",
)

GET_MODEL = "MATCH (m:Model {id: $model}) RETURN m {.*} AS model"

# load_id: new for every load (a drop and reload of the same mapping too), so that a reader can tell
# that the graph it read is still the one it started on (cnngraph/loader/guard.py).
CREATE_MODEL = """
CREATE (m:Model)
SET m = $props, m.created = datetime(), m.load_id = randomUUID()
WITH m
UNWIND $layers AS layer
CREATE (m)-[:HAS_LAYER]->(l:Layer)
SET l = layer, l.model = $model
WITH DISTINCT m
CALL (m) {
  UNWIND $feeds AS feed
  MATCH (a:Layer {model: $model, index: feed.src})
  MATCH (b:Layer {model: $model, index: feed.dst})
  CREATE (a)-[:FEEDS {via: feed.via, arcs: feed.arcs}]->(b)
}
UNWIND $classes AS class
CREATE (m)-[:HAS_CLASS]->(c:Class)
SET c = class, c.model = $model
"""

# One Position per node; its layer also becomes a label L<k> (built from an integer, for styling).
CREATE_POSITIONS = """
UNWIND range(0, size($nid) - 1) AS k
CREATE (p:Position:$("L" + toString($layer[k])))
SET p.model = $model, p.layer = $layer[k], p.i = $i[k], p.j = $j[k], p.nid = $nid[k]
"""

# One MATCH pair per arc, then its t class relationships; weights are [arc, class] row-major.
# The seek hints are needed: without them Neo4j 5.26 may plan a full index scan per arc (30M db
# hits for 5,000 arcs), depending on its statistics; the per-row subquery avoids an Eager.
# w is the mean weight rounded to 3 decimals: Neo4j Browser's arc caption (style.grass), which
# cannot format numbers; it fits the relationship's existing property record, so it costs no space.
CREATE_ARCS = """
UNWIND range(0, size($src) - 1) AS k
CALL (k) {
  MATCH (a:Position {model: $model, nid: $src[k]}) USING INDEX SEEK a:Position(model, nid)
  MATCH (b:Position {model: $model, nid: $dst[k]}) USING INDEX SEEK b:Position(model, nid)
  UNWIND range(0, $classes - 1) AS h
  CREATE (a)-[:ARC {class: h, mean: $w_mean[k * $classes + h], median: $w_median[k * $classes + h],
                    max: $w_max[k * $classes + h], sum: $w_sum[k * $classes + h],
                    w: round($w_mean[k * $classes + h], 3)}]->(b)
}
"""

# The compact layout (load --layout compact): one relationship per arc whose mean, median, max and
# sum are lists indexed by class (weights [arc, class] row-major, so arc k's list is one slice). A batch's
# sources and targets are two contiguous nid ranges, read with one index range seek each instead of
# two seeks per arc (twice the speed); an endpoint whose nid does not match (a position missing from
# the range) becomes null, and CREATE then fails the whole batch rather than misplace an arc.
CREATE_ARCS_COMPACT = """
MATCH (a:Position {model: $model}) USING INDEX SEEK a:Position(model, nid)
WHERE $src_lo <= a.nid <= $src_hi
WITH a ORDER BY a.nid
WITH collect(a) AS sources
CALL (sources) {
  MATCH (b:Position {model: $model}) USING INDEX SEEK b:Position(model, nid)
  WHERE $dst_lo <= b.nid <= $dst_hi
  WITH b ORDER BY b.nid
  RETURN collect(b) AS targets
}
UNWIND range(0, size($src) - 1) AS k
WITH k, sources[$src[k] - $src_lo] AS a, targets[$dst[k] - $dst_lo] AS b
WITH k, CASE WHEN a.nid = $src[k] THEN a END AS a, CASE WHEN b.nid = $dst[k] THEN b END AS b
CREATE (a)-[:ARC {mean: $w_mean[k * $classes .. (k + 1) * $classes],
                  median: $w_median[k * $classes .. (k + 1) * $classes],
                  max: $w_max[k * $classes .. (k + 1) * $classes],
                  sum: $w_sum[k * $classes .. (k + 1) * $classes]}]->(b)
"""

LAYOUTS = ("per-class", "compact")
"""How arcs are stored: one ``:ARC {class, mean, median, max, sum, w}`` per arc and class (the default,
each class network a relationship set of its own), or one ``:ARC {mean: [t], median: [t], max: [t],
sum: [t]}`` per arc (a weight per descriptor, docs/METHOD.md section 9; one the mapping lacks is absent)."""

ADVANCE_NODES = "MATCH (m:Model {id: $model}) SET m.nodes_loaded = $loaded"

ADVANCE_ARCS = "MATCH (m:Model {id: $model}) SET m.arcs_loaded = $loaded"

# Completing a load releases its lease (cnngraph/loader/lease.py) in the same transaction.
COMPLETE = """
MATCH (m:Model {id: $model})
SET m.status = 'complete', m.completed = datetime()
REMOVE m.writer, m.writer_host, m.writer_pid, m.lease_until
"""

# The lease on a model (cnngraph/loader/lease.py). LOCK_MODEL write-locks the node until the
# transaction ends, so that what GET_MODEL_AT reads next cannot change before it commits.
LOCK_MODEL = "MATCH (m:Model {id: $model}) SET m.lease_lock = true REMOVE m.lease_lock"

GET_MODEL_AT = "OPTIONAL MATCH (m:Model {id: $model}) RETURN m {.*} AS model, timestamp() AS now"

TAKE_LEASE = """
MATCH (m:Model {id: $model})
SET m.writer = $token, m.writer_host = $host, m.writer_pid = $pid, m.lease_until = timestamp() + $ttl
"""

RENEW_LEASE = "MATCH (m:Model {id: $model}) SET m.lease_until = timestamp() + $ttl"

RELEASE_LEASE = """
MATCH (m:Model {id: $model}) WHERE m.writer = $token
REMOVE m.writer, m.writer_host, m.writer_pid, m.lease_until
"""

# Committed on its own before anything is deleted: from here on every command sees the model as
# not loaded (no checksum, so no load can call it complete or resume it); a re-run finishes it.
MARK_DELETING = """
MATCH (m:Model {id: $model})
SET m.status = 'deleting', m.deleting_since = datetime(), m.nodes_loaded = 0, m.arcs_loaded = 0
REMOVE m.checksum, m.scored_descriptor, m.completed
"""

# Deletion in batches of positions by nid (with all their relationships, whatever the layout),
# each batch its own transaction under the lease; POSITION_TOP bounds the range.
POSITION_TOP = "MATCH (p:Position {model: $model}) RETURN coalesce(max(p.nid), -1) AS top"

DELETE_POSITION_RANGE = """
MATCH (p:Position {model: $model}) USING INDEX p:Position(model, nid)
WHERE p.nid >= $lo AND p.nid < $hi
DETACH DELETE p
"""

DELETE_MODEL = """
OPTIONAL MATCH (x:Layer|Class {model: $model})
DETACH DELETE x
WITH count(*) AS done
MATCH (m:Model {id: $model})
DETACH DELETE m
RETURN count(m) AS deleted
"""

LIST_MODELS = """
MATCH (m:Model)
RETURN m {.*, created: toString(m.created)} AS model
ORDER BY m.id
"""
