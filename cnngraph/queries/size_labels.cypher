// One label D0..D4 per position of a scored model: the fifth of the model's range of delta
// [min, max] that its own delta falls in, so the Browser style (style.grass) can size nodes by
// delta. Entropies usually sit just below ln t, so a fixed scale would make every node D4.
// Run after scores.cypher (in Neo4j Browser prefix it with :auto).
//   :param model => 'vgg16_bn'
MATCH (p:Position {model: $model})
WITH min(p.delta) AS low, max(p.delta) AS high
MATCH (p:Position {model: $model})
WITH p, CASE WHEN high > low THEN toInteger(floor(5.0 * (p.delta - low) / (high - low))) ELSE 4 END AS fifth
CALL (p, fifth) {
  REMOVE p:D0:D1:D2:D3:D4
  SET p:$("D" + toString(CASE WHEN fifth > 4 THEN 4 ELSE fifth END))
} IN TRANSACTIONS OF 10000 ROWS
