// Per-class weighted in-, out- and total degree of every node of one model (docs/METHOD.md section 4).
// Per-class layout (cnngraph load's default). A model loaded with --layout compact (its :Model has
// layout 'compact') needs degrees_compact.cypher instead; this one fails there (sum of lists).
// One row per node; indegree[h], outdegree[h], total[h] belong to class network h.
// In Neo4j Browser first run:
//   :param model => 'vgg16_bn'
//   :param descriptor => 'mean'
// (descriptor: 'mean', 'median', 'max' or 'sum', the node values weighing the arcs; docs/METHOD.md 9)
MATCH (m:Model {id: $model})
WITH range(0, m.num_classes - 1) AS classes
MATCH (p:Position {model: $model})
CALL (p, classes) {
  OPTIONAL MATCH (p)-[r:ARC]->()
  WITH classes, r.class AS h, sum(r[$descriptor]) AS w
  WITH classes, collect([h, w]) AS pairs
  RETURN [c IN classes | coalesce(head([x IN pairs WHERE x[0] = c | x[1]]), 0.0)] AS outdegree
}
CALL (p, classes) {
  OPTIONAL MATCH (p)<-[r:ARC]-()
  WITH classes, r.class AS h, sum(r[$descriptor]) AS w
  WITH classes, collect([h, w]) AS pairs
  RETURN [c IN classes | coalesce(head([x IN pairs WHERE x[0] = c | x[1]]), 0.0)] AS indegree
}
RETURN p.nid AS nid, p.layer AS layer, p.i AS i, p.j AS j,
       indegree, outdegree, [h IN classes | indegree[h] + outdegree[h]] AS total
ORDER BY nid
