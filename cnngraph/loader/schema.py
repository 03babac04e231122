"""The graph model's constraints, indexes and write statements (all Cypher of the loader).

Graph model (docs/GRAPH.md)::

    (:Model {id})-[:HAS_LAYER]->(:Layer {model, index})
    (:Model {id})-[:HAS_CLASS]->(:Class {model, index})
    (:Position:L<k> {model, layer, i, j, nid})-[:ARC {class, mean, median}]->(:Position)

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

AWAIT_INDEXES = "CALL db.awaitIndexes(300)"

GET_MODEL = "MATCH (m:Model {id: $model}) RETURN m {.*} AS model"

CREATE_MODEL = """
CREATE (m:Model)
SET m = $props, m.created = datetime()
WITH m
UNWIND $layers AS layer
CREATE (m)-[:HAS_LAYER]->(l:Layer)
SET l = layer, l.model = $model
WITH DISTINCT m
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
CREATE_ARCS = """
UNWIND range(0, size($src) - 1) AS k
CALL (k) {
  MATCH (a:Position {model: $model, nid: $src[k]}) USING INDEX SEEK a:Position(model, nid)
  MATCH (b:Position {model: $model, nid: $dst[k]}) USING INDEX SEEK b:Position(model, nid)
  UNWIND range(0, $classes - 1) AS h
  CREATE (a)-[:ARC {class: h, mean: $w_mean[k * $classes + h], median: $w_median[k * $classes + h]}]->(b)
}
"""

ADVANCE_NODES = "MATCH (m:Model {id: $model}) SET m.nodes_loaded = $loaded"

ADVANCE_ARCS = "MATCH (m:Model {id: $model}) SET m.arcs_loaded = $loaded"

COMPLETE = "MATCH (m:Model {id: $model}) SET m.status = 'complete', m.completed = datetime()"

# Deletes run as auto-commit queries in batches, so a big model never needs one huge transaction.
DELETE_ARCS = """
MATCH (:Position {model: $model})-[r:ARC]->()
CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS
"""

DELETE_POSITIONS = """
MATCH (p:Position {model: $model})
CALL (p) { DETACH DELETE p } IN TRANSACTIONS OF $batch ROWS
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
