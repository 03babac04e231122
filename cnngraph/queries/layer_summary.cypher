// Per-layer summary of the stored scores: how much each convolution's positions are shared
// across class networks (mean delta) and how strongly they respond (mean degree).
//   :param model => 'vgg16_bn'
MATCH (p:Position {model: $model})
WITH p.layer AS layer, count(p) AS nodes, avg(p.delta) AS mean_delta, stDev(p.delta) AS std_delta,
     min(p.delta) AS min_delta, max(p.delta) AS max_delta, avg(p.delta_mean) AS mean_degree,
     avg(p.delta_participation) AS mean_participation
OPTIONAL MATCH (l:Layer {model: $model, index: layer})
RETURN layer, l.name AS name, l.filters AS filters, l.height AS height, l.width AS width, nodes,
       mean_delta, std_delta, min_delta, max_delta, mean_degree, mean_participation
ORDER BY layer
