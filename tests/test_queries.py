"""Cypher degrees and scores equal the reference computation of the mapping (real server), on both
graph layouts: one relationship per arc and class ('per-class') and one per arc ('compact')."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_loader import synthetic_network

from cnngraph.errors import ConfigError, GraphNotFoundError, Neo4jError
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping import reference
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.queries import QUERY_NAMES, cypher, for_layout
from cnngraph.queries.scoring import (
    AGGREGATORS,
    columnar,
    compute_degrees,
    compute_scores,
    fetch_scores,
    layer_summary,
    top_nodes,
)
from cnngraph.settings import Neo4jSettings

# Weights are float32 values sent as float64, so Cypher sums the same numbers as numpy; only the
# summation order differs.
RTOL = 1e-9
ATOL = 1e-12

CASES = {
    "two-layers": dict(shapes=[(6, 6), (6, 6)], classes=3, seed=11),
    "vgg-like": dict(shapes=[(8, 8), (8, 8), (4, 4), (4, 4), (2, 2)], classes=4, seed=12),
    "conv-negative": dict(shapes=[(6, 6), (3, 3), (3, 3)], classes=5, seed=13, response="conv"),
    "zero-class": dict(shapes=[(6, 8), (6, 8), (3, 4)], classes=3, seed=14, zero_class=True),
}


LAYOUTS = ("per-class", "compact")


@pytest.fixture(scope="module")
def loaded_both(neo4j_driver: Any) -> Iterator[dict[tuple[str, str], tuple[str, MultilayerNetwork]]]:
    """Every case loaded once in each layout under a unique model id; dropped at the end."""
    out: dict[tuple[str, str], tuple[str, MultilayerNetwork]] = {}
    try:
        for case, kwargs in CASES.items():
            net = synthetic_network(**kwargs)  # type: ignore[arg-type]
            for layout in LAYOUTS:
                name = f"test-q-{case}-{layout}-{uuid.uuid4().hex[:8]}"
                load_network(neo4j_driver, net, name, batch_size=100, layout=layout)
                out[case, layout] = (name, net)
        yield out
    finally:
        for name, _ in out.values():
            drop_model(neo4j_driver, name)


@pytest.fixture(scope="module")
def loaded(loaded_both: dict[tuple[str, str], tuple[str, MultilayerNetwork]]) -> Any:
    """The per-class copies, by case."""
    return {case: value for (case, layout), value in loaded_both.items() if layout == "per-class"}


def _positions(net: MultilayerNetwork) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return net.topology.node_positions()


@pytest.mark.neo4j
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("descriptor", ["mean", "median"])
def test_degrees_equal_reference(
    neo4j_driver: Any, loaded_both: Any, case: str, descriptor: str, layout: str
) -> None:
    name, net = loaded_both[case, layout]
    table = compute_degrees(neo4j_driver, name, descriptor)
    expected = reference.degrees(net, descriptor)
    layer, i, j = _positions(net)
    np.testing.assert_array_equal(table.layer, layer)
    np.testing.assert_array_equal(table.i, i)
    np.testing.assert_array_equal(table.j, j)
    assert table.indegree.shape == (net.num_classes, net.topology.num_nodes)
    np.testing.assert_allclose(table.indegree, expected.indegree, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(table.outdegree, expected.outdegree, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(table.total, expected.total, rtol=RTOL, atol=ATOL)


@pytest.mark.neo4j
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_scores_equal_reference(neo4j_driver: Any, loaded_both: Any, case: str, layout: str) -> None:
    name, net = loaded_both[case, layout]
    scores = compute_scores(neo4j_driver, name)
    assert scores.descriptor == "mean" and scores.model == name
    assert scores.layer_names == tuple(layer.name for layer in net.layers)
    total = reference.degrees(net, "mean").total
    for aggregator in AGGREGATORS:
        expected = reference.score(total, aggregator)  # |d^h| (docs/METHOD.md sections 4 and 8)
        np.testing.assert_allclose(scores.get(aggregator), expected, rtol=RTOL, atol=ATOL)
    stored = fetch_scores(neo4j_driver, name)
    for aggregator in AGGREGATORS:
        np.testing.assert_array_equal(stored.get(aggregator), scores.get(aggregator))
    np.testing.assert_array_equal(stored.layer, scores.layer)
    # Size labels D0..D4 for the Browser style: the fifth of its own layer that a node's delta
    # ranks in, ties sharing the lowest: floor(5 * (nodes of the layer with smaller delta) / nodes).
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (p:Position {model: $m}) RETURN p.nid AS nid, [x IN labels(p) WHERE x STARTS WITH 'D'] AS d "
        "ORDER BY nid",
        m=name,
    )
    entropy = scores.get("entropy")
    fifths = np.empty(entropy.shape, dtype=np.int64)
    for k in np.unique(scores.layer):
        mine = np.flatnonzero(scores.layer == k)
        smaller = (entropy[mine][None, :] < entropy[mine][:, None]).sum(axis=1)
        fifths[mine] = 5 * smaller // mine.size
    assert [r["d"] for r in records] == [[f"D{f}"] for f in fifths]


@pytest.mark.neo4j
@pytest.mark.parametrize("layout", LAYOUTS)
def test_special_cases_by_hand(neo4j_driver: Any, loaded_both: Any, layout: str) -> None:
    name, net = loaded_both["zero-class", layout]
    scores = compute_scores(neo4j_driver, name, "median")
    # Layer-0 nodes that feed the zeroed node of layer 1 have degree 0 in every class: delta = 0.
    dead = np.flatnonzero(net.topology.weight_node == net.topology.node_offsets[1])
    assert dead.size > 0
    assert np.all(scores.get("entropy")[dead] == 0.0) and np.all(scores.get("mean")[dead] == 0.0)
    # Class 0 is all zeros, so at most t-1 = 2 classes share each node: entropy <= ln 2.
    assert scores.get("entropy").max() <= np.log(2) + 1e-12
    assert scores.get("entropy").max() > 0.5
    name, net = loaded_both["conv-negative", layout]
    assert (net.node_values["mean"] < 0).any()
    assert (compute_scores(neo4j_driver, name).get("mean") >= 0).all()  # |d^h| under response=conv


@pytest.mark.neo4j
def test_summary_and_top_nodes(neo4j_driver: Any, loaded: Any) -> None:
    name, net = loaded["vgg-like"]
    scores = compute_scores(neo4j_driver, name)
    summary = layer_summary(neo4j_driver, name)
    assert [row["layer"] for row in summary] == list(range(len(net.layers)))
    assert [row["nodes"] for row in summary] == [layer.nodes for layer in net.layers]
    delta = scores.get("entropy")
    for row in summary:
        in_layer = delta[scores.layer == row["layer"]]
        assert row["name"] == f"conv{row['layer']}"
        assert row["mean_delta"] == pytest.approx(in_layer.mean(), rel=1e-9)
        assert row["max_delta"] == pytest.approx(in_layer.max(), rel=1e-12)
    top = top_nodes(neo4j_driver, name, k=5)
    assert [row["delta"] for row in top] == pytest.approx(np.sort(delta)[::-1][:5].tolist(), rel=1e-12)


@pytest.mark.neo4j
@pytest.mark.parametrize("layout", LAYOUTS)
def test_neighbourhood_query(neo4j_driver: Any, loaded_both: Any, layout: str) -> None:
    name, net = loaded_both["two-layers", layout]
    records, _, _ = neo4j_driver.execute_query(
        cypher("neighbourhood"), model=name, layer=0, i=2, j=3, **{"class": 1}
    )
    # An interior node of a 6x6 'same' 3x3 layer feeds the 9 positions around it, all with the
    # class-1 value of its weight node (docs/METHOD.md section 3).
    assert len(records) == 9
    weight_node = int(net.topology.weight_node[2 * 6 + 3])
    for descriptor in ("mean", "median"):
        expected = float(net.node_values[descriptor][1, weight_node])
        assert [r[descriptor] for r in records] == [expected] * 9
    stored = [r["path"].relationships[0].get("class") for r in records]
    assert stored == ([1] * 9 if layout == "per-class" else [None] * 9)


@pytest.mark.neo4j
def test_errors(neo4j_driver: Any, loaded: Any, neo4j_settings: Neo4jSettings) -> None:
    with pytest.raises(GraphNotFoundError, match="model 'nope' is not loaded"):
        compute_scores(neo4j_driver, "nope")
    with pytest.raises(GraphNotFoundError, match="model 'nope' is not loaded"):
        fetch_scores(neo4j_driver, "nope")
    name, _ = loaded["two-layers"]
    with pytest.raises(ConfigError, match="unknown descriptor 'mode'"):
        compute_degrees(neo4j_driver, name, "mode")
    # 'max' is a descriptor (docs/METHOD.md section 9), but this synthetic mapping stores mean and median only
    with pytest.raises(ConfigError, match="stores no 'max' arc weights"):
        compute_degrees(neo4j_driver, name, "max")
    with pytest.raises(ConfigError, match="unknown descriptor"):
        compute_scores(neo4j_driver, name, "mean}) DETACH DELETE p //")


@pytest.mark.neo4j
def test_fetch_before_score(neo4j_driver: Any) -> None:
    net = synthetic_network([(4, 4), (4, 4)], classes=2)
    name = f"test-q-unscored-{uuid.uuid4().hex[:8]}"
    try:
        load_network(neo4j_driver, net, name)
        with pytest.raises(Neo4jError, match="run 'cnngraph score --model"):
            fetch_scores(neo4j_driver, name)
    finally:
        drop_model(neo4j_driver, name)


@pytest.mark.neo4j
def test_a_node_without_its_score_is_refused_not_misaligned(neo4j_driver: Any) -> None:
    net = synthetic_network([(4, 4), (4, 4)], classes=2)
    name = f"test-q-holey-{uuid.uuid4().hex[:8]}"
    try:
        load_network(neo4j_driver, net, name)
        compute_scores(neo4j_driver, name)
        neo4j_driver.execute_query(
            "MATCH (p:Position {model: $m, nid: 5}) REMOVE p.delta_mean", m=name
        )  # columns come back as lists (collect skips nulls): one hole must not shift the rest
        with pytest.raises(Neo4jError, match=r"mean missing on some of the 32 nodes .* run 'cnngraph score"):
            fetch_scores(neo4j_driver, name)
    finally:
        drop_model(neo4j_driver, name)


def test_columnar_turns_the_outer_return_into_lists() -> None:
    text = columnar(cypher("degrees"), ["nid", "total"])
    assert text.count("\nRETURN ") == 1 and "  RETURN [c IN classes" in text  # subquery RETURNs stay
    assert text.rstrip().endswith("RETURN count(*) AS rows, collect(nid) AS nid, collect(total) AS total")
    assert "\nWITH p.nid AS nid, p.layer AS layer" in text and "ORDER BY nid" in text
    with pytest.raises(ValueError, match="no top-level RETURN"):
        columnar("MATCH (n) SET n.x = 1", ["x"])


@pytest.mark.neo4j
def test_wrong_password(neo4j_settings: Neo4jSettings) -> None:
    from cnngraph.loader.connection import connect

    if not neo4j_settings.password:
        pytest.skip("the test server runs without auth")
    bad = Neo4jSettings(uri=neo4j_settings.uri, password=neo4j_settings.password + "x")
    with pytest.raises(Neo4jError, match="refused user 'neo4j': wrong or missing password"):
        connect(bad)


def test_every_query_is_shipped_and_parameterised() -> None:
    for name in QUERY_NAMES:
        text = cypher(name)
        assert "$model" in text, name
        assert text.lstrip().startswith("//"), f"{name}.cypher starts with an explanation"
    for name in ("scores", "scores_compact", "degrees", "degrees_compact"):
        assert "r[$descriptor]" in cypher(name), name
    assert "IN TRANSACTIONS" in cypher("scores") and "IN TRANSACTIONS" in cypher("scores_compact")
    assert for_layout("scores", "compact") == cypher("scores_compact")
    assert for_layout("scores", "per-class") == for_layout("scores", None) == cypher("scores")
    assert for_layout("top_nodes", "compact") == cypher("top_nodes")
