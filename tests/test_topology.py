"""Nodes, arcs and weight nodes: closed formulas, VGG16 figures, and an autograd oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.mapping.geometry import AxisPool
from cnngraph.mapping.network import LayerInfo
from cnngraph.mapping.topology import build_topology, topology_for_model
from cnngraph.models import VGG_CONFIGS, ModelSpec, build_model

POOL = (AxisPool(2, 2), AxisPool(2, 2))  # a 2x2 stride-2 pooling: rows, cols


def same3(index: int, size: int, filters: int = 4) -> LayerInfo:
    return LayerInfo(index, f"c{index}", filters, size, size, (3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_same_3x3_pair_has_3n_minus_2_squared_arcs(n: int) -> None:
    topo = build_topology([same3(0, n), same3(1, n)], [()])
    assert topo.num_nodes == 2 * n * n
    assert topo.num_arcs == (3 * n - 2) ** 2


@pytest.mark.parametrize("m", [1, 2, 4, 7])
def test_pool_pair_has_6m_minus_4_squared_arcs(m: int) -> None:
    topo = build_topology([same3(0, 2 * m), same3(1, m)], [(POOL,)])
    assert topo.num_arcs == (6 * m - 4) ** 2 if m > 1 else 4
    # every source node's weight node is (i // 2, j // 2)
    i, j = np.divmod(np.arange(4 * m * m), 2 * m)
    expected = 4 * m * m + (i // 2) * m + j // 2
    np.testing.assert_array_equal(topo.weight_node[: 4 * m * m], expected)
    assert (topo.weight_node[4 * m * m :] == -1).all()


def vgg16_layers(size: int) -> tuple[list[LayerInfo], list[tuple[tuple[AxisPool, AxisPool], ...]]]:
    layers: list[LayerInfo] = []
    links: list[tuple[tuple[AxisPool, AxisPool], ...]] = []
    pending = False
    for item in VGG_CONFIGS["vgg16"]:
        if item == "M":
            size //= 2
            pending = True
            continue
        if layers:
            links.append((POOL,) if pending else ())
        pending = False
        layers.append(same3(len(layers), size, int(item)))  # type: ignore[call-overload]
    return layers, links


def test_vgg16_at_224_has_137788_nodes_and_1221960_arcs() -> None:
    layers, links = vgg16_layers(224)
    topo = build_topology(layers, links)
    assert topo.num_nodes == 137_788
    assert topo.num_arcs == 1_221_960
    closed = sum(
        (3 * b.height - 2) ** 2 if a.height == b.height else (6 * b.height - 4) ** 2
        for a, b in itertools.pairwise(layers)
    )
    assert topo.num_arcs == closed
    assert topo.arc_offsets.tolist()[:3] == [0, 670**2, 670**2 + 668**2]
    assert topo.weight_node.shape == (137_788,)
    assert (topo.weight_node[: topo.node_offsets[-2]] >= topo.node_offsets[1]).all()


def test_traced_vgg16_at_224_gives_the_same_figures() -> None:
    """The fx path (feeds of the real model) agrees with the closed forms of the chain."""
    model = build_model(ModelSpec("vgg16", input_size=224, width=0.0625))  # narrow: geometry only
    topo = topology_for_model(model, (3, 224, 224))
    layers, links = vgg16_layers(224)
    chain = build_topology(layers, links)
    assert (topo.num_nodes, topo.num_arcs) == (137_788, 1_221_960)
    assert topo.edges() == chain.edges()
    np.testing.assert_array_equal(topo.arc_src, chain.arc_src)
    np.testing.assert_array_equal(topo.arc_dst, chain.arc_dst)
    np.testing.assert_array_equal(topo.pair_weight_node, chain.pair_weight_node)


def oracle_arcs(stage: nn.Module, shape: tuple[int, int, int]) -> set[tuple[int, int]]:
    """Arcs by autograd: target (p, q) reads source u iff d out[:, p, q] / d in[u] != 0."""
    x = torch.ones(1, *shape, requires_grad=True)
    y = stage(x)
    _, _, h, w = y.shape
    arcs = set()
    for p in range(h):
        for q in range(w):
            (grad,) = torch.autograd.grad(y[0, :, p, q].sum(), x, retain_graph=True)
            for u in torch.nonzero(grad[0].abs().sum(0).flatten()).flatten().tolist():
                arcs.add((u, p * w + q))
    return arcs


def ones_conv(cin: int, cout: int, *args: object, **kw: object) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, *args, **kw)  # type: ignore[arg-type]
    nn.init.ones_(conv.weight)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
    return conv


@pytest.mark.parametrize(
    "stages",
    [
        [nn.AvgPool2d(2), ones_conv(2, 2, 3, padding=1)],
        [ones_conv(2, 2, 3, stride=2, padding=1)],
        [ones_conv(2, 2, 1)],
        [ones_conv(2, 2, 3)],
        [nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), nn.ReLU(), ones_conv(2, 2, 2, stride=2)],
        [nn.AvgPool2d(2, ceil_mode=True), nn.AvgPool2d(2), ones_conv(2, 2, 3, padding=2)],
    ],
    ids=["pool+same", "strided", "1x1", "valid", "ceil-pool+strided-k2", "two-pools+pad2"],
)
def test_arcs_equal_autograd_oracle(stages: list[nn.Module]) -> None:
    first = ones_conv(1, 2, 3, padding=1)
    model = nn.Sequential(first, nn.ReLU(), *stages)
    topo = topology_for_model(model, (1, 9, 9))
    offsets = topo.node_offsets
    got = {(int(s), int(d - offsets[1])) for s, d in zip(topo.arc_src, topo.arc_dst, strict=True)}
    assert got == oracle_arcs(nn.Sequential(*stages), (2, 9, 9))
    assert len(got) == topo.num_arcs  # no duplicate arcs


def test_first_and_last_layer_offsets() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(2, 3, 1), nn.Conv2d(3, 1, 3)
    )
    topo = topology_for_model(model, (1, 8, 8))
    assert topo.node_offsets.tolist() == [0, 64, 80, 84]
    assert topo.arc_offsets.tolist() == [0, 64 * 1, 64 + 36]  # pool + 1x1: 4 per target; valid 3x3: 9
    pair = topo.arc_slice(0)
    src_i, src_j = np.divmod(topo.arc_src[pair], 8)
    dst_p, dst_q = np.divmod(topo.arc_dst[pair] - 64, 4)
    np.testing.assert_array_equal(src_i // 2, dst_p)
    np.testing.assert_array_equal(src_j // 2, dst_q)
    i, j = np.divmod(np.arange(64), 8)
    np.testing.assert_array_equal(topo.weight_node[:64], 64 + (i // 2) * 4 + j // 2)
    np.testing.assert_array_equal(topo.weight_node[64:80], _valid_pi())


def _valid_pi() -> np.ndarray:
    """'valid' 3x3 from 4x4 to 2x2: centre p + 1, so rows/cols 0,1 -> 0 and 2,3 -> 1."""
    r = np.array([0, 0, 1, 1])
    return 80 + (r[:, None] * 2 + r[None, :]).ravel()


def test_single_layer_has_no_arcs() -> None:
    topo = topology_for_model(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 5, 5))
    assert topo.num_nodes == 9 and topo.num_arcs == 0
    assert topo.arc_offsets.tolist() == [0]
    assert (topo.weight_node == -1).all()


def test_inconsistent_sizes_are_an_error() -> None:
    with pytest.raises(ModelError, match="positions along axis 0"):
        build_topology([same3(0, 8), same3(1, 8)], [(POOL,)])
