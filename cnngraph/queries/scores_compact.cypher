// scores.cypher for a model loaded with --layout compact (one :ARC per arc, whose mean, median,
// max and sum are lists indexed by class): delta of every node (docs/METHOD.md section 4), written back.
// d[h] = |weighted in- plus out-degree of the node in class network h|, the sum of element h of
// the weight lists of its arcs (docs/METHOD.md sections 4 and 8: the absolute value, since a block
// ending at a batch norm, or response = conv, can be negative); p[h] = d[h] / sum(d):
//   entropy       = -sum_h p[h] ln p[h]   (terms with p[h] = 0 add 0; 0 when sum(d) = 0)
//   mean          = sum(d) / t
//   participation = t / (t - 1) * (1 - sum_h p[h]^2)
// delta = entropy. size_labels.cypher then gives each node a label D0..D4 for the Browser style.
// Writes run in batches, so run this as its own query (in Neo4j Browser prefix it with :auto).
//   :param model => 'vgg16_bn'
//   :param descriptor => 'mean'
// (descriptor: 'mean', 'median', 'max' or 'sum', the node values weighing the arcs; docs/METHOD.md 9)
MATCH (m:Model {id: $model})
WITH m.num_classes AS t
MATCH (p:Position {model: $model})
CALL (p, t) {
  OPTIONAL MATCH (p)-[r:ARC]-()
  WITH t, collect(r[$descriptor]) AS weights
  WITH t, [h IN range(0, t - 1) |
           abs(reduce(s = 0.0, w IN weights | s + w[h]))] AS d
  WITH t, d, reduce(s = 0.0, x IN d | s + x) AS total
  RETURN
    CASE WHEN total = 0 THEN 0.0
         ELSE -reduce(s = 0.0, x IN d | s + CASE WHEN x / total > 0 THEN x / total * log(x / total) ELSE 0.0 END)
    END AS entropy,
    total / t AS mean,
    CASE WHEN t < 2 OR total = 0 THEN 0.0
         ELSE t / (t - 1.0) * (1.0 - reduce(s = 0.0, x IN d | s + (x / total) ^ 2))
    END AS participation
}
CALL (p, entropy, mean, participation) {
  SET p.delta = entropy, p.delta_entropy = entropy, p.delta_mean = mean,
      p.delta_participation = participation, p.delta_descriptor = $descriptor
} IN TRANSACTIONS OF 10000 ROWS
RETURN p.nid AS nid, p.layer AS layer, p.i AS i, p.j AS j, entropy, mean, participation
