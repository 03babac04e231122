// One label D0..D4 per scored position: the fifth of its own layer that its delta ranks in (D0 the
// lowest 20% of the layer, D4 the highest); equal deltas share the band of the first of them, so
// band = floor(5 * (positions of the layer with a smaller delta) / positions of the layer).
// Ranks, not values: entropies sit just below ln t, so fifths of the value range would make
// almost every node alike. The Browser style (style.grass) sizes nodes by these labels.
// Run after scores.cypher (in Neo4j Browser prefix it with :auto).
//   :param model => 'vgg16_bn'
MATCH (p:Position {model: $model})
WHERE p.delta IS NOT NULL
WITH p ORDER BY p.layer, p.delta
WITH p.layer AS layer, collect(p) AS ranked
UNWIND range(0, size(ranked) - 1) AS r
WITH layer, ranked[r] AS p, toInteger(floor(5.0 * r / size(ranked))) AS band
WITH layer, p.delta AS delta, collect(p) AS tied, min(band) AS band
UNWIND tied AS p
CALL (p, band) {
  REMOVE p:D0:D1:D2:D3:D4
  SET p:$("D" + toString(band))
} IN TRANSACTIONS OF 10000 ROWS
