// The scores that scores.cypher wrote, one row per node in (layer, i, j) order.
//   :param model => 'vgg16_bn'
MATCH (p:Position {model: $model})
RETURN p.nid AS nid, p.layer AS layer, p.i AS i, p.j AS j, p.delta_entropy AS entropy,
       p.delta_mean AS mean, p.delta_participation AS participation
ORDER BY nid
