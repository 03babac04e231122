"""Topology without a forward pass (issue 31): shapes on meta tensors, models built without weights,
``cnngraph inspect MODEL --input-size N``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from cnngraph.mapping.topology import model_topology, topology_for_model, weights_on_meta
from cnngraph.mapping.trace import _window_shape, trace_model
from cnngraph.models import ModelSpec, build_model

runner = CliRunner()


def test_window_shapes_equal_what_torch_computes() -> None:
    """The convolution and pooling output shapes computed without running them are PyTorch's."""
    x = torch.zeros(2, 4, 9, 12)
    checked = 0
    modules: list[nn.Module] = []
    for k, s, p, d in itertools.product([1, 2, 3, 4], [1, 2, 3], [0, 1, 2], [1, 2]):
        modules.append(nn.Conv2d(4, 3, k, stride=s, padding=p, dilation=d))
        modules.append(
            nn.Conv2d(4, 3, (k, 1), stride=(1, s), padding=(p, 0), dilation=(d, 1), padding_mode="zeros")
        )
        for ceil in (False, True):
            modules.append(nn.MaxPool2d(k, s, min(p, k // 2), dilation=d, ceil_mode=ceil))
            modules.append(nn.AvgPool2d(k, s, min(p, k // 2), ceil_mode=ceil))
    for k, d in itertools.product([1, 2, 3, 4], [1, 2]):
        modules.append(nn.Conv2d(4, 3, k, padding="same", dilation=d))
        modules.append(nn.Conv2d(4, 3, k, padding="valid", dilation=d))
        modules.append(nn.Conv2d(4, 3, k, padding=1, padding_mode="reflect"))
    modules += [nn.AdaptiveAvgPool2d((5, None)), nn.AdaptiveMaxPool2d(4), nn.AdaptiveAvgPool2d(1)]
    for module in modules:
        shape = _window_shape(module, x.to("meta"))
        try:
            expected = tuple(module(x).shape)
        except RuntimeError:
            assert shape is None, module
            continue
        if shape is not None:
            assert shape == expected, module
            checked += 1
    assert checked > 400
    assert _window_shape(nn.Conv2d(3, 2, 3), x) is None  # wrong channels: left to PyTorch's message


def test_model_topology_equals_the_topology_of_the_built_model() -> None:
    spec = ModelSpec("resnet20", num_classes=10, in_channels=3, input_size=16)
    found = model_topology(spec)
    assert all(p.is_meta for c in found.traced.convs for p in c.module.parameters())
    real = topology_for_model(build_model(spec), (3, 16, 16))
    assert found.topology.edges() == real.edges()
    for name in ("arc_src", "arc_dst", "pair_weight_node", "node_offsets"):
        np.testing.assert_array_equal(getattr(found.topology, name), getattr(real, name))


def test_a_model_too_big_for_memory_maps_topologically() -> None:
    """96 GB of weights (float32) would not fit; on the meta device they take nothing."""
    with weights_on_meta():
        model = nn.Sequential(*(nn.Conv2d(16384, 16384, 3, padding=1) for _ in range(10)))
    assert sum(p.numel() for p in model.parameters()) * 4 > 90e9
    assert all(p.is_meta for p in model.parameters())
    topo = topology_for_model(model, (16384, 4, 4))
    assert topo.num_edges == 9 and topo.num_arcs == 9 * (3 * 4 - 2) ** 2


def test_shapes_come_without_running_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shape propagation never computes with the model's real weights (meta tensors only)."""
    seen: list[bool] = []
    forward = nn.Conv2d.forward

    def spy(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        seen.append(x.is_meta)
        return forward(self, x)

    monkeypatch.setattr(nn.Conv2d, "forward", spy)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3))
    traced = trace_model(model, (1, 8, 8))
    assert [c.out_shape for c in traced.convs] == [(2, 8, 8), (2, 6, 6)]
    assert all(seen)  # a convolution that ran at all ran on meta tensors
    assert not any(p.is_meta for p in model.parameters())  # the model's weights are untouched


def run(app: typer.Typer, *args: str) -> object:
    return runner.invoke(app, list(args))


def test_inspect_a_model_prints_its_topology(cli_app: typer.Typer) -> None:
    result = run(cli_app, "inspect", "vgg16", "--input-size", "32", "--in-channels", "1")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert (
        "vgg16 on 1x32x32 inputs: 13 convolutions, 2,812 nodes, 23,016 arcs per class, 12 layer pairs" in out
    )
    assert "no images, no weights" in out and "layer pairs (c_a feeds c_b)" in out
    result = run(cli_app, "inspect", "torchvision:shufflenet_v2_x0_5", "--input-size", "32", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    summary = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert summary["layers_count"] == 56 and summary["layer_pairs"] == 118
    assert summary["arcs_per_class"] == 2395 == sum(e["arcs"] for e in summary["edges"])
    assert summary["input_shape"] == [3, 32, 32]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["vgg16", "--input-size", "0"], "--input-size must be at least 1"),
        (["vgg16", "--input-size", "32", "--width", "0"], "--width must be positive"),
        (["torchvision:no_such_net", "--input-size", "32"], "no_such_net"),
        (["torchvision:resnet18", "--input-size", "32", "--in-channels", "1"], "expects 3 input channels"),
    ],
)
def test_inspect_a_model_refuses_bad_input_in_one_line(
    cli_app: typer.Typer, args: list[str], needle: str
) -> None:
    result = run(cli_app, "inspect", *args)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    err = result.stderr.strip()  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1 and needle in err, err
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
