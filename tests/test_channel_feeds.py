"""Channel-exact feeds and layout-only permutes (METHOD.md section 8, issue 31).

Every model here is checked against two brute-force references: the perturbation oracle (perturb
``c_a``'s output with every other convolution frozen; ``c_b``'s input changes iff the pair
exists) and the autograd oracle (the arcs of every pair, position by position).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from geometry_oracle import autograd_arcs, perturbation_pairs
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.mapping.topology import assemble_topology
from cnngraph.mapping.trace import trace_model

C = nn.Conv2d


class IssueSplit(nn.Module):
    """The issue's case: ``c2`` reads only the second chunk, which holds ``c1``'s channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2 = C(3, 4, 3, padding=1), C(3, 4, 3, padding=1), C(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.c0(x), self.c1(x)], 1)
        _, b = x.chunk(2, 1)
        return self.c2(b)


class SplitRoute(nn.Module):
    """Routes parts of one concatenation (``c0``: channels 0-3, ``c1``: 4-9) to different convs."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1 = C(3, 4, 3, padding=1), C(3, 6, 3, padding=1)
        self.c2, self.c3, self.c4 = C(3, 2, 3, padding=1), C(2, 2, 1), C(5, 2, 3, padding=1)
        self.c5, self.c6, self.c7, self.c8 = C(2, 2, 1), C(4, 2, 1), C(5, 2, 1), C(1, 2, 3, padding=1)
        self.c9, self.c10 = C(4, 2, 1), C(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.c0(x), F.relu(self.c1(x))], 1)
        p, q, r = torch.split(y, [3, 2, 5], dim=1)  # c0 | c0 + c1 | c1
        n, ch, h, w = y.shape
        u = torch.unbind(y.view(n, 2, ch // 2, h, w), 1)[1]  # channels 5..9: c1
        v = y.select(1, 2).unsqueeze(1)  # channel 2: c0
        parts = y.tensor_split([4, 8], dim=1)  # c0 | c1 | c1
        swapped = torch.cat(parts[1:], 1)  # c1 only
        out = [
            self.c2(p), self.c3(q), self.c4(r), self.c5(y[:, 4:6]), self.c6(y.narrow(1, 0, 4)),
            self.c7(u), self.c8(v), self.c9(swapped[:, :4]), self.c10(y[:, [0, 1, 2, -1]]),
        ]  # fmt: skip
        return sum(o.mean() for o in out)  # type: ignore[return-value]


class ShuffleRoute(nn.Module):
    """Channel shuffles (view/transpose/view, the module, the function) and split-and-route."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1 = C(3, 4, 3, padding=1), C(3, 4, 3, padding=1)
        self.shuffle = nn.ChannelShuffle(4)
        self.c2, self.c3, self.c4, self.c5, self.c6 = (C(2, 2, 1) for _ in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.c0(x), self.c1(x)], 1)  # c0: 0-3, c1: 4-7
        n, ch, h, w = y.size()
        z = y.view(n, 4, ch // 4, h, w).transpose(1, 2).contiguous().view(n, ch, h, w)
        # z: c0, c0, c1, c1, c0, c0, c1, c1
        m = self.shuffle(y)
        f = F.channel_shuffle(y, 2)  # c0, c1, c0, c1, ...
        half = ch // 2
        return (
            self.c2(z[:, :2]).mean() + self.c3(z[:, 2:4]).mean() + self.c4(m[:, half - 2 : half]).mean()
            + self.c5(f[:, 0:1].expand(n, 2, h, w)).mean()
            + self.c6(z.permute(0, 2, 3, 1)[..., 6:].movedim(3, 1)).mean()
        )  # fmt: skip


class Mixing(nn.Module):
    """Operations mixing channels spread a source's channels; per-channel ones do not."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1 = C(3, 4, 3, padding=1), C(3, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm2d(8)
        self.linear = nn.Linear(4, 3)
        self.c2, self.c3, self.c4, self.c5, self.c6 = (
            C(4, 2, 1),
            C(5, 2, 3, padding=1),
            C(2, 2, 1),
            C(3, 2, 1),
            C(2, 2, 1),
        )
        self.c8 = C(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.c0(x), self.c1(x)], 1)
        g = self.gn(y)  # groups 0-3 (c0), 4-7 (c1): no mixing across the two
        m = y[:, 4:].mean(1, keepdim=True)  # c1 only
        ln = F.layer_norm(y.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)  # both everywhere
        lin = self.linear(y[:, 4:].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # c1 only
        gate = torch.sigmoid(y.mean((2, 3), keepdim=True))  # a global gate, channel by channel
        gated = self.bn(y) * gate * torch.sigmoid(y[:, :4].mean(1, keepdim=True))  # c1 | c0 + c1
        return (
            self.c2(g[:, :4]).mean() + self.c3(torch.cat([m, y[:, :4]], 1)).mean() + self.c4(ln[:, :2]).mean()
            + self.c5(lin).mean() + self.c6(F.softmax(y[:, 6:], dim=1)).mean()
            + self.c8(gated[:, 6:]).mean()
        )  # fmt: skip


class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's channel norm: to channels-last, LayerNorm over channels, back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    """A ConvNeXt block: depthwise 7x7, channels-last LayerNorm and MLP, layer scale, residual."""

    def __init__(self, dim: int, channels_last_scale: bool) -> None:
        super().__init__()
        self.dw = C(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up, self.act, self.down = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        shape = (dim,) if channels_last_scale else (dim, 1, 1)
        self.gamma = nn.Parameter(torch.full(shape, 0.5))
        self.last = channels_last_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(self.act(self.up(self.norm(y))))
        y = (self.gamma * y).movedim(-1, 1) if self.last else self.gamma * y.permute(0, 3, 1, 2)
        return x + y


class ConvNeXtStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(C(3, 8, 2, stride=2), LayerNorm2d(8))
        self.stage1 = nn.Sequential(Block(8, False), Block(8, True))
        self.down = nn.Sequential(LayerNorm2d(8), C(8, 16, 2, stride=2))
        self.stage2 = Block(16, False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean((-2, -1)))


def mapped(model: nn.Module, shape: tuple[int, int, int]) -> tuple[dict[tuple[int, int], set], list[str]]:
    traced = trace_model(model, shape)
    topo = assemble_topology(traced.layers, traced.feeds)
    off = topo.node_offsets
    arcs: dict[tuple[int, int], set] = {}
    for e in range(topo.num_edges):
        a, b, s = int(topo.edge_src[e]), int(topo.edge_dst[e]), topo.arc_slice(e)
        arcs[(a, b)] = set(
            zip((topo.arc_src[s] - off[a]).tolist(), (topo.arc_dst[s] - off[b]).tolist(), strict=True)
        )
    return arcs, [c.name for c in traced.convs]


def check_against_oracles(model: nn.Module, shape: tuple[int, int, int]) -> dict[tuple[int, int], set]:
    torch.manual_seed(0)
    got, names = mapped(model, shape)
    moved = perturbation_pairs(model, shape, names)
    assert set(got) == {pair for pair, (_, read) in moved.items() if read}
    oracle = autograd_arcs(model, shape, names, random=True)
    assert set(got) == set(oracle)
    for pair, arcs in oracle.items():
        assert got[pair] == arcs, f"pair {pair} ({names[pair[0]]} -> {names[pair[1]]})"
    return got


def named_pairs(model: nn.Module, shape: tuple[int, int, int]) -> set[tuple[str, str]]:
    traced = trace_model(model, shape)
    names = [c.name for c in traced.convs]
    return {(names[f.src], names[f.dst]) for f in traced.feeds}


def test_a_conv_reading_one_chunk_is_fed_only_by_that_chunks_conv() -> None:
    assert named_pairs(IssueSplit(), (3, 6, 6)) == {("c1", "c2")}
    got = check_against_oracles(IssueSplit(), (3, 6, 6))
    assert len(got[(1, 2)]) == (3 * 6 - 2) ** 2  # 3x3 'same' on 6x6


def test_split_and_route_through_split_unbind_select_slices_and_tensor_split() -> None:
    expected = {
        ("c0", "c2"), ("c0", "c3"), ("c1", "c3"), ("c1", "c4"), ("c1", "c5"), ("c0", "c6"), ("c1", "c7"),
        ("c0", "c8"), ("c1", "c9"), ("c0", "c10"), ("c1", "c10"),
    }  # fmt: skip
    assert named_pairs(SplitRoute(), (3, 5, 5)) == expected
    check_against_oracles(SplitRoute(), (3, 5, 5))


def test_channel_shuffles_route_channels_exactly() -> None:
    expected = {("c0", "c2"), ("c1", "c3"), ("c1", "c4"), ("c0", "c5"), ("c1", "c6")}
    assert named_pairs(ShuffleRoute(), (3, 5, 5)) == expected
    check_against_oracles(ShuffleRoute(), (3, 5, 5))


def test_channel_mixing_operations_spread_channels() -> None:
    expected = {
        ("c0", "c2"), ("c0", "c3"), ("c1", "c3"), ("c0", "c4"), ("c1", "c4"), ("c1", "c5"), ("c1", "c6"),
        ("c0", "c8"), ("c1", "c8"),
    }  # fmt: skip
    assert named_pairs(Mixing(), (3, 5, 5)) == expected
    check_against_oracles(Mixing(), (3, 5, 5))


class MaxOverChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2, self.c3 = (
            C(3, 4, 3, padding=1),
            C(3, 4, 3, padding=1),
            C(1, 2, 1),
            C(1, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.c0(x), self.c1(x)], 1)
        return self.c2(y.max(1, keepdim=True)[0]) + self.c3(torch.max(y[:, 4:], dim=1, keepdim=True).values)


def test_max_over_channels_returns_values_that_mix_them() -> None:
    shape = (3, 5, 5)
    got, names = mapped(MaxOverChannels(), shape)
    assert {(names[a], names[b]) for a, b in got} == {("c0", "c2"), ("c1", "c2"), ("c1", "c3")}
    assert set(got) == set(perturbation_pairs(MaxOverChannels(), shape, names))


def test_convnext_style_permute_round_trips_are_followed() -> None:
    model = ConvNeXtStyle()
    expected = {
        ("stem.0", "stage1.0.dw"), ("stem.0", "stage1.1.dw"), ("stem.0", "down.1"),
        ("stage1.0.dw", "stage1.1.dw"), ("stage1.0.dw", "down.1"), ("stage1.1.dw", "down.1"),
        ("down.1", "stage2.dw"),
    }  # fmt: skip
    assert named_pairs(model, (3, 16, 16)) == expected
    check_against_oracles(model, (3, 16, 16))


class Rearranged(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.a, self.b = C(1, 2, 3, padding=1), C(2, 2, 3, padding=1)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        n, c, h, w = y.shape
        if self.how == "permute":  # rows and columns change places
            y = y.permute(0, 1, 3, 2)
        elif self.how == "reshape":  # channels-last, then the spatial axes merged
            y = y.permute(0, 2, 3, 1).reshape(n, h * w, c).reshape(n, h, w, c).permute(0, 3, 1, 2)
        elif self.how == "flatten":
            y = y.flatten(2).view(n, c, h, w)
        elif self.how == "movedim":  # the batch moves
            y = y.movedim(0, 1).movedim(1, 0)
        elif self.how == "view":  # a spatial axis split and merged back the other way
            y = y.reshape(n, c, h // 2, 2, w).reshape(n, c, h, w)
        return self.b(y)


@pytest.mark.parametrize(
    ("how", "op"),
    [("permute", "permute"), ("reshape", "reshape"), ("flatten", "flatten"), ("movedim", "movedim"),
     ("view", "reshape")],
)  # fmt: skip
def test_permutes_and_views_that_move_the_spatial_axes_are_refused(how: str, op: str) -> None:
    with pytest.raises(ModelError) as info:
        trace_model(Rearranged(how), (1, 6, 6))
    message = str(info.value)
    assert op in message and "'a'" in message and "'b'" in message


class SqueezeExcite(nn.Module):
    """The common hand-written SE gate: pool, ``view(n, c)``, two linear layers, ``view(n, c, 1, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2 = C(3, 4, 3, padding=1), C(4, 4, 3, padding=1), C(2, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 4), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c0(x)
        n, c, _, _ = y.size()
        gate = self.fc(self.pool(y).view(n, c)).view(n, c, 1, 1)
        z = self.c1(y * gate.expand_as(y))
        squeezed = torch.sigmoid(self.fc[0](z.mean((2, 3))))  # functional: mean without keepdim
        return self.c2(z[:, :2] * squeezed[:, :, None, None])


class GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's GRN over channels-last maps: an L2 norm over both spatial axes, mixed channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, 1, 1, dim), 0.5))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Style(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = C(3, 8, 2, stride=2)
        self.dw = C(8, 8, 3, padding=1, groups=8)
        self.norm, self.up, self.grn, self.down = (
            nn.LayerNorm(8),
            nn.Linear(8, 16),
            GlobalResponseNorm(16),
            nn.Linear(16, 8),
        )
        self.last = C(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.down(self.grn(F.gelu(self.up(self.norm(self.dw(x).permute(0, 2, 3, 1))))))
        return self.last(x + y.permute(0, 3, 1, 2))


def test_squeeze_excitation_through_linear_layers_is_followed() -> None:
    pairs = named_pairs(SqueezeExcite(), (3, 6, 6))
    assert pairs == {("c0", "c1"), ("c1", "c2")}
    traced = trace_model(SqueezeExcite(), (3, 6, 6))
    vias = {(f.src, f.dst): f.via for f in traced.feeds}
    assert vias == {(0, 1): "broadcast+mul+pool", (1, 2): "broadcast+mul+pool"}
    got = check_against_oracles(SqueezeExcite(), (3, 6, 6))
    assert len(got[(0, 1)]) == 36 * 36  # the gate reads every position, so every position feeds every one


def test_convnext_v2_global_response_norm_is_a_global_pooling() -> None:
    got = check_against_oracles(ConvNeXtV2Style(), (3, 12, 12))
    assert set(got) == {(0, 1), (0, 2), (1, 2)}
    assert len(got[(1, 2)]) == 36 * 36


class SizeDerived(nn.Module):
    """Slice bounds and split sizes computed from ``x.size()`` inside the traced graph."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2, self.c3 = (
            C(3, 2, 3, padding=1),
            C(3, 2, 3, padding=1),
            C(2, 2, 1),
            C(1, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.c0(x), self.c1(x)], 1)
        half = y.size(1) // 2
        first, _ = torch.split(y, y.shape[1] // 2, dim=1)
        return self.c2(y[:, half:]).mean() + self.c3(first.max(half - 1, keepdim=True)[0]).mean()


def test_sizes_computed_in_the_graph_are_followed() -> None:
    assert named_pairs(SizeDerived(), (3, 5, 5)) == {("c1", "c2"), ("c0", "c3")}
    check_against_oracles(SizeDerived(), (3, 5, 5))
