// One explanation in Neo4j Browser, layer by layer: the :Explanation node and its strongest
// highlighted positions of every layer (HIGHLIGHTS {score}: the position's path score), the first
// layer first. Positions are coloured by their L<k> label (style.grass); 'cnngraph explain --load'
// prints this query with its values filled in.
//   :param model => 'resnet20'
//   :param image => '/data/cat.png'
//   :param label => 'cat'
//   :param top => 12
MATCH (e:Explanation {model: $model, image: $image, label: $label})-[h:HIGHLIGHTS]->(p:Position)
WITH e, h, p ORDER BY p.layer, h.score DESC
WITH e, p.layer AS layer, collect({h: h, p: p})[0..$top] AS best
UNWIND best AS b
RETURN e, layer, b.h AS highlights, b.p AS position, b.h.score AS score
ORDER BY layer, score DESC
