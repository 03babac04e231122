// degrees.cypher for a model loaded with --layout compact (one :ARC per arc, whose mean, median,
// max and sum are lists indexed by class): per-class weighted in-, out- and total degree of every node
// (docs/METHOD.md section 4). One row per node; indexes h of the lists are the class networks.
// In Neo4j Browser first run:
//   :param model => 'vgg16_bn'
//   :param descriptor => 'mean'
// (descriptor: 'mean', 'median', 'max' or 'sum', the node values weighing the arcs; docs/METHOD.md 9)
MATCH (m:Model {id: $model})
WITH range(0, m.num_classes - 1) AS classes
MATCH (p:Position {model: $model})
CALL (p, classes) {
  OPTIONAL MATCH (p)-[r:ARC]->()
  WITH classes, collect(r[$descriptor]) AS weights
  RETURN [h IN classes | reduce(s = 0.0, w IN weights | s + w[h])] AS outdegree
}
CALL (p, classes) {
  OPTIONAL MATCH (p)<-[r:ARC]-()
  WITH classes, collect(r[$descriptor]) AS weights
  RETURN [h IN classes | reduce(s = 0.0, w IN weights | s + w[h])] AS indegree
}
RETURN p.nid AS nid, p.layer AS layer, p.i AS i, p.j AS j,
       indegree, outdegree, [h IN classes | indegree[h] + outdegree[h]] AS total
ORDER BY nid
