// delta of every node of one model (docs/METHOD.md section 4), written back as node properties.
// Per-class layout (cnngraph load's default). A model loaded with --layout compact (its :Model has
// layout 'compact') needs scores_compact.cypher instead; this one fails there (sum of lists).
// d[h] = |weighted in- plus out-degree of the node in class network h| (docs/METHOD.md sections 4 and
// 8: the absolute value, since a block ending at a batch norm, or response = conv, can be
// negative; ReLU responses are >= 0 anyway); p[h] = d[h] / sum(d):
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
  WITH t, r.class AS h, sum(r[$descriptor]) AS w
  WITH t, collect([h, w]) AS pairs
  WITH t, [c IN range(0, t - 1) |
           coalesce(head([x IN pairs WHERE x[0] = c | abs(x[1])]), 0.0)] AS d
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
