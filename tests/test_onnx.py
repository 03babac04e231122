"""ONNX models map, score, explain and prune like the PyTorch models they came from.

Two sources: a branching PyTorch model exported with ``torch.onnx.export`` (the TorchScript
exporter, which runs offline: the dynamo one needs onnxscript), and graphs built by hand with
``onnx.helper`` the way Keras/TensorFlow exports look (a channels-last input behind a Transpose,
a separate zero Pad, ``auto_pad`` SAME_UPPER/SAME_LOWER with stride 2, so asymmetric padding).
"""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from geometry_oracle import autograd_arcs
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from cnngraph.datasets import ImageDataset, load_dataset
from cnngraph.errors import ModelError
from cnngraph.mapping import reference
from cnngraph.mapping.api import map_model
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.models import ModelSpec, build_model, load_model, read_checkpoint
from cnngraph.onnx_models import load_onnx

runner = CliRunner()


# ------------------------------------------------------------------ models
class Branchy(nn.Module):
    """Batch norms, a residual block, a two-branch concatenation, an even 'same' kernel (asymmetric
    padding in ONNX), a stride-2 convolution, a squeeze-style gate, global pooling, a linear head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.a = nn.Conv2d(6, 6, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(6)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.left = nn.Conv2d(6, 4, 1)
        self.right = nn.Conv2d(6, 4, 3, padding=1)
        self.even = nn.Conv2d(8, 6, 2, padding="same")
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn_a(self.a(x)))
        x = torch.relu(self.bn_b(self.b(y)) + x)
        x = self.pool(x)
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], 1)
        x = torch.relu(self.even(x))
        x = torch.relu(self.down(x))
        x = x * torch.sigmoid(x.mean((2, 3), keepdim=True))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def branchy() -> nn.Module:
    torch.manual_seed(0)
    model = Branchy()
    for m in model.modules():  # batch norms that do something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def export(model: nn.Module, shape: tuple[int, int, int], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False,
            input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}},
        )  # fmt: skip
    return path


def digits(size: int = 16) -> ImageDataset:
    data = load_dataset("builtin:digits")
    if size != 16:
        images = F.interpolate(data.images, size=(size, size), mode="bilinear", align_corners=False)
        data = ImageDataset(images, data.labels, data.class_names, data.source)
    keep = torch.nonzero(data.labels < 3).flatten()
    data = data.subset(keep)
    return ImageDataset(data.images, data.labels, data.class_names[:3], data.source)


def assert_same_mapping(a: MultilayerNetwork, b: MultilayerNetwork) -> None:
    """Pairs, arcs, weight nodes exactly; node values to float tolerance; delta."""
    ta, tb = a.topology, b.topology
    assert [(e["src"], e["dst"], e["arcs"]) for e in ta.edges()] == [
        (e["src"], e["dst"], e["arcs"]) for e in tb.edges()
    ]
    assert [(lay.height, lay.width, lay.filters) for lay in a.layers] == [
        (lay.height, lay.width, lay.filters) for lay in b.layers
    ]
    for name in ("node_offsets", "arc_src", "arc_dst", "arc_offsets", "pair_weight_node"):
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name), err_msg=name)
    assert a.descriptors == b.descriptors
    for d in a.descriptors:
        scale = float(np.abs(a.values(d)).max()) or 1.0
        np.testing.assert_allclose(a.values(d), b.values(d), rtol=1e-4, atol=1e-5 * scale, err_msg=d)
    for d in ("mean", "max"):
        np.testing.assert_allclose(reference.node_scores(a, d), reference.node_scores(b, d), atol=1e-5)


# ------------------------------------------------------------------ exported from PyTorch
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = branchy()
    return model, export(model, (1, 16, 16), tmp_path_factory.mktemp("onnx") / "branchy.onnx")


def test_an_exported_model_maps_like_the_original(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    converted = load_onnx(path)
    assert converted.input_shape == (1, 16, 16) and converted.num_outputs == 3
    x = digits().images[:5]
    with torch.no_grad():
        torch.testing.assert_close(converted.module(x), model(x), rtol=1e-4, atol=1e-5)
    kinds = {type(m).__name__ for m in converted.module.modules()}
    assert not any(k.startswith("Onnx") for k in kinds), kinds  # every op canonical: plain PyTorch
    data = digits()
    ours = map_model(model, data, images_per_class=8, device="cpu")
    theirs = map_model(converted.module, data, images_per_class=8, device="cpu")
    assert len(ours.layers) == 7
    assert_same_mapping(ours, theirs)
    assert [e["via"] for e in ours.topology.edges()] == [e["via"] for e in theirs.topology.edges()]


def test_an_exported_model_explains_like_the_original(exported: tuple[nn.Module, Path]) -> None:
    from cnngraph.explain.api import explain

    model, path = exported
    images = digits().images[:3]
    ours = explain(model, images)
    theirs = explain(load_onnx(path).module, images)
    for a, b in zip(ours, theirs, strict=True):
        assert a.explained == b.explained and a.predicted == b.predicted
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-3)


def test_the_spec_records_the_file_and_rebuilds_it(exported: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = exported
    model, spec = load_model(ModelSpec(source=str(path)))
    assert spec.source == str(path.resolve()) and (spec.in_channels, spec.input_size, spec.num_classes) == (
        1,
        16,
        3,
    )
    assert spec.extra["format"] == "onnx" and spec.extra["input_shape"] == [1, 16, 16]
    again = build_model(ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))))
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    state, info = read_checkpoint(path)  # an .onnx file is a checkpoint too (prune --checkpoint X.onnx)
    assert info["spec"]["extra"]["sha256"] == spec.extra["sha256"] and set(state) == set(model.state_dict())
    changed = tmp_path / "other.onnx"
    changed.write_bytes(path.read_bytes())
    moved = ModelSpec.from_dict({**spec.to_dict(), "source": str(changed)})
    build_model(moved)  # the same bytes elsewhere: fine
    proto = onnx.load(str(changed))
    proto.producer_name = "something else"
    onnx.save(proto, str(changed))
    with pytest.raises(ModelError, match="changed since it was mapped"):
        build_model(moved)


# ------------------------------------------------------------------ built by hand
def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.4).astype(np.float32)


def handbuilt(path: Path) -> tuple[Path, nn.Module]:
    """An ONNX graph written with onnx.helper, and its PyTorch twin with the same weights.

    Conv 3x3 (pads 1), a separate zero Pad (opset 13, pads as an input) before a Conv with no
    pads, a residual Add, MaxPool, Conv 2x2 with pads [0, 0, 1, 1] (PyTorch's 'same' for an even
    kernel), a 1x1 branch, Concat, Conv with auto_pad SAME_UPPER, GlobalAveragePool, Flatten, Gemm.
    """
    rng = np.random.default_rng(3)
    w = {
        "w0": _w(rng, 4, 1, 3, 3), "b0": _w(rng, 4), "w1": _w(rng, 4, 4, 3, 3), "b1": _w(rng, 4),
        "w2": _w(rng, 6, 4, 2, 2), "b2": _w(rng, 6), "w3": _w(rng, 5, 4, 1, 1), "b3": _w(rng, 5),
        "w4": _w(rng, 8, 11, 3, 3), "b4": _w(rng, 8), "wf": _w(rng, 3, 8), "bf": _w(rng, 3),
    }  # fmt: skip
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"))
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        node("Relu", ["c0"], ["r0"]),
        node("Pad", ["r0", "pads"], ["p0"], name="zero_pad", mode="constant"),
        node("Conv", ["p0", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        node("Relu", ["c1"], ["r1"]),
        node("Add", ["r1", "r0"], ["s"]),
        node("MaxPool", ["s"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["m", "w2", "b2"], ["c2"], name="conv2_even", pads=[0, 0, 1, 1], kernel_shape=[2, 2]),
        node("Relu", ["c2"], ["r2"]),
        node("Conv", ["m", "w3", "b3"], ["c3"], name="conv3_1x1", kernel_shape=[1, 1]),
        node("Relu", ["c3"], ["r3"]),
        node("Concat", ["r2", "r3"], ["cat"], axis=1),
        node(
            "Conv", ["cat", "w4", "b4"], ["c4"], name="conv4_same", auto_pad="SAME_UPPER", kernel_shape=[3, 3]
        ),
        node("Relu", ["c4"], ["r4"]),
        node("GlobalAveragePool", ["r4"], ["g"]),
        node("Flatten", ["g"], ["f"], axis=1),
        node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "handbuilt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="hand")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c0, self.c1 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.c2, self.c3 = nn.Conv2d(4, 6, 2, padding="same"), nn.Conv2d(4, 5, 1)
            self.c4, self.fc = nn.Conv2d(11, 8, 3, padding=1), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            r0 = torch.relu(self.c0(x))
            m = F.max_pool2d(torch.relu(self.c1(r0)) + r0, 2)
            cat = torch.cat([torch.relu(self.c2(m)), torch.relu(self.c3(m))], 1)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.c4(cat)), 1), 1))

    twin = Twin().eval()
    with torch.no_grad():
        for k, conv in enumerate((twin.c0, twin.c1, twin.c2, twin.c3, twin.c4)):
            conv.weight.copy_(torch.from_numpy(w[f"w{k}"]))
            conv.bias.copy_(torch.from_numpy(w[f"b{k}"]))  # type: ignore[union-attr]
        twin.fc.weight.copy_(torch.from_numpy(w["wf"]))
        twin.fc.bias.copy_(torch.from_numpy(w["bf"]))
    return path, twin


def test_a_handbuilt_model_maps_like_its_pytorch_twin(tmp_path: Path) -> None:
    path, twin = handbuilt(tmp_path / "hand.onnx")
    converted = load_onnx(path)
    assert converted.input_shape == (1, 12, 12)
    assert any("Pad 'zero_pad' folded into Conv 'conv1'" in r for r in converted.rewrites)
    assert any("auto_pad SAME_UPPER as pads [1, 1, 1, 1]" in r for r in converted.rewrites)
    x = digits(12).images[:4]
    with torch.no_grad():
        torch.testing.assert_close(converted.module(x), twin(x), rtol=1e-4, atol=1e-5)
    data = digits(12)
    ours = map_model(twin, data, images_per_class=10, device="cpu")
    theirs = map_model(converted.module, data, images_per_class=10, device="cpu")
    assert len(ours.layers) == 5
    assert_same_mapping(ours, theirs)


def keras_like(path: Path) -> tuple[Path, nn.Module]:
    """Opset 20, as a recent exporter writes it: an unfused BatchNormalization, PRelu, Identity,
    Gelu-20, a squeeze gate (ReduceMean-18 with Constant-19 axes, HardSigmoid with Keras' alpha
    0.2, Mul), a stride-2 Conv; and its PyTorch twin."""
    rng = np.random.default_rng(6)
    w = {
        "w0": _w(rng, 4, 1, 3, 3), "w1": _w(rng, 4, 4, 3, 3), "w2": _w(rng, 3, 4, 3, 3),
        "scale": 1 + _w(rng, 4), "shift": _w(rng, 4), "mean": _w(rng, 4), "var": 1 + np.abs(_w(rng, 4)),
        "slope": np.abs(_w(rng, 4, 1, 1)),
    }  # fmt: skip
    node = helper.make_node
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    nodes = [
        node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["c0", "scale", "shift", "mean", "var"], ["n0"], epsilon=1e-3),
        node("PRelu", ["n0", "slope"], ["a"]),
        node("Identity", ["a"], ["a2"]),
        node("Conv", ["a2", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        node("Gelu", ["c1"], ["b"]),
        node("Constant", [], ["axes_out"], value=axes),
        node("ReduceMean", ["b", "axes_out"], ["m"], keepdims=1),
        node("HardSigmoid", ["m"], ["g"], alpha=0.2, beta=0.5),
        node("Mul", ["b", "g"], ["gated"]),
        node("Conv", ["gated", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        node("Relu", ["c2"], ["r2"]),
        node("GlobalAveragePool", ["r2"], ["p"]),
        node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "keras_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c0, self.bn, self.prelu = (
                nn.Conv2d(1, 4, 3, padding=1, bias=False),
                nn.BatchNorm2d(4, eps=1e-3),
                nn.PReLU(4),
            )
            self.c1, self.gelu = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.GELU()
            self.c2 = nn.Conv2d(4, 3, 3, stride=2, padding=1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = self.gelu(self.c1(self.prelu(self.bn(self.c0(x)))))
            gate = torch.clamp(b.mean((2, 3), keepdim=True) * 0.2 + 0.5, 0.0, 1.0)
            return torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.c2(b * gate)), 1), 1)

    twin = Twin().eval()
    with torch.no_grad():
        for k, conv in enumerate((twin.c0, twin.c1, twin.c2)):
            conv.weight.copy_(torch.from_numpy(w[f"w{k}"]))
        twin.bn.weight.copy_(torch.from_numpy(w["scale"]))
        twin.bn.bias.copy_(torch.from_numpy(w["shift"]))
        twin.bn.running_mean.copy_(torch.from_numpy(w["mean"]))
        twin.bn.running_var.copy_(torch.from_numpy(w["var"]))
        twin.prelu.weight.copy_(torch.from_numpy(w["slope"]).reshape(-1))
    return path, twin


def test_an_opset_20_model_with_gates_and_unfused_norms_maps_like_its_twin(tmp_path: Path) -> None:
    path, twin = keras_like(tmp_path / "gate.onnx")
    converted = load_onnx(path)
    kinds = {type(m).__name__ for m in converted.module.modules()}
    assert not any(k.startswith("Onnx") for k in kinds), kinds
    x = digits(10).images[:4]
    with torch.no_grad():
        torch.testing.assert_close(converted.module(x), twin(x), rtol=1e-4, atol=1e-5)
    data = digits(10)
    ours = map_model(twin, data, images_per_class=6, device="cpu")
    theirs = map_model(converted.module, data, images_per_class=6, device="cpu")
    assert_same_mapping(ours, theirs)


def tf_style(path: Path, lower: bool = False) -> Path:
    """What tf2onnx makes of a Keras model: an NHWC input behind a Transpose, stride-2 'same'
    convolutions (asymmetric pads, via auto_pad), a Reshape-free flatten after global pooling."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(_w(rng, *s), n)
        for n, s in (("k0", (4, 3, 3, 3)), ("k1", (6, 4, 3, 3)), ("k2", (5, 6, 2, 2)))
    ]
    pad = "SAME_LOWER" if lower else "SAME_UPPER"
    node = helper.make_node
    nodes = [
        node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        node("Conv", ["nchw", "k0"], ["c0"], name="conv0", strides=[2, 2], auto_pad=pad, kernel_shape=[3, 3]),
        node("Relu", ["c0"], ["r0"]),
        node("Conv", ["r0", "k1"], ["c1"], name="conv1", strides=[2, 2], auto_pad=pad, kernel_shape=[3, 3]),
        node("Relu", ["c1"], ["r1"]),
        node("Conv", ["r1", "k2"], ["c2"], name="conv2", auto_pad=pad, kernel_shape=[2, 2]),
        node("Relu", ["c2"], ["r2"]),
        node("GlobalAveragePool", ["r2"], ["g"]),
        node("Flatten", ["g"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "keras_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["unk__1", 16, 16, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["unk__1", 5])],
        inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("lower", [False, True])
def test_tf_style_asymmetric_padding_is_followed_exactly(tmp_path: Path, lower: bool) -> None:
    path = tf_style(tmp_path / "keras.onnx", lower)
    converted = load_onnx(path)
    assert converted.input_shape == (3, 16, 16)  # channels first: the Transpose is gone
    assert any("channels-last input 'input'" in r for r in converted.rewrites)
    module = converted.module
    # the computation equals explicit padding + convolution, done here by hand
    proto = onnx.load(str(path))
    k = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    x = torch.rand(2, 3, 16, 16)
    sides = (1, 0) if lower else (0, 1)  # (before, after) of a 3-wide stride-2 window on an even size
    y = F.relu(F.conv2d(F.pad(x, (*sides, *sides)), k["k0"], stride=2))
    y = F.relu(F.conv2d(F.pad(y, (*sides, *sides)), k["k1"], stride=2))
    y = F.relu(F.conv2d(F.pad(y, (*sides, *sides)), k["k2"]))
    with torch.no_grad():
        torch.testing.assert_close(module(x), y.mean((2, 3)))
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    assert [module.get_submodule(n).padding for n in convs] == [(sides[0],) * 2] * 3
    # the arcs are what autograd finds on the module itself
    net = map_model(module, ImageDataset(x, torch.tensor([0, 1]), ["a", "b"], "rand"), device="cpu")
    assert [(lay.height, lay.width) for lay in net.layers] == [(8, 8), (4, 4), (4, 4)]
    oracle = autograd_arcs(module, (3, 16, 16), convs)
    topo = net.topology
    for e, edge in enumerate(topo.edges()):
        arcs = topo.arc_slice(e)
        src = topo.arc_src[arcs] - topo.node_offsets[edge["src"]]
        dst = topo.arc_dst[arcs] - topo.node_offsets[edge["dst"]]
        assert set(zip(src.tolist(), dst.tolist(), strict=True)) == oracle[edge["src"], edge["dst"]]
    assert set(oracle) == {(e["src"], e["dst"]) for e in topo.edges()}


# ------------------------------------------------------------------ refusals
def _graph(path: Path, nodes: list[Any], inits: list[Any], out_shape: list[Any], opset: int = 13) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_an_operation_onnx2torch_lacks_is_one_line(tmp_path: Path, cli_app: Any) -> None:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), dtype=np.float32), "w")
    path = _graph(
        tmp_path / "lp.onnx",
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("LpNormalization", ["c"], ["y"], axis=1),
        ],
        [w], ["N", 2, 8, 8],
    )  # fmt: skip
    with pytest.raises(
        ModelError, match=r"operation LpNormalization \(opset 1\) cannot be converted to PyTorch"
    ):
        load_onnx(path)
    result = runner.invoke(cli_app, ["map", str(path), "builtin:digits", "--out", str(tmp_path / "m.npz")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "LpNormalization" in lines[0] and "Traceback" not in result.output


def test_an_operation_between_convolutions_that_cannot_be_followed_is_named(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), dtype=np.float32), "w")
    w2 = numpy_helper.from_array(np.ones((2, 2, 3, 3), dtype=np.float32), "w2")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    path = _graph(
        tmp_path / "resize.onnx",
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Resize", ["c", "", "scales"], ["u"], name="upsample", mode="nearest"),
         helper.make_node("Conv", ["u", "w2"], ["y"], pads=[1, 1, 1, 1])],
        [w, w2, scales], ["N", 2, 16, 16],
    )  # fmt: skip
    model = load_onnx(path).module
    data = ImageDataset(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), ["a", "b"], "rand")
    with pytest.raises(ModelError, match=r"\(OnnxResize\) between Conv2d"):
        map_model(model, data, device="cpu")


def test_bad_files_and_inputs_are_one_line_errors(
    tmp_path: Path, exported: tuple[nn.Module, Path], cli_app: Any
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match=r"is not an ONNX model|is not valid"):
        load_onnx(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
    _, path = exported  # takes 1x16x16 images
    out = tmp_path / "m.npz"
    result = runner.invoke(cli_app, ["map", str(path), str(_rgb_npz(tmp_path)), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "takes 1x16x16 inputs" in result.output and "the images are 3x16x16" in result.output
    assert not out.exists()


def _rgb_npz(tmp_path: Path) -> Path:
    path = tmp_path / "rgb.npz"
    np.savez(
        path,
        images=np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8),
        labels=[0, 1, 2] * 2,
    )
    return path


# ------------------------------------------------------------------ the whole pipeline
@pytest.mark.neo4j
def test_onnx_maps_loads_scores_and_prunes_through_the_cli(
    exported: tuple[nn.Module, Path],
    cli_app: Any,
    neo4j_env: dict[str, str],
    neo4j_driver: Any,
    tmp_path: Path,
) -> None:
    from cnngraph.loader.catalog import drop_model
    from cnngraph.pruner.surgery import load_pruned

    _, path = exported
    data = tmp_path / "digits3.npz"
    d = digits()
    np.savez(data, images=d.images.numpy(), labels=d.labels.numpy(), classes=np.array(d.class_names))
    name = f"onnx-{uuid.uuid4().hex[:8]}"
    mapping = tmp_path / f"{name}.npz"
    result = runner.invoke(
        cli_app, ["map", str(path), str(data), "--out", str(mapping), "--images-per-class", "8"]
    )
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # an ONNX file brings its weights
    net = MultilayerNetwork.load(mapping)
    assert net.model["spec"]["source"] == str(path.resolve())
    try:
        assert runner.invoke(cli_app, ["load", str(mapping)], env=neo4j_env).exit_code == 0
        result = runner.invoke(cli_app, ["score", "--model", name, "--json"], env=neo4j_env)
        assert result.exit_code == 0, result.output
        out = tmp_path / "pruned"
        result = runner.invoke(
            cli_app,
            [
                "prune",
                "--model",
                name,
                "--checkpoint",
                str(path),
                "--data",
                str(data),
                "--epochs",
                "0",
                "--latency-repeats",
                "1",
                "--gamma",
                "0.9",
                "--out",
                str(out),
                "--json",
            ],
            env=neo4j_env,
        )
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["spec"]["source"] == str(path.resolve())
        pruned = load_pruned(out / "pruned.pt")  # a PyTorch model, rebuilt from the ONNX file + recipe
        with torch.no_grad():
            assert pruned(d.images[:2]).shape == (2, 3)
    finally:
        drop_model(neo4j_driver, name)
