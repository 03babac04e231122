"""Loading a multilayer network into the real Neo4j: counts, idempotence, resume, replace."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cnngraph.errors import GraphNotFoundError, Neo4jError
from cnngraph.loader import rows
from cnngraph.loader.catalog import drop_model, get_model, list_models
from cnngraph.loader.writer import load_network
from cnngraph.mapping.network import LayerInfo, MultilayerNetwork, Topology

COUNT_GRAPH = """
MATCH (p:Position {model: $model})
OPTIONAL MATCH (p)-[r:ARC]->()
RETURN count(DISTINCT p) AS positions, count(r) AS arcs
"""
COUNT_META = """
MATCH (m:Model {id: $model})
RETURN COUNT { (m)-[:HAS_LAYER]->(:Layer) } AS layers, COUNT { (m)-[:HAS_CLASS]->(:Class) } AS classes
"""


# ------------------------------------------------------------------ synthetic networks
def _axis_pairs(size: int, next_size: int, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """(target index, source index) pairs along one axis: a 3x3 window after ``ratio`` down-sampling."""
    target = np.repeat(np.arange(next_size), 3 * ratio)
    source = target * ratio + np.tile(np.arange(-ratio, 2 * ratio), next_size)
    keep = (source >= 0) & (source < size)
    return target[keep], source[keep]


def synthetic_network(
    shapes: list[tuple[int, int]],
    classes: int = 4,
    seed: int = 0,
    response: str = "activation",
    zero_class: bool = False,
) -> MultilayerNetwork:
    """Grids of the given sizes (each 1x or 2x smaller than the last), 3x3 window arcs, random values."""
    rng = np.random.default_rng(seed)
    layers = tuple(
        LayerInfo(index=k, name=f"conv{k}", filters=8 + k, height=h, width=w, kernel=(3, 3), stride=(1, 1))
        for k, (h, w) in enumerate(shapes)
    )
    sizes = np.array([h * w for h, w in shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    src_parts, dst_parts, arc_offsets = [], [], [0]
    weight_node = np.full(int(offsets[-1]), -1, dtype=np.int64)
    for k in range(len(shapes) - 1):
        (h, w), (h2, w2) = shapes[k], shapes[k + 1]
        ratio = h // h2
        ti, si = _axis_pairs(h, h2, ratio)
        tj, sj = _axis_pairs(w, w2, ratio)
        dst = offsets[k + 1] + (ti[:, None] * w2 + tj[None, :]).ravel()
        src = offsets[k] + (si[:, None] * w + sj[None, :]).ravel()
        src_parts.append(src)
        dst_parts.append(dst)
        arc_offsets.append(arc_offsets[-1] + src.size)
        i, j = np.divmod(np.arange(h * w), w)
        weight_node[offsets[k] : offsets[k + 1]] = offsets[k + 1] + (i // ratio) * w2 + j // ratio
    topology = Topology(
        layers=layers,
        node_offsets=offsets,
        arc_src=np.concatenate(src_parts).astype(np.int64),
        arc_dst=np.concatenate(dst_parts).astype(np.int64),
        arc_offsets=np.array(arc_offsets, dtype=np.int64),
        edge_src=np.arange(len(shapes) - 1, dtype=np.int64),
        edge_dst=np.arange(1, len(shapes), dtype=np.int64),
        edge_via=("direct",) * (len(shapes) - 1),
        weight_offsets=offsets[:-1].copy(),
        pair_weight_node=weight_node[: offsets[-2]],
    )
    n = int(offsets[-1])
    low = -1.0 if response == "conv" else 0.0
    values = {d: rng.uniform(low, 1.0, size=(classes, n)).astype(np.float32) for d in ("mean", "median")}
    for v in values.values():
        v[:, int(offsets[1])] = 0.0  # the nodes of layer 0 that map onto this one have degree 0
        if zero_class:
            v[0] = 0.0
    return MultilayerNetwork(
        topology=topology,
        class_names=[f"class{h}" for h in range(classes)],
        node_values=values,
        images_per_class=np.full(classes, 5, dtype=np.int64),
        model={"architecture": "synthetic", "input_shape": [3, shapes[0][0], shapes[0][1]]},
        options={"descriptor": "mean", "response": response, "images_per_class": 5},
    )


# ------------------------------------------------------------------ fixtures
def graph_counts(driver: Any, model: str) -> dict[str, int]:
    records, _, _ = driver.execute_query(COUNT_GRAPH, model=model)
    meta, _, _ = driver.execute_query(COUNT_META, model=model)
    counts = dict(records[0])
    counts.update(dict(meta[0]) if meta else {"layers": 0, "classes": 0})
    return counts


def expected_counts(net: MultilayerNetwork) -> dict[str, int]:
    return {
        "positions": net.topology.num_nodes,
        "arcs": net.topology.num_arcs * net.num_classes,
        "layers": len(net.layers),
        "classes": net.num_classes,
    }


class Interrupt(Exception):
    pass


def interrupt_after(batches: int) -> Any:
    """A progress callback that raises once ``batches`` arc batches have committed."""
    seen = {"n": 0}

    def callback(phase: str, done: int, total: int) -> None:
        if phase == "arcs" and done > 0:
            seen["n"] += 1
            if seen["n"] >= batches:
                raise Interrupt

    return callback


# ------------------------------------------------------------------ unit tests (no server)
def test_synthetic_topology_by_hand() -> None:
    net = synthetic_network([(3, 3), (3, 3)], classes=2)
    # 3x3 'same' window on a 3x3 grid: 4 corners x 4 + 4 edges x 6 + centre x 9 = 49 arcs.
    assert net.topology.num_arcs == 49
    centre_in = np.sum(net.topology.arc_dst == 9 + 4)
    assert centre_in == 9
    assert net.topology.weight_node[:9].tolist() == list(range(9, 18))


def test_position_batch_columns() -> None:
    net = synthetic_network([(2, 3), (1, 2)], classes=2)
    batch = rows.position_batch(net, 4, 8)
    assert batch == {"nid": [4, 5, 6, 7], "layer": [0, 0, 1, 1], "i": [1, 1, 0, 0], "j": [1, 2, 0, 1]}


def test_arc_batch_is_arc_major_class_minor() -> None:
    net = synthetic_network([(2, 2), (2, 2)], classes=3)
    batch = rows.arc_batch(net, 2, 4)
    topo = net.topology
    assert batch["src"] == topo.arc_src[2:4].tolist()
    assert batch["dst"] == topo.arc_dst[2:4].tolist()
    assert batch["classes"] == 3
    values = net.node_values["mean"]
    expected = [float(values[h, topo.weight_node[topo.arc_src[k]]]) for k in (2, 3) for h in range(3)]
    assert batch["w_mean"] == expected
    del net.node_values["median"]
    assert rows.arc_batch(net, 0, 1)["w_median"] is None


def test_checksum_changes_with_values_only() -> None:
    a = synthetic_network([(4, 4), (2, 2)], seed=1)
    b = synthetic_network([(4, 4), (2, 2)], seed=1)
    assert rows.checksum(a) == rows.checksum(b)
    b.node_values["median"][0, 0] += 1.0
    assert rows.checksum(a) != rows.checksum(b)


def test_model_properties() -> None:
    net = synthetic_network([(4, 4), (2, 2)], classes=3, response="conv")
    props = rows.model_properties(net, "m1", "abc")
    assert props["id"] == "m1" and props["status"] == "loading" and props["checksum"] == "abc"
    assert props["num_nodes"] == 20 and props["num_classes"] == 3
    assert props["num_relationships"] == net.topology.num_arcs * 3
    assert props["response"] == "conv" and props["descriptors"] == ["mean", "median"]
    assert props["input_shape"] == [3, 4, 4] and props["architecture"] == "synthetic"
    assert rows.architecture({"class": "x.VGG", "spec": {"source": "vgg16"}}) == "vgg16"
    assert rows.architecture({"class": "x.Net", "spec": None}) == "x.Net"


# ------------------------------------------------------------------ against the server
@pytest.mark.neo4j
def test_load_counts_and_properties(driver: Any, model_id: str) -> None:
    net = synthetic_network([(6, 6), (6, 6), (3, 3)], classes=3)
    report = load_network(driver, net, model_id, batch_size=50)
    assert report.status == "loaded" and report.arcs_written == net.topology.num_arcs
    assert graph_counts(driver, model_id) == expected_counts(net)
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "complete"
    assert props["arcs_loaded"] == net.topology.num_arcs and props["nodes_loaded"] == net.topology.num_nodes
    # One arc's class relationships carry the source's weight node value in every class.
    k = 17
    src, dst = int(net.topology.arc_src[k]), int(net.topology.arc_dst[k])
    records, _, _ = driver.execute_query(
        "MATCH (:Position {model: $m, nid: $s})-[r:ARC]->(b:Position {model: $m, nid: $d}) "
        "RETURN r.class AS class, r.mean AS mean, r.median AS median, labels(b) AS labels ORDER BY class",
        m=model_id,
        s=src,
        d=dst,
    )
    node = int(net.topology.weight_node[src])
    assert [r["class"] for r in records] == [0, 1, 2]
    assert [r["mean"] for r in records] == net.node_values["mean"][:, node].astype(float).tolist()
    assert [r["median"] for r in records] == net.node_values["median"][:, node].astype(float).tolist()
    layer_of_dst = int(np.searchsorted(net.topology.node_offsets, dst, side="right") - 1)
    assert set(records[0]["labels"]) == {"Position", f"L{layer_of_dst}"}
    assert any(m["id"] == model_id for m in list_models(driver))


@pytest.mark.neo4j
def test_reload_is_idempotent(driver: Any, model_id: str) -> None:
    net = synthetic_network([(5, 5), (5, 5)], classes=2, seed=3)
    load_network(driver, net, model_id)
    again = load_network(driver, net, model_id)
    assert again.status == "already loaded" and again.arcs_written == 0
    assert graph_counts(driver, model_id) == expected_counts(net)


@pytest.mark.neo4j
def test_interrupted_load_resumes_exactly(driver: Any, model_id: str) -> None:
    net = synthetic_network([(8, 8), (8, 8), (4, 4)], classes=3, seed=4)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=40, progress=interrupt_after(3))
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "loading" and props["arcs_loaded"] == 120
    assert graph_counts(driver, model_id)["arcs"] == 120 * 3
    report = load_network(driver, net, model_id, batch_size=40)
    assert report.status == "resumed" and report.arcs_written == net.topology.num_arcs - 120
    assert graph_counts(driver, model_id) == expected_counts(net)


@pytest.mark.neo4j
def test_interrupted_load_of_other_mapping_is_replaced(driver: Any, model_id: str) -> None:
    first = synthetic_network([(8, 8), (4, 4)], classes=3, seed=5)
    with pytest.raises(Interrupt):
        load_network(driver, first, model_id, batch_size=30, progress=interrupt_after(2))
    second = synthetic_network([(6, 6), (6, 6)], classes=2, seed=6)
    report = load_network(driver, second, model_id, batch_size=30)
    assert report.status == "replaced"
    assert graph_counts(driver, model_id) == expected_counts(second)


@pytest.mark.neo4j
def test_replace_and_conflict(driver: Any, model_id: str) -> None:
    first = synthetic_network([(6, 6), (3, 3)], classes=2, seed=7)
    second = synthetic_network([(5, 5), (5, 5)], classes=4, seed=8)
    load_network(driver, first, model_id)
    with pytest.raises(Neo4jError, match="already loaded from a different mapping; pass --replace"):
        load_network(driver, second, model_id)
    assert graph_counts(driver, model_id) == expected_counts(first)
    report = load_network(driver, second, model_id, replace=True)
    assert report.status == "replaced"
    assert graph_counts(driver, model_id) == expected_counts(second)


@pytest.mark.neo4j
def test_drop_model(driver: Any, model_id: str) -> None:
    net = synthetic_network([(4, 4), (4, 4)], classes=2)
    load_network(driver, net, model_id)
    assert drop_model(driver, model_id, batch_size=7) is True
    assert graph_counts(driver, model_id) == {"positions": 0, "arcs": 0, "layers": 0, "classes": 0}
    assert get_model(driver, model_id) is None
    assert drop_model(driver, model_id) is False


@pytest.mark.neo4j
def test_models_side_by_side(driver: Any, model_id: str) -> None:
    other = f"{model_id}-b"
    try:
        a = synthetic_network([(4, 4), (4, 4)], classes=2, seed=1)
        b = synthetic_network([(6, 6), (3, 3)], classes=3, seed=2)
        load_network(driver, a, model_id)
        load_network(driver, b, other)
        assert graph_counts(driver, model_id) == expected_counts(a)
        assert graph_counts(driver, other) == expected_counts(b)
    finally:
        drop_model(driver, other)


@pytest.mark.neo4j
def test_unknown_model_error(driver: Any) -> None:
    from cnngraph.loader.catalog import require_model

    with pytest.raises(GraphNotFoundError, match="model 'no-such-model' is not loaded; 'cnngraph models'"):
        require_model(driver, "no-such-model")
