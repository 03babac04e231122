"""The feeds relation and its arcs against a brute-force autograd reference (docs/METHOD.md sections 3, 8).

Every model here is mapped by cnngraph and by ``geometry_oracle.autograd_arcs``; the two must
give exactly the same pairs of layers and the same set of arcs for every pair.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from geometry_oracle import autograd_arcs, axis_centres, brute_pi
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.mapping.topology import assemble_topology, topology_for_model
from cnngraph.mapping.trace import trace_model

C = nn.Conv2d


class ResidualProjection(nn.Module):
    """A stem, a strided basic block with a 1x1 projection shortcut, an identity block, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = C(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv1, self.bn1 = C(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = C(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.proj, self.bnp = C(4, 8, 1, stride=2), nn.BatchNorm2d(8)
        self.conv3, self.conv4 = C(8, 8, 3, padding=1), C(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(x)))
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        x = self.relu(y + self.bnp(self.proj(x)))
        x = self.relu(self.conv4(self.relu(self.conv3(x))) + x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DenseStyle(nn.Module):
    """Two dense layers concatenating all earlier maps, a transition (1x1 + avg pool), one more."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = C(3, 4, 3, padding=1)
        self.d1 = C(4, 2, 3, padding=1)
        self.d2 = C(6, 2, 3, padding=1)
        self.trans = C(8, 4, 1)
        self.pool = nn.AvgPool2d(2)
        self.d3 = C(4, 2, 3, padding=1)
        self.d4 = C(6, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(x)
        x1 = self.d1(F.relu(x0))
        x2 = self.d2(F.relu(torch.cat([x0, x1], 1)))
        t = self.pool(self.trans(torch.cat([x0, x1, x2], dim=1)))
        y = self.d3(t)
        return self.d4(torch.cat((t, y), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2-style: expand 1x1, depthwise 3x3, project 1x1, identity add, then a SE gate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(C(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6())
        self.expand = nn.Sequential(C(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(C(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.project = nn.Sequential(C(8, 4, 1), nn.BatchNorm2d(4))
        self.fc1, self.fc2 = C(4, 2, 1), C(2, 4, 1)
        self.gate = nn.Sigmoid()  # a module, so the reference's geometry copy can make it neutral
        self.last = C(4, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        gate = self.gate(self.fc2(F.relu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return self.last(x * gate)


class Inception(nn.Module):
    """Branches from one input: 1x1, 3x3 dilated, a max-pool branch; concatenated and pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = C(3, 4, 3, padding=1)
        self.b1 = C(4, 2, 1)
        self.b2 = C(4, 2, 3, padding=2, dilation=2)
        self.b3 = C(4, 2, 1)
        self.pool3 = nn.MaxPool2d(3, 1, 1)
        self.after = C(6, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b2(x), self.b3(self.pool3(x))], 1)
        return self.after(self.pool(y))


class TwoPaths(nn.Module):
    """One convolution reaches the next directly and through a pooling: their arcs are united."""

    def __init__(self) -> None:
        super().__init__()
        self.a = C(1, 2, 3, padding=1)
        self.b = C(4, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        pooled = self.pool(y)
        return self.b(torch.cat([y, pooled], 1))


class ShuffleChunk(nn.Module):
    """Channel split, channel shuffle (view/transpose on channels) and adaptive pooling to 3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.a = C(1, 4, 3, padding=1)
        self.b = C(2, 4, 3, padding=1)
        self.c = C(8, 2, 1)
        self.d = C(2, 2, 2)
        self.pool = nn.AdaptiveMaxPool2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        left, right = y.chunk(2, dim=1)
        z = torch.cat([left, self.b(right)], 1)
        n, ch, h, w = z.shape
        z = z.view(n, 2, ch // 2, h, w).transpose(1, 2).contiguous().view(n, ch, h, w)
        z = torch.cat([z, right], 1)
        return self.d(self.pool(self.c(z)))


def chain(*mods: nn.Module) -> nn.Sequential:
    return nn.Sequential(*mods)


ISSUE_CHAINS = {
    "dilated": (chain(C(1, 1, 3, padding=1), C(1, 1, 3, padding=2, dilation=2)), 1_936),
    "pool-1-stride-2": (chain(C(1, 1, 3, padding=1), nn.MaxPool2d(1, 2), C(1, 1, 3, padding=1)), 484),
    "window-in-padding": (chain(C(1, 1, 3, padding=1), nn.MaxPool2d(3, 2), C(1, 1, 1, padding=1)), 441),
    "avgpool-2-stride-3": (chain(C(1, 1, 3, padding=1), nn.AvgPool2d(2, 3), C(1, 1, 3, padding=1)), None),
    "dilated-maxpool": (
        chain(C(1, 1, 3, padding=1), nn.MaxPool2d(2, 2, dilation=2), C(1, 1, 3, padding=1)),
        None,
    ),
    "same-even-kernel": (chain(C(1, 1, 3, padding=1), C(1, 1, 4, padding="same")), None),
    "same-even-dilated": (
        chain(C(1, 1, 3, padding=1), C(1, 1, (2, 4), padding="same", dilation=(3, 1))),
        None,
    ),
    "circular": (chain(C(1, 1, 3, padding=1), C(1, 1, 3, padding=2, padding_mode="circular")), None),
    "reflect": (chain(C(1, 1, 3, padding=1), C(1, 1, 5, padding=2, padding_mode="reflect")), None),
    "replicate": (chain(C(1, 1, 3, padding=1), C(1, 1, 3, padding=(1, 2), padding_mode="replicate")), None),
    "ceil-pool-padded": (
        chain(C(1, 1, 3, padding=1), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), C(1, 1, 3, stride=2)),
        None,
    ),
}


def mapped_arcs(
    model: nn.Module, shape: tuple[int, int, int]
) -> tuple[dict[tuple[int, int], set], list[str]]:
    traced = trace_model(model, shape)
    topo = assemble_topology(traced.layers, traced.feeds)
    off = topo.node_offsets
    got: dict[tuple[int, int], set] = {}
    for e in range(topo.num_edges):
        a, b = int(topo.edge_src[e]), int(topo.edge_dst[e])
        s = topo.arc_slice(e)
        pairs = set(
            zip((topo.arc_src[s] - off[a]).tolist(), (topo.arc_dst[s] - off[b]).tolist(), strict=True)
        )
        assert len(pairs) == s.stop - s.start, "an arc appears twice"
        got[(a, b)] = pairs
    return got, [c.name for c in traced.convs]


@pytest.mark.parametrize("name", list(ISSUE_CHAINS))
def test_issue_chains_equal_the_autograd_reference(name: str) -> None:
    model, expected = ISSUE_CHAINS[name]
    got, names = mapped_arcs(model, (1, 16, 16))
    oracle = autograd_arcs(model, (1, 16, 16), names)
    assert got == oracle
    if expected is not None:
        assert sum(len(v) for v in got.values()) == expected


@pytest.mark.parametrize(
    ("model", "shape", "pairs"),
    [
        (ResidualProjection(), (3, 8, 8), 6),
        (DenseStyle(), (3, 8, 8), 9),
        (InvertedResidual(), (3, 6, 6), 9),
        (Inception(), (3, 7, 7), 6),
        (TwoPaths(), (1, 7, 7), 1),
        (ShuffleChunk(), (1, 6, 6), 4),
    ],
    ids=["residual-projection", "dense-concat", "inverted-residual-se", "inception", "two-paths", "shuffle"],
)
def test_branching_models_equal_the_autograd_reference(
    model: nn.Module, shape: tuple[int, int, int], pairs: int
) -> None:
    got, names = mapped_arcs(model, shape)
    oracle = autograd_arcs(model, shape, names)
    assert set(got) == set(oracle)
    for pair, arcs in oracle.items():
        assert got[pair] == arcs, f"pair {pair}"
    assert len(got) == pairs


def test_residual_feeds_and_vias() -> None:
    traced = trace_model(ResidualProjection(), (3, 8, 8))
    names = [c.name for c in traced.convs]
    feeds = {(names[f.src], names[f.dst]): f.via for f in traced.feeds}
    assert feeds == {
        ("stem", "conv1"): "direct",
        ("stem", "proj"): "direct",
        ("conv1", "conv2"): "direct",
        ("conv2", "conv3"): "add",
        ("proj", "conv3"): "add",
        ("conv3", "conv4"): "direct",
    }


def test_se_gate_weight_node_is_the_centre_of_the_fed_grid() -> None:
    model = InvertedResidual()
    traced = trace_model(model, (3, 6, 6))
    names = [c.name for c in traced.convs]
    topo = assemble_topology(traced.layers, traced.feeds)
    edges = {
        (names[a], names[b]): e for e, (a, b) in enumerate(zip(topo.edge_src, topo.edge_dst, strict=True))
    }
    e = edges[("fc2", "last")]
    assert topo.edge_via[e] == "broadcast+mul"
    last = traced.layers[names.index("last")]
    centre = (
        topo.node_offsets[names.index("last")] + ((last.height - 1) // 2) * last.width + (last.width - 1) // 2
    )
    assert topo.pair_weight_node[topo.weight_offsets[e] : topo.weight_offsets[e + 1]].tolist() == [centre]
    s = topo.arc_slice(e)
    assert s.stop - s.start == last.nodes  # the gate's one node feeds every position of 'last'
    # the block feeding the global pooling reaches fc1's single node from every position
    e = edges[("project.0", "fc1")]
    assert topo.edge_via[e] == "add+pool"
    assert topo.arc_slice(e).stop - topo.arc_slice(e).start == 36


@pytest.mark.parametrize(
    ("model", "axis_ops"),
    [
        (chain(C(1, 1, 3, padding=1), C(1, 1, 3, padding=2, dilation=2)), [("taps", (3, 1, 2, 2, 16))]),
        (
            chain(C(1, 1, 3, padding=1), nn.MaxPool2d(1, 2), C(1, 1, 3, padding=1)),
            [("taps", (1, 2, 0, 1, 8)), ("taps", (3, 1, 1, 1, 8))],
        ),
        (chain(C(1, 1, 3, padding=1), C(1, 1, 4, padding="same")), [("taps", (4, 1, 1, 1, 16))]),
        (chain(C(1, 1, 3, padding=1), C(1, 1, 3, stride=3)), [("taps", (3, 3, 0, 1, 5))]),
        (
            chain(C(1, 1, 3, padding=1), nn.AdaptiveAvgPool2d(7), C(1, 1, 3, padding=1)),
            [("adaptive", (7,)), ("taps", (3, 1, 1, 1, 7))],
        ),
        (
            chain(C(1, 1, 3, padding=1), nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), C(1, 1, 2, stride=2)),
            [("taps", (3, 2, 1, 1, 9)), ("taps", (2, 2, 0, 1, 4))],
        ),
    ],
    ids=["dilated", "pool-1-2", "same-even", "valid-stride-3", "adaptive-16-to-7", "ceil-pool"],
)
def test_weight_nodes_equal_brute_force_nearest_centre(model: nn.Module, axis_ops: list) -> None:
    topo = topology_for_model(model, (1, 16, 16))
    pi = brute_pi(axis_centres(axis_ops, 16), 16)
    n = topo.layers[1].width
    expected = topo.node_offsets[1] + (np.array(pi)[:, None] * n + np.array(pi)[None, :]).ravel()
    np.testing.assert_array_equal(topo.pair_weight_node, expected)
    np.testing.assert_array_equal(topo.weight_node[:256], expected)


class Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = C(1, 2, 3, padding=1), C(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.interpolate(self.a(x), scale_factor=2) + 1)


class SpatialTranspose(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = C(1, 2, 3, padding=1), C(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).transpose(2, 3))


class SpatialCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = C(1, 2, 3, padding=1), C(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(torch.cat([y, y], dim=3))


@pytest.mark.parametrize(
    ("model", "op"),
    [(Upsampling(), "interpolate"), (SpatialTranspose(), "transpose"), (SpatialCat(), "cat")],
)
def test_unfollowable_operation_names_it_and_both_convolutions(model: nn.Module, op: str) -> None:
    with pytest.raises(ModelError) as info:
        trace_model(model, (1, 6, 6))
    message = str(info.value)
    assert op in message and "'a'" in message and "'b'" in message


def test_flatten_into_the_classifier_is_fine() -> None:
    model = chain(C(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    traced = trace_model(model, (1, 4, 4))
    assert traced.feeds == ()


def test_two_paths_take_pi_from_the_path_through_fewer_operations() -> None:
    traced = trace_model(TwoPaths(), (1, 7, 7))
    (feed,) = traced.feeds
    assert feed.via == "cat+pool" and len(feed.paths) == 2
    assert feed.weight_path.via == frozenset({"cat"})  # the direct branch, not the pooled one
    topo = assemble_topology(traced.layers, traced.feeds)
    # direct 3x3 'same' path: every node's window-centre target is the node itself
    np.testing.assert_array_equal(topo.pair_weight_node, 49 + np.arange(49))
