"""Back-tracking (METHOD.md 10): the dynamic programme equals brute-force path enumeration."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.explain.backtrack import ArcChooser, choose_arcs, flow_scores, node_scores, path_sums
from cnngraph.explain.image_network import ImageNetworks
from cnngraph.mapping.network import Topology
from cnngraph.models import CifarResNet


def chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(),
        nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3),
    )  # fmt: skip


def residual() -> nn.Module:
    torch.manual_seed(0)
    return CifarResNet(1, num_classes=3, in_channels=1, width=0.25)


def topology_of(model: nn.Module, size: int) -> ImageNetworks:
    model(torch.zeros(1, 1, size, size))  # materialise lazy layers
    return ImageNetworks(model.eval(), (1, size, size))


def reference_choice(topo: Topology, w: np.ndarray, m: int) -> dict[int, list[tuple[int, float]]]:
    """Per destination, its m heaviest entering arcs, ties to the lower source id: plain Python."""
    entering: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for s, d, x in zip(topo.arc_src.tolist(), topo.arc_dst.tolist(), w.tolist(), strict=True):
        entering[d].append((s, x))
    return {d: sorted(arcs, key=lambda a: (-a[1], a[0]))[:m] for d, arcs in entering.items()}


def brute_force_paths(topo: Topology, w: np.ndarray, m: int) -> np.ndarray:
    """Enumerate every path from every last-layer node; sum at each node the weight gathered so far."""
    chosen = reference_choice(topo, w, m)
    score = np.zeros(topo.num_nodes)
    last = len(topo.layers) - 1
    for start in range(int(topo.node_offsets[last]), int(topo.node_offsets[last + 1])):
        stack = [(start, 0.0)]
        while stack:
            v, acc = stack.pop()
            score[v] += acc
            for u, x in chosen.get(v, []):
                stack.append((u, acc + x))
    return score


def reference_flow(topo: Topology, w: np.ndarray, m: int) -> np.ndarray:
    """Node by node, from the last layer back: split the score by max(w, 0), equally when all are 0."""
    chosen = reference_choice(topo, w, m)
    score = np.zeros(topo.num_nodes)
    last = len(topo.layers) - 1
    score[topo.node_offsets[last] : topo.node_offsets[last + 1]] = 1.0
    for v in range(topo.num_nodes - 1, -1, -1):  # ids grow with the layer: sources come later
        arcs = chosen.get(v, [])
        mass = sum(max(x, 0.0) for _, x in arcs)
        for u, x in arcs:
            score[u] += score[v] * (max(x, 0.0) / mass if mass > 0 else 1.0 / len(arcs))
    return score


CASES = [("chain", chain, 8), ("residual", residual, 6)]


@pytest.mark.parametrize(("name", "build", "size"), CASES)
@pytest.mark.parametrize("m", [1, 2, 3, 9])
def test_dynamic_programme_equals_path_enumeration(name: str, build: object, size: int, m: int) -> None:
    nets = topology_of(build(), size)  # type: ignore[operator]
    topo = nets.topology
    rng = np.random.default_rng(m)
    w = rng.integers(0, 4, topo.num_arcs).astype(np.float64)  # small integers: many ties, exact sums
    count, weight = path_sums(topo, choose_arcs(topo, w, m))
    assert np.array_equal(weight, brute_force_paths(topo, w, m))
    assert count[topo.node_offsets[-2] :].sum() == topo.layers[-1].nodes  # one path per start node


@pytest.mark.parametrize(("name", "build", "size"), CASES)
def test_dynamic_programme_on_real_image_weights(name: str, build: object, size: int) -> None:
    nets = topology_of(build(), size)  # type: ignore[operator]
    _, values = nets.forward(torch.rand(1, 1, size, size), "max")
    w = nets.arc_weights(values[0]).astype(np.float64)
    for m in (2, 3):
        got = node_scores(nets.topology, w, m, "paths")
        np.testing.assert_allclose(got, brute_force_paths(nets.topology, w, m), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "build", "size"), CASES)
@pytest.mark.parametrize("m", [1, 3, 9])
def test_flow_equals_node_by_node_reference(name: str, build: object, size: int, m: int) -> None:
    nets = topology_of(build(), size)  # type: ignore[operator]
    topo = nets.topology
    w = np.random.default_rng(m).integers(-1, 3, topo.num_arcs).astype(np.float64)  # negatives and zeros
    got = flow_scores(topo, choose_arcs(topo, w, m))
    np.testing.assert_allclose(got, reference_flow(topo, w, m), rtol=1e-12)
    ends = np.ones(topo.num_nodes, dtype=bool)  # nodes with no chosen entering arc keep what arrives
    ends[np.unique(choose_arcs(topo, w, m).dst)] = False
    assert got[ends].sum() == pytest.approx(topo.layers[-1].nodes)  # the total is conserved


def test_ties_go_to_the_lower_source() -> None:
    from cnngraph.mapping.network import LayerInfo

    layers = (
        LayerInfo(0, "a", 1, 1, 3, (1, 1), (1, 1)),
        LayerInfo(1, "b", 1, 1, 1, (1, 3), (1, 1)),
    )
    topo = Topology(
        layers=layers,
        node_offsets=np.array([0, 3, 4]),
        arc_src=np.array([2, 0, 1]),
        arc_dst=np.array([3, 3, 3]),
        arc_offsets=np.array([0, 3]),
        edge_src=np.array([0]),
        edge_dst=np.array([1]),
        edge_via=("direct",),
        weight_offsets=np.array([0, 3]),
        pair_weight_node=np.array([3, 3, 3]),
    )
    chosen = choose_arcs(topo, np.array([5.0, 5.0, 7.0]), 2)
    assert sorted(chosen.src.tolist()) == [0, 1]  # source 1 weighs 7; the tie 5/5 goes to source 0, not 2
    chosen = choose_arcs(topo, np.array([5.0, 5.0, 5.0]), 1)
    assert chosen.src.tolist() == [0]  # a three-way tie: the lowest source
    count, weight = path_sums(topo, chosen)
    assert weight.tolist() == [5.0, 0.0, 0.0, 0.0] and count.tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(("name", "build", "size"), CASES)
@pytest.mark.parametrize("m", [1, 2, 3, 9])
def test_the_fast_chooser_picks_the_same_arcs(name: str, build: object, size: int, m: int) -> None:
    nets = topology_of(build(), size)  # type: ignore[operator]
    topo = nets.topology
    chooser = ArcChooser(topo, nets.weight_nodes)
    _, real = nets.forward(torch.rand(1, 1, size, size), "max")
    tied = np.random.default_rng(m).integers(0, 3, topo.num_nodes).astype(np.float32)  # many equal values
    for values in (real[0], tied):
        slow = choose_arcs(topo, nets.arc_weights(values), m)
        fast = chooser.choose(values, m)
        key_slow = sorted(zip(slow.dst.tolist(), slow.src.tolist(), slow.weight.tolist(), strict=True))
        key_fast = sorted(zip(fast.dst.tolist(), fast.src.tolist(), fast.weight.tolist(), strict=True))
        assert key_slow == key_fast
        assert np.all(np.diff(fast.dst) >= 0)
        np.testing.assert_array_equal(path_sums(topo, fast)[1], path_sums(topo, slow)[1])
