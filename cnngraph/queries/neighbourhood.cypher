// The arcs into and out of one node in one class network, as paths for Neo4j Browser.
//   :param model => 'vgg16_bn'
//   :param layer => 3
//   :param i => 10
//   :param j => 10
//   :param class => 0
MATCH (p:Position {model: $model, layer: $layer, i: $i, j: $j})
MATCH path = (p)-[r:ARC {class: $class}]-(:Position)
RETURN path
