// The arcs into and out of one node in one class network, as paths for Neo4j Browser, with the
// arc's weights in that class under each descriptor. Works on both layouts: per-class (one
// :ARC {class, mean, median, max, sum} per arc and class: keep those of $class) and compact (one
// :ARC per arc, mean, median, max and sum lists indexed by class: keep every arc, read element
// $class).
//   :param model => 'vgg16_bn'
//   :param layer => 3
//   :param i => 10
//   :param j => 10
//   :param class => 0
MATCH (p:Position {model: $model, layer: $layer, i: $i, j: $j})
MATCH path = (p)-[r:ARC]-(:Position)
WHERE coalesce(r.class, $class) = $class
RETURN path,
       CASE WHEN r.class IS NULL THEN r.mean[$class] ELSE r.mean END AS mean,
       CASE WHEN r.class IS NULL THEN r.median[$class] ELSE r.median END AS median,
       CASE WHEN r.class IS NULL THEN r.max[$class] ELSE r.max END AS max,
       CASE WHEN r.class IS NULL THEN r.sum[$class] ELSE r.sum END AS sum
