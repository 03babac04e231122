"""Tracing: convolutions in execution order, their blocks, the geometry between them, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.mapping.trace import trace_model
from cnngraph.models import ModelSpec, build_model


class ReversedRegistration(nn.Module):
    """Registers ``second`` before ``first`` but runs ``first`` first."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Conv2d(4, 8, 3, padding=1)
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.first(x)), inplace=True)
        x = F.max_pool2d(x, 2)
        x = torch.relu(x)
        x = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
        return self.second(x).relu().flatten(1)


class SharedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.b(self.drop(self.act(self.a(x)))))


def test_vgg_convs_blocks_and_pools() -> None:
    model = build_model(ModelSpec("vgg11", in_channels=3, input_size=32, width=0.125))
    traced = trace_model(model, (3, 32, 32))
    assert [c.name for c in traced.convs] == [f"features.{i}" for i in (0, 4, 8, 11, 15, 18, 22, 25)]
    first = traced.convs[0]
    assert first.block_modules == ("features.0", "features.1", "features.2")
    assert first.response_module == "features.2"
    assert first.out_shape == (8, 32, 32)
    second = traced.convs[1]
    assert second.in_shape == (8, 16, 16)
    assert [c.out_shape[1] for c in traced.convs] == [32, 16, 8, 8, 4, 4, 2, 2]
    assert [(f.src, f.dst) for f in traced.feeds] == [(k, k + 1) for k in range(7)]
    assert [f.via for f in traced.feeds] == ["pool", "pool", "direct", "pool", "direct", "pool", "direct"]


def test_execution_order_not_registration_order_and_functional_ops() -> None:
    traced = trace_model(ReversedRegistration(), (1, 8, 8))
    assert [c.name for c in traced.convs] == ["first", "second"]
    first = traced.convs[0]
    assert first.block_modules == ("first", "bn")
    assert first.response_module == "bn"
    assert len(first.post_ops) == 1  # the functional relu is replayed on bn's output
    (feed,) = traced.feeds
    assert (feed.src, feed.dst, feed.via) == (0, 1, "pool")
    # max 2x2 then avg 3 stride 2 pad 1 (ceil): pooled row 0 covers rows -2..3 of the 8x8 map
    assert feed.paths[0].rows.lo[0] == -2 - 1 * 4 and feed.paths[0].rows.hi[0] == 3 + 1 * 4
    assert traced.convs[1].in_shape == (4, 3, 3)  # ceil mode: (4 + 2 - 3) / 2 rounded up, + 1
    assert traced.convs[1].response_module == "second"
    assert len(traced.convs[1].post_ops) == 1  # .relu() method
    layer = traced.layers[1]
    assert (layer.kernel, layer.stride, layer.padding, layer.in_channels) == ((3, 3), (1, 1), (1, 1), 4)


def test_shared_activation_module_is_replayed_not_hooked() -> None:
    traced = trace_model(SharedRelu(), (1, 6, 6))
    a, b = traced.convs
    assert a.block_modules == ("a", "act")
    assert a.response_module == "a" and len(a.post_ops) == 1
    assert b.response_module == "b" and len(b.post_ops) == 1
    assert [(f.src, f.dst, f.via) for f in traced.feeds] == [(0, 1, "direct")]
    assert b.out_shape == (2, 3, 3)
    x = torch.tensor([[-1.0, 2.0]])
    assert a.post_ops[0](x).tolist() == [[0.0, 2.0]]
    assert x.tolist() == [[-1.0, 2.0]]  # replay is never in place


def test_same_and_valid_padding_strings() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Conv2d(2, 2, 5, padding="valid"))
    traced = trace_model(model, (1, 7, 7))
    assert traced.layers[0].padding == (1, 1)
    assert traced.layers[1].padding == (0, 0)
    assert traced.convs[1].out_shape == (2, 3, 3)


def test_no_conv_is_an_error() -> None:
    with pytest.raises(ModelError, match="no Conv2d"):
        trace_model(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), (1, 4, 4))


@pytest.mark.parametrize(
    ("between", "names"),
    [
        (nn.Upsample(scale_factor=2), ["'1'", "Upsample"]),
        (nn.ZeroPad2d(1), ["'1'", "ZeroPad2d", "'0'", "'2'"]),
    ],
)
def test_unfollowable_module_between_convs_is_named(between: nn.Module, names: list[str]) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), between, nn.Conv2d(2, 2, 3, padding=1))
    with pytest.raises(ModelError) as info:
        trace_model(model, (1, 4, 4))
    for name in names:
        assert name in str(info.value)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y + x)


def test_addition_is_followed() -> None:
    traced = trace_model(Residual(), (2, 4, 4))
    assert [(f.src, f.dst, f.via) for f in traced.feeds] == [(0, 1, "add")]


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.c = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y) * 0 + self.c(y)


def test_branching_is_followed() -> None:
    traced = trace_model(Branching(), (1, 4, 4))
    assert [(f.src, f.dst, f.via) for f in traced.feeds] == [(0, 1, "direct"), (0, 2, "direct")]


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.a(x)
        return x


def test_fx_failure_gives_the_reason() -> None:
    with pytest.raises(ModelError, match=r"torch\.fx cannot trace DataDependent"):
        trace_model(DataDependent(), (1, 4, 4))


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(self.a(x))


def test_conv_called_twice_is_an_error() -> None:
    with pytest.raises(ModelError, match="called 2 times"):
        trace_model(Reused(), (2, 4, 4))


def test_wrong_input_shape_is_an_error() -> None:
    with pytest.raises(ModelError, match="expects 3 input channels, the images have 1"):
        trace_model(nn.Sequential(nn.Conv2d(3, 2, 3)), (1, 8, 8))


def test_tracing_restores_training_mode() -> None:
    model = build_model(ModelSpec("small_cnn", in_channels=1, input_size=8))
    model.train()
    trace_model(model, (1, 8, 8))
    assert model.training
