"""Export class networks to GEXF and GraphML (for Gephi and friends).

One class network, several or all of them: with more than one class every arc appears once per
class, its ``class`` attribute saying which. An edge's ``weight`` is its weight under the chosen
descriptor; every descriptor the mapping has (``mean``, ``median``, ``max``, ``sum``, docs/METHOD.md
section 9) is also an edge attribute, and with one class a node attribute (its value). Files are
written as a stream of text lines built with numpy string operations in chunks, to a temporary
name that is renamed at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from cnngraph.errors import ConfigError
from cnngraph.files import atomic_path
from cnngraph.mapping.network import MultilayerNetwork

FORMATS = ("gexf", "graphml")
CHUNK = 200_000


def export_gexf(
    network: MultilayerNetwork,
    path: str | Path,
    classes: str | Sequence[str] | None = None,
    descriptor: str = "mean",
) -> Path:
    """Write the class networks named by ``classes`` (default: all) as GEXF 1.3."""
    chosen = resolve_classes(network, classes)
    return _write(path, lambda fh: _gexf(fh, network, chosen, descriptor))


def export_graphml(
    network: MultilayerNetwork,
    path: str | Path,
    classes: str | Sequence[str] | None = None,
    descriptor: str = "mean",
) -> Path:
    """Write the class networks named by ``classes`` (default: all) as GraphML."""
    chosen = resolve_classes(network, classes)
    return _write(path, lambda fh: _graphml(fh, network, chosen, descriptor))


def resolve_classes(network: MultilayerNetwork, classes: str | Sequence[str] | None) -> list[int]:
    """Indices of the named classes; ``None`` or ``'all'`` means every class."""
    if classes is None or classes == "all":
        return list(range(network.num_classes))
    names = [classes] if isinstance(classes, str) else list(classes)
    out = []
    for name in names:
        if name not in network.class_names:
            known = ", ".join(network.class_names)
            raise ConfigError(f"class '{name}' is not in the mapping; its classes are {known} (or all)")
        out.append(network.class_names.index(name))
    return out


def _write(path: str | Path, body: Callable[[IO[str]], None]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        body(fh)
    return path


def _join(*parts: str | np.ndarray) -> str:
    """Concatenate string constants and arrays element-wise; one text block, a line per element."""
    out: np.ndarray | None = None
    for part in parts:
        arr = np.asarray(part if isinstance(part, str) else part.astype(str))
        out = arr if out is None else np.strings.add(out, arr)
    assert out is not None
    return "\n".join(out.tolist()) + "\n" if out.ndim and out.size else ""


def _node_chunks(
    network: MultilayerNetwork,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    layer, i, j = network.topology.node_positions()
    for start in range(0, layer.shape[0], CHUNK):
        stop = start + CHUNK
        yield np.arange(start, min(stop, layer.shape[0])), layer[start:stop], i[start:stop], j[start:stop]


def _arc_chunks(
    network: MultilayerNetwork,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Arc ids, sources, targets and weight nodes (``pi`` of the arc's edge), a chunk at a time."""
    topo = network.topology
    for start in range(0, topo.num_arcs, CHUNK):
        stop = min(start + CHUNK, topo.num_arcs)
        arcs = slice(start, stop)
        yield np.arange(start, stop), topo.arc_src[arcs], topo.arc_dst[arcs], topo.arc_weight_nodes(arcs)


def _layer_names(network: MultilayerNetwork) -> np.ndarray:
    return np.array([escape(layer.name, {'"': "&quot;"}) for layer in network.layers])


def _gexf(fh: IO[str], network: MultilayerNetwork, classes: list[int], descriptor: str) -> None:
    values = network.values(descriptor)
    every = {d: network.values(d) for d in network.descriptors}
    single = len(classes) == 1
    names = _layer_names(network)
    fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<gexf xmlns="http://gexf.net/1.3" version="1.3">\n')
    title = ", ".join(network.class_names[h] for h in classes)
    fh.write(f"<meta><creator>cnngraph</creator><description>{escape(title)}</description></meta>\n")
    fh.write('<graph mode="static" defaultedgetype="directed">\n<attributes class="node">\n')
    for key, typ in (("layer", "integer"), ("i", "integer"), ("j", "integer"), ("layer_name", "string")):
        fh.write(f'<attribute id="{key}" title="{key}" type="{typ}"/>\n')
    if single:
        fh.write('<attribute id="value" title="value" type="float"/>\n')
        for d in every:
            fh.write(f'<attribute id="node_{d}" title="{d}" type="float"/>\n')
    fh.write(
        '</attributes>\n<attributes class="edge">\n<attribute id="class" title="class" type="string"/>\n'
    )
    for d in every:
        fh.write(f'<attribute id="edge_{d}" title="{d}" type="float"/>\n')
    fh.write("</attributes>\n<nodes>\n")
    for ids, layer, i, j in _node_chunks(network):
        extra: list[str | np.ndarray] = []
        if single:
            extra += ['<attvalue for="value" value="', values[classes[0], ids], '"/>']
            for d, v in every.items():
                extra += [f'<attvalue for="node_{d}" value="', v[classes[0], ids], '"/>']
        fh.write(
            _join(
                '<node id="', ids, '" label="', layer, ":", i, ",", j,
                '"><attvalues><attvalue for="layer" value="', layer,
                '"/><attvalue for="i" value="', i, '"/><attvalue for="j" value="', j,
                '"/><attvalue for="layer_name" value="', names[layer], '"/>',
                *extra,
                "</attvalues></node>",
            )
        )  # fmt: skip
    fh.write("</nodes>\n<edges>\n")
    for h in classes:
        cls = quoteattr(network.class_names[h])
        kind = f" kind={cls}" if not single else ""
        offset = 0 if single else h * network.topology.num_arcs
        for ids, src, dst, weight_node in _arc_chunks(network):
            per_descriptor: list[str | np.ndarray] = []
            for d, v in every.items():
                per_descriptor += [f'<attvalue for="edge_{d}" value="', v[h, weight_node], '"/>']
            fh.write(
                _join(
                    '<edge id="', ids + offset, '" source="', src, '" target="', dst, f'"{kind} weight="',
                    values[h, weight_node], f'"><attvalues><attvalue for="class" value={cls}/>',
                    *per_descriptor, "</attvalues></edge>",
                )
            )  # fmt: skip
    fh.write("</edges>\n</graph>\n</gexf>\n")


def _graphml(fh: IO[str], network: MultilayerNetwork, classes: list[int], descriptor: str) -> None:
    values = network.values(descriptor)
    every = {d: network.values(d) for d in network.descriptors}
    single = len(classes) == 1
    names = _layer_names(network)
    fh.write(
        '<?xml version="1.0" encoding="UTF-8"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation='
        '"http://graphml.graphdrawing.org/xmlns http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n'
    )
    keys = [
        ("layer", "node", "int"),
        ("i", "node", "int"),
        ("j", "node", "int"),
        ("layer_name", "node", "string"),
    ]
    if single:
        keys.append(("value", "node", "double"))
        keys += [(f"node_{d}", "node", "double") for d in every]
    keys += [("weight", "edge", "double"), ("class", "edge", "string")]
    keys += [(f"edge_{d}", "edge", "double") for d in every]
    for key, target, typ in keys:
        name = key.split("_", 1)[1] if key.startswith(("node_", "edge_")) else key
        fh.write(f'<key id="{key}" for="{target}" attr.name="{name}" attr.type="{typ}"/>\n')
    fh.write('<graph id="G" edgedefault="directed">\n')
    for ids, layer, i, j in _node_chunks(network):
        extra: list[str | np.ndarray] = []
        if single:
            extra += ['<data key="value">', values[classes[0], ids], "</data>"]
            for d, v in every.items():
                extra += [f'<data key="node_{d}">', v[classes[0], ids], "</data>"]
        fh.write(
            _join(
                '<node id="n', ids, '"><data key="layer">', layer, '</data><data key="i">', i,
                '</data><data key="j">', j, '</data><data key="layer_name">', names[layer], "</data>",
                *extra, "</node>",
            )
        )  # fmt: skip
    for h in classes:
        cls = escape(network.class_names[h])
        for _, src, dst, weight_node in _arc_chunks(network):
            per_descriptor: list[str | np.ndarray] = []
            for d, v in every.items():
                per_descriptor += [f'<data key="edge_{d}">', v[h, weight_node], "</data>"]
            fh.write(
                _join(
                    '<edge source="n', src, '" target="n', dst, '"><data key="weight">',
                    values[h, weight_node], f'</data><data key="class">{cls}</data>',
                    *per_descriptor, "</edge>",
                )
            )  # fmt: skip
    fh.write("</graph>\n</graphml>\n")
