"""GEXF and GraphML export of one class network or all of them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from cnngraph.errors import ConfigError
from cnngraph.mapping.export import export_gexf, export_graphml
from cnngraph.mapping.network import LayerInfo, MultilayerNetwork
from cnngraph.mapping.topology import build_topology

GEXF = "{http://gexf.net/1.3}"
GML = "{http://graphml.graphdrawing.org/xmlns}"


@pytest.fixture(scope="module")
def network() -> MultilayerNetwork:
    layers = [
        LayerInfo(0, "features.0", 2, 2, 2, (3, 3), (1, 1), (1, 1)),
        LayerInfo(1, "features.<3>", 1, 2, 2, (3, 3), (1, 1), (1, 1)),
    ]
    topo = build_topology(layers, [()])
    values = np.array([[6, 0, 0, 3, 18, 0, 0, 9], [3, 3, 3, 0, 9, 9, 9, 0.5]], dtype=np.float32)
    return MultilayerNetwork(
        topology=topo,
        class_names=["cat", 'dog & "co"'],
        node_values={"mean": values, "median": values * 2},
        images_per_class=np.array([2, 1]),
    )


def gexf_edges(root: ET.Element) -> list[tuple[int, int, float, str]]:
    out = []
    for e in root.iter(f"{GEXF}edge"):
        cls = str(e.find(f"{GEXF}attvalues/{GEXF}attvalue").get("value"))  # type: ignore[union-attr]
        out.append((int(e.get("source")), int(e.get("target")), float(e.get("weight")), cls))  # type: ignore[arg-type]
    return out


def test_gexf_one_class(network: MultilayerNetwork, tmp_path: Path) -> None:
    path = export_gexf(network, tmp_path / "cat.gexf", classes="cat")
    root = ET.parse(path).getroot()
    nodes = list(root.iter(f"{GEXF}node"))
    assert len(nodes) == 8
    attrs = {a.get("for"): a.get("value") for a in nodes[5].iter(f"{GEXF}attvalue")}
    assert attrs == {
        "layer": "1", "i": "0", "j": "1", "layer_name": "features.<3>", "value": "0.0",
        "node_mean": "0.0", "node_median": "0.0",
    }  # fmt: skip
    edges = gexf_edges(root)
    assert len(edges) == 16
    expected = {(u, v, [18.0, 0.0, 0.0, 9.0][u], "cat") for u in range(4) for v in range(4, 8)}
    assert set(edges) == expected
    assert len({e.get("id") for e in root.iter(f"{GEXF}edge")}) == 16


def test_gexf_all_classes_has_one_edge_per_arc_per_class(network: MultilayerNetwork, tmp_path: Path) -> None:
    path = export_gexf(network, tmp_path / "all.gexf", descriptor="median")
    root = ET.parse(path).getroot()
    edges = gexf_edges(root)
    assert len(edges) == 32
    dog = sorted(e for e in edges if e[3] == 'dog & "co"')
    assert len(dog) == 16
    assert {(u, w) for u, _, w, _ in dog} == {(0, 18.0), (1, 18.0), (2, 18.0), (3, 1.0)}
    assert len({e.get("id") for e in root.iter(f"{GEXF}edge")}) == 32


def test_graphml_one_and_all(network: MultilayerNetwork, tmp_path: Path) -> None:
    root = ET.parse(export_graphml(network, tmp_path / "g.graphml", classes=["cat", 'dog & "co"'])).getroot()
    graph = root.find(f"{GML}graph")
    assert graph is not None and graph.get("edgedefault") == "directed"
    assert len(graph.findall(f"{GML}node")) == 8
    edges = graph.findall(f"{GML}edge")
    assert len(edges) == 32
    first = {d.get("key"): d.text for d in edges[0].findall(f"{GML}data")}
    assert first == {"weight": "18.0", "class": "cat", "edge_mean": "18.0", "edge_median": "36.0"}
    assert edges[0].get("source") == "n0" and edges[0].get("target") == "n4"
    one = ET.parse(export_graphml(network, tmp_path / "dog.graphml", classes='dog & "co"')).getroot()
    node = one.find(f"{GML}graph/{GML}node")
    assert node is not None
    assert {d.get("key"): d.text for d in node.findall(f"{GML}data")} == {
        "layer": "0", "i": "0", "j": "0", "layer_name": "features.0", "value": "3.0",
        "node_mean": "3.0", "node_median": "6.0",
    }  # fmt: skip


def test_unknown_class_is_an_error_and_writes_nothing(network: MultilayerNetwork, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="class 'cow' is not in the mapping"):
        export_gexf(network, tmp_path / "x.gexf", classes="cow")
    assert list(tmp_path.iterdir()) == []


def test_branching_export_weighs_each_arc_by_its_fed_layer(tmp_path: Path) -> None:
    """Layer 0 feeds layers 1 and 2 (1x1 convolutions on 2x2 maps): the arcs of node 0 carry the
    value of node 4 towards layer 1 and of node 8 towards layer 2."""
    from cnngraph.mapping import geometry as geo
    from cnngraph.mapping.feeds import Feed, PathGeometry
    from cnngraph.mapping.topology import assemble_topology

    layers = [LayerInfo(k, f"c{k}", 1, 2, 2, (1, 1), (1, 1)) for k in range(3)]
    one = geo.AxisConv(1)

    def feed(a: int, b: int) -> Feed:
        m = geo.through_taps(geo.identity(2), one, 2)
        return Feed(a, b, "direct", (PathGeometry(m, m, frozenset()),))

    topo = assemble_topology(layers, [feed(0, 2), feed(0, 1), feed(1, 2)])
    assert [(e["src"], e["dst"]) for e in topo.edges()] == [(0, 1), (0, 2), (1, 2)]
    values = np.arange(12, dtype=np.float32).reshape(1, 12) + 1
    net = MultilayerNetwork(topo, ["only"], {"mean": values}, np.array([1]))
    edges = gexf_edges(ET.parse(export_gexf(net, tmp_path / "dag.gexf")).getroot())
    assert sorted(edges) == sorted(
        [(u, u + 4, float(u + 5), "only") for u in range(4)]  # 0 -> 1: value of the node in layer 1
        + [(u, u + 8, float(u + 9), "only") for u in range(4)]  # 0 -> 2: value of the node in layer 2
        + [(u, u + 4, float(u + 5), "only") for u in range(4, 8)]  # 1 -> 2
    )
    np.testing.assert_array_equal(net.weights("mean")[0], [e[2] for e in edges])
