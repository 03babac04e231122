// The k nodes with the highest delta (positions used most evenly by all classes).
//   :param model => 'vgg16_bn'
//   :param k => 25
MATCH (p:Position {model: $model})
WHERE p.delta IS NOT NULL
RETURN p.layer AS layer, p.i AS i, p.j AS j, p.delta AS delta, p.delta_mean AS mean_degree,
       p.delta_participation AS participation
ORDER BY delta DESC, layer, i, j
LIMIT $k
