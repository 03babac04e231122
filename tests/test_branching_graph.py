"""Branching models end to end against the real Neo4j: FEEDS, Cypher degrees and delta equal the
numpy reference, and ``inspect --json`` counts equal the brute-force autograd reference."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from geometry_oracle import autograd_arcs
from test_feeds import DenseStyle, InvertedResidual, ResidualProjection
from torch import nn
from typer.testing import CliRunner

from cnngraph.datasets import ImageDataset
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping import map_model, reference
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.queries.scoring import AGGREGATORS, compute_degrees, compute_scores

pytestmark = pytest.mark.neo4j

RTOL, ATOL = 1e-9, 1e-12
SHAPE = (3, 8, 8)
CASES: dict[str, tuple[type[nn.Module], str]] = {
    "residual-projection": (ResidualProjection, "activation"),
    "dense-concat": (DenseStyle, "activation"),
    "inverted-residual-depthwise": (InvertedResidual, "conv"),  # signed responses: |d^h|
}


def mapped(case: str) -> MultilayerNetwork:
    factory, response = CASES[case]
    torch.manual_seed(7)
    model = factory()
    images = torch.rand(9, *SHAPE)
    data = ImageDataset(images, torch.tensor([0, 1, 2] * 3), ["cat", "dog", "emu"], case)
    return map_model(model, data, response=response, device="cpu")


@pytest.fixture(scope="module")
def loaded(neo4j_driver: Any) -> Iterator[dict[str, tuple[str, MultilayerNetwork]]]:
    out: dict[str, tuple[str, MultilayerNetwork]] = {}
    try:
        for case in CASES:
            net = mapped(case)
            name = f"test-branch-{case}-{uuid.uuid4().hex[:8]}"
            load_network(neo4j_driver, net, name, batch_size=500)
            out[case] = (name, net)
        yield out
    finally:
        for name, _ in out.values():
            drop_model(neo4j_driver, name)


@pytest.mark.parametrize("case", list(CASES))
def test_feeds_relationships_are_the_layer_dag(neo4j_driver: Any, loaded: Any, case: str) -> None:
    name, net = loaded[case]
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (a:Layer {model: $m})-[f:FEEDS]->(b:Layer {model: $m}) "
        "RETURN a.index AS src, b.index AS dst, f.via AS via, f.arcs AS arcs ORDER BY src, dst",
        m=name,
    )
    assert [dict(r) for r in records] == net.topology.edges()
    assert len(records) > len(net.layers) - 1  # branching: more pairs than a chain
    (count,), _, _ = neo4j_driver.execute_query(
        "MATCH (:Position {model: $m})-[r:ARC]->() RETURN count(r) AS n", m=name
    )
    assert count["n"] == net.topology.num_arcs * net.num_classes


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("descriptor", ["mean", "median"])
def test_cypher_degrees_equal_reference(neo4j_driver: Any, loaded: Any, case: str, descriptor: str) -> None:
    name, net = loaded[case]
    table = compute_degrees(neo4j_driver, name, descriptor)
    expected = reference.degrees(net, descriptor)
    np.testing.assert_allclose(table.indegree, expected.indegree, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(table.outdegree, expected.outdegree, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", list(CASES))
def test_cypher_scores_equal_reference(neo4j_driver: Any, loaded: Any, case: str) -> None:
    name, net = loaded[case]
    scores = compute_scores(neo4j_driver, name)
    total = reference.degrees(net, "mean").total
    if net.options["response"] == "conv":
        assert (total < 0).any()  # the case really exercises |d^h|
    for aggregator in AGGREGATORS:
        expected = reference.score(total, aggregator)  # |d^h| always (docs/METHOD.md sections 4 and 8)
        np.testing.assert_allclose(scores.get(aggregator), expected, rtol=RTOL, atol=ATOL)
    entropy = scores.get("entropy")  # an entropy over t classes lies in [0, ln t], whatever the signs
    assert (entropy >= -1e-12).all() and (entropy <= np.log(net.num_classes) + 1e-9).all()
    np.testing.assert_allclose(scores.get("entropy"), reference.node_scores(net), rtol=RTOL, atol=ATOL)


def brute_degrees(net: MultilayerNetwork, descriptor: str) -> np.ndarray:
    """``d^h`` by a plain loop over the layer pairs: each arc weighs the value of ``pi`` of its pair."""
    topo = net.topology
    values = net.values(descriptor).astype(np.float64)
    total = np.zeros((net.num_classes, topo.num_nodes))
    for e in range(topo.num_edges):
        s = topo.arc_slice(e)
        a = int(topo.edge_src[e])
        pi = topo.pair_weight_node[topo.weight_offsets[e] : topo.weight_offsets[e + 1]]
        w = values[:, pi[topo.arc_src[s] - topo.node_offsets[a]]]
        np.add.at(total, (slice(None), topo.arc_src[s]), w)
        np.add.at(total, (slice(None), topo.arc_dst[s]), w)
    return total


@pytest.mark.parametrize("case", list(CASES))
def test_reference_degrees_equal_a_per_pair_loop(case: str) -> None:
    net = mapped(case)
    np.testing.assert_allclose(
        reference.degrees(net, "median").total, brute_degrees(net, "median"), rtol=1e-12
    )


@pytest.mark.parametrize("case", list(CASES))
def test_inspect_counts_equal_the_autograd_reference(cli_app: typer.Typer, tmp_path: Path, case: str) -> None:
    net = mapped(case)
    path = net.save(tmp_path / f"{case}.npz")
    result = CliRunner().invoke(cli_app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    factory, _ = CASES[case]
    torch.manual_seed(7)
    model = factory()
    names = net.model["layers"]
    sizes: dict[str, int] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: sizes.__setitem__(n, o.shape[2] * o.shape[3])
        )
        for n in names
    ]
    with torch.no_grad():
        model.eval()(torch.ones(1, *SHAPE))
    for h in hooks:
        h.remove()
    oracle = autograd_arcs(model, SHAPE, names)
    assert summary["nodes"] == sum(sizes.values())
    assert summary["arcs_per_class"] == sum(len(arcs) for arcs in oracle.values())
    assert {(e["src"], e["dst"]): e["arcs"] for e in summary["edges"]} == {
        k: len(v) for k, v in oracle.items()
    }
