"""ONNX models (exported from PyTorch, Keras, TensorFlow, ...) as torch modules the mapper follows.

``load_onnx(path)`` reads the file with ``onnx`` (a protobuf: no code is run), rewrites a few ONNX
idioms that a converter cannot take or that would hide the geometry, converts the graph with
onnx2torch into a ``torch.fx`` GraphModule and then *canonicalises* it: onnx2torch's own modules
become the plain PyTorch operations that ``cnngraph.mapping`` already follows. The canonical
module is checked against onnx2torch's conversion on a random input before it is returned.

On the ONNX graph:

- ``auto_pad`` ``SAME_UPPER``/``SAME_LOWER``/``VALID`` of Conv and pooling become explicit
  ``pads`` (onnx2torch converts only explicit ones);
- a zero-constant ``Pad`` whose only reader is a Conv (Keras' ``ZeroPadding2D``, TensorFlow's
  explicit 'same' padding) is folded into that Conv's ``pads``;
- a channels-last input read only by ``Transpose(perm=[0, 3, 1, 2])`` (tf2onnx's Keras exports)
  becomes a channels-first input, so the images are given as PyTorch takes them.

On the converted graph:

- Add/Sub/Mul/Div become ``operator.add`` ... and ``torch.div``; Concat ``torch.cat``; Split
  ``torch.split`` with static sizes; ReduceMean/ReduceMax over static axes ``torch.mean`` /
  ``torch.amax``; Clip ``nn.ReLU6``/``nn.ReLU``/``nn.Hardtanh``; GlobalAveragePool and
  GlobalMaxPool ``nn.AdaptiveAvgPool2d(1)``/``nn.AdaptiveMaxPool2d(1)``; Flatten ``nn.Flatten``;
  HardSigmoid ``nn.Hardsigmoid`` (or ``clamp(x * alpha + beta, 0, 1)``, Keras' alpha 0.2); PRelu
  with a constant slope ``nn.PReLU``; Neg ``operator.neg``; Identity ``nn.Identity``; Gelu (opset
  20) ``nn.GELU``;
- a Conv or MaxPool/AveragePool with asymmetric padding (onnx2torch: a pad module before it)
  becomes one ``nn.Conv2d``/pooling whose ``padding`` is the top/left padding, and a forward
  pre-hook adds the missing bottom/right zeros (``-inf`` for max pooling). The mapper reads the
  window starts from ``padding`` and the output size from the traced shapes, so the geometry is
  exact (docs/METHOD.md section 3: asymmetric padding followed exactly);
- any other onnx2torch module stays as it is, as an opaque ("leaf") operation: it runs, and
  when it sits between two convolutions the mapper refuses it with one line naming it.

The ONNX graph's input gives the input shape ``(C, H, W)``; its batch dimension may be symbolic.
Models with several inputs, a non-image input or dynamic image sizes are refused with one line.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from cnngraph.errors import ModelError, counted

ONNX_SUFFIX = ".onnx"
POOL_OPS = ("MaxPool", "AveragePool")


def is_onnx_source(source: str) -> bool:
    """Whether a model spec names an ONNX file."""
    return source.lower().endswith(ONNX_SUFFIX)


@dataclass(frozen=True)
class OnnxModel:
    """A converted ONNX model: the canonical module and what the file says about it."""

    module: fx.GraphModule
    input_shape: tuple[int, int, int]
    num_outputs: int | None
    sha256: str
    rewrites: tuple[str, ...]  # what was rewritten on the ONNX graph (for the record)

    def describe(self) -> dict[str, Any]:
        """What a model spec records about the file (``ModelSpec.extra``)."""
        import onnx2torch

        return {
            "format": "onnx",
            "input_shape": list(self.input_shape),
            "sha256": self.sha256,
            "converter": f"onnx2torch {getattr(onnx2torch, '__version__', '?')}",
            "rewrites": list(self.rewrites),
        }


_CACHE: dict[tuple[str, int, int], OnnxModel] = {}


def load_onnx(path: str | Path) -> OnnxModel:
    """Read, convert and canonicalise an ONNX file; a :class:`ModelError` naming what is wrong.

    The result of one file (by path, size and modification time) is cached; every call returns
    its own copy of the module.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model '{path}' does not exist")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE.clear()  # one model at a time is what the commands need
        _CACHE[key] = _load(path)
    cached = _CACHE[key]
    return OnnxModel(
        copy.deepcopy(cached.module), cached.input_shape, cached.num_outputs, cached.sha256, cached.rewrites
    )


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path) -> OnnxModel:
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as e:  # a protobuf that does not parse, an unreadable file
        raise ModelError(f"'{path}' is not an ONNX model ({type(e).__name__}: {_first_line(e)})") from e
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ModelError(f"ONNX model '{path}' is not valid: {_first_line(e)}") from e
    rewrites: list[str] = []
    proto, input_shape = _image_input(proto, path, rewrites)
    _constants_as_initializers(proto, rewrites)
    proto = _infer_shapes(proto, path)
    _explicit_pads(proto, path, rewrites)
    _fold_zero_pads(proto, rewrites)
    raw = _convert(proto, path)
    raw.eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            reference = raw(example)
    except Exception as e:
        raise ModelError(
            f"the converted ONNX model '{path}' fails on a {'x'.join(map(str, input_shape))} input "
            f"({type(e).__name__}: {_first_line(e)}); a graph exported for a batch of 1 only (a Reshape to "
            "[1, ...]) cannot be mapped: export it with a dynamic batch axis"
        ) from e
    try:
        module = canonicalise(raw, example)
        with torch.no_grad():
            got = module(example)
    except Exception as e:  # a bug of cnngraph's rewriting: still one line
        raise ModelError(
            f"ONNX model '{path}' cannot be rewritten into plain PyTorch "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from e
    if not _same_outputs(reference, got):
        raise ModelError(
            f"ONNX model '{path}': the canonical module differs from the conversion (a cnngraph bug)"
        )
    outputs = reference.shape[-1] if isinstance(reference, torch.Tensor) and reference.dim() == 2 else None
    return OnnxModel(module.eval(), input_shape, outputs, file_digest(path), tuple(rewrites))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _same_outputs(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return all(_same_outputs(x, y) for x, y in zip(a, b, strict=True))
    return False


# ------------------------------------------------------------------ the ONNX graph
def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _image_input(proto: Any, path: Path, rewrites: list[str]) -> tuple[Any, tuple[int, int, int]]:
    """The one image input ``(C, H, W)``; a channels-last input behind a Transpose made channels-first."""
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(
            f"ONNX model '{path}' has {counted(len(inputs), 'input')} ({names}); cnngraph maps models "
            "with one image input"
        )
    image = inputs[0]
    if image.type.tensor_type.elem_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
        raise ModelError(f"ONNX model '{path}': input '{image.name}' is not a floating-point tensor")
    dims = _dims(image)
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise ModelError(
            f"ONNX model '{path}': input '{image.name}' has shape {dims}; cnngraph needs [N, C, H, W] "
            "(or [N, H, W, C]) with fixed C, H and W; export the model with a fixed image size"
        )
    if isinstance(dims[0], int) and dims[0] not in (0, 1):
        raise ModelError(
            f"ONNX model '{path}': input '{image.name}' has a fixed batch of {dims[0]}; export it with a "
            "dynamic batch dimension (or batch 1)"
        )
    readers = [n for n in graph.node if image.name in n.input]
    perm = _attribute(readers[0], "perm") if len(readers) == 1 and readers[0].op_type == "Transpose" else None
    if perm is not None and list(perm) == [0, 3, 1, 2]:
        transpose = readers[0]
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == transpose.output[0]:
                    node.input[k] = image.name
        for out in graph.output:
            if out.name == transpose.output[0]:
                raise ModelError(f"ONNX model '{path}' returns its transposed input; nothing to map")
        graph.node.remove(transpose)
        _, h, w, c = dims
        shape = image.type.tensor_type.shape
        for d, value in zip(shape.dim[1:], (c, h, w), strict=True):
            d.dim_value = int(value)
        rewrites.append(f"channels-last input '{image.name}' read as channels-first (its Transpose removed)")
        return proto, (int(c), int(h), int(w))
    _, c, h, w = dims
    return proto, (int(c), int(h), int(w))


def _attribute(node: Any, name: str) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return None


def _set_attribute(node: Any, name: str, value: Any) -> None:
    import onnx

    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    if value is not None:
        node.attribute.append(onnx.helper.make_attribute(name, value))


def _infer_shapes(proto: Any, path: Path) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception as e:
        raise ModelError(f"ONNX model '{path}': its shapes cannot be inferred ({_first_line(e)})") from e


def _shapes(proto: Any) -> dict[str, list[int | str]]:
    graph = proto.graph
    return {v.name: _dims(v) for v in [*graph.input, *graph.value_info, *graph.output]}


def _explicit_pads(proto: Any, path: Path, rewrites: list[str]) -> None:
    """``auto_pad`` SAME_UPPER/SAME_LOWER/VALID of Conv and pooling as explicit ``pads``."""
    shapes = _shapes(proto)
    for node in proto.graph.node:
        if node.op_type not in ("Conv", *POOL_OPS):
            continue
        mode = _attribute(node, "auto_pad")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode in (None, "NOTSET"):
            continue
        dims = shapes.get(node.input[0], [])
        spatial = dims[2:]
        kernel = _attribute(node, "kernel_shape")
        if kernel is None and node.op_type == "Conv":
            weight = shapes.get(node.input[1]) or _initializer_shape(proto, node.input[1])
            kernel = weight[2:] if weight else None
        if not spatial or kernel is None or not all(isinstance(d, int) for d in spatial):
            raise ModelError(
                f"ONNX model '{path}': {node.op_type} '{node.name}' uses auto_pad {mode} on an input of "
                "unknown size; export it with explicit pads"
            )
        strides = _attribute(node, "strides") or [1] * len(spatial)
        dilations = _attribute(node, "dilations") or [1] * len(spatial)
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            if mode == "VALID":
                total = 0
            else:
                out = -(-int(size) // int(s))
                total = max((out - 1) * int(s) + (int(k) - 1) * int(d) + 1 - int(size), 0)
            small, large = total // 2, total - total // 2
            begin.append(large if mode == "SAME_LOWER" else small)
            end.append(small if mode == "SAME_LOWER" else large)
        _set_attribute(node, "auto_pad", None)
        _set_attribute(node, "pads", [*begin, *end])
        rewrites.append(f"{node.op_type} '{node.name}': auto_pad {mode} as pads {[*begin, *end]}")


def _initializer_shape(proto: Any, name: str) -> list[int] | None:
    for t in proto.graph.initializer:
        if t.name == name:
            return list(t.dims)
    return None


def _constant_values(proto: Any, name: str) -> list[float] | None:
    """The values of an initializer or a Constant node's output, else None."""
    import onnx

    for t in proto.graph.initializer:
        if t.name == name:
            return [float(v) for v in onnx.numpy_helper.to_array(t).reshape(-1)]
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = _attribute(node, "value")
            if value is not None:
                return [float(v) for v in onnx.numpy_helper.to_array(value).reshape(-1)]
    return None


def _fold_zero_pads(proto: Any, rewrites: list[str]) -> None:
    """A zero-constant Pad on the spatial axes whose one reader is a Conv: into the Conv's ``pads``."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        mode = _attribute(pad, "mode")
        mode = mode.decode() if isinstance(mode, bytes) else (mode or "constant")
        if mode != "constant" or pad.output[0] in outputs:
            continue
        if len(pad.input) > 1 and pad.input[1]:
            pads = _constant_values(proto, pad.input[1])
            value = _constant_values(proto, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else [0.0]
            if len(pad.input) > 3 and pad.input[3]:
                continue  # explicit axes: leave it (rare)
        else:
            pads = _attribute(pad, "pads")
            value = [float(_attribute(pad, "value") or 0.0)]
        if pads is None or value is None or any(v != 0.0 for v in value) or len(pads) != 8:
            continue
        pads = [int(p) for p in pads]
        if pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
            continue  # pads the batch or channel axis, or crops
        readers = [n for n in graph.node if pad.output[0] in n.input]
        if len(readers) != 1 or readers[0].op_type != "Conv" or readers[0].input[0] != pad.output[0]:
            continue
        conv = readers[0]
        auto = _attribute(conv, "auto_pad")
        if auto not in (None, "NOTSET", b"NOTSET"):
            continue
        own = [int(p) for p in (_attribute(conv, "pads") or [0, 0, 0, 0])]
        merged = [own[0] + pads[2], own[1] + pads[3], own[2] + pads[6], own[3] + pads[7]]
        _set_attribute(conv, "pads", merged)
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        rewrites.append(f"Pad '{pad.name}' folded into Conv '{conv.name}' (pads {merged})")


def _constants_as_initializers(proto: Any, rewrites: list[str]) -> None:
    """Constant nodes as initializers: the same values, whatever the opset's Constant version."""
    import onnx

    graph = proto.graph
    folded = 0
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        if len(node.attribute) != 1:
            continue
        attr = node.attribute[0]
        value = onnx.helper.get_attribute_value(attr)
        if attr.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
        elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            dtype = np.float32 if "float" in attr.name else np.int64
            tensor = onnx.numpy_helper.from_array(np.array(value, dtype=dtype))
        else:
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
        folded += 1
    if folded:
        rewrites.append(f"{counted(folded, 'Constant node')} as initializers")


def _convert(proto: Any, path: Path) -> fx.GraphModule:
    from onnx2torch import convert

    _register_newer_versions()
    try:
        return convert(proto)
    except NotImplementedError as e:
        text = _first_line(e)
        found = re.search(r"operation_type='([^']+)', version=(\d+)", text)
        what = f"operation {found.group(1)} (opset {found.group(2)})" if found else text
        raise ModelError(f"ONNX model '{path}': {what} cannot be converted to PyTorch ({text})") from e
    except Exception as e:
        raise ModelError(
            f"ONNX model '{path}' cannot be converted to PyTorch ({type(e).__name__}: {_first_line(e)})"
        ) from e


# ------------------------------------------------------------------ newer opsets
# onnx2torch 1.5.15 knows the operator versions up to about opset 17. Newer versions of these
# operators only widened their types (bfloat16, float8, int4: opsets 19-25), or added inputs and
# attributes that are checked here before the older converter is used; so the older converter is
# exact for the float models cnngraph maps. Registered once, through onnx2torch's own registry.
_TYPE_ONLY = {
    "Conv": (11, (22,)), "ConvTranspose": (11, (22,)), "MaxPool": (12, (22,)),
    "GlobalAveragePool": (1, (22,)), "Dropout": (13, (22,)), "HardSigmoid": (6, (22,)),
    "HardSwish": (14, (22,)), "Elu": (6, (22,)), "Selu": (6, (22,)), "InstanceNormalization": (6, (22,)),
    "Identity": (16, (19, 21, 23, 24, 25)), "Cast": (13, (19, 21, 23, 24, 25)),
    "Reshape": (14, (19, 21, 23, 24, 25)), "Flatten": (13, (21, 23, 24, 25)),
    "Transpose": (13, (21, 23, 24, 25)), "Squeeze": (21, (23, 24, 25)), "Unsqueeze": (13, (21, 23, 24, 25)),
    "Shape": (15, (19, 21, 23, 24, 25)), "Constant": (13, (19, 21, 23, 24, 25)),
}  # fmt: skip
_registered = False


def _register_newer_versions() -> None:
    global _registered
    if _registered:
        return
    from onnx2torch.node_converters.registry import add_converter, get_converter

    def register(op: str, version: int, converter: Callable[..., Any]) -> None:
        with contextlib.suppress(ValueError):  # a newer onnx2torch has its own: keep it
            add_converter(operation_type=op, version=version)(converter)

    for op, (known, newer) in _TYPE_ONLY.items():
        for version in newer:
            register(op, version, get_converter(op, known))
    register("AveragePool", 19, _guarded(get_converter("AveragePool", 11), no_attributes={"dilations": 1}))
    register("AveragePool", 22, _guarded(get_converter("AveragePool", 11), no_attributes={"dilations": 1}))
    register("Split", 18, _guarded(get_converter("Split", 13), inputs=2))
    for version in (18, 19, 21, 23, 24, 25):
        register(
            "Pad",
            version,
            _guarded(get_converter("Pad", 13), max_inputs=3, modes=("constant", "reflect", "edge")),
        )
    for version in (18, 19):
        register(
            "Resize",
            version,
            _guarded(get_converter("Resize", 13), no_attributes={"antialias": 0}, max_inputs=4),
        )
    register("ReduceMean", 18, _reduce_with_axes_input("ReduceMean"))
    register("ReduceMax", 18, _reduce_with_axes_input("ReduceMax"))
    register("ReduceMax", 20, _reduce_with_axes_input("ReduceMax"))
    for version in (1, 22):
        register("GlobalMaxPool", version, _global_max_pool)
    register("Gelu", 20, _gelu)
    _registered = True


def _guarded(
    converter: Callable[..., Any],
    no_attributes: dict[str, Any] | None = None,
    inputs: int | None = None,
    max_inputs: int | None = None,
    modes: tuple[str, ...] | None = None,
) -> Callable[..., Any]:
    """``converter`` for a node that uses none of the newer version's additions, else not implemented."""

    def convert(node: Any, graph: Any) -> Any:
        attrs = node.attributes
        for name, neutral in (no_attributes or {}).items():
            value = attrs.get(name)
            if (
                value is not None
                and value != neutral
                and not (isinstance(value, list | tuple) and set(value) == {neutral})
            ):
                raise NotImplementedError(f"{node.operation_type} with {name}={value} is not supported")
        given = [v for v in node.input_values if v]
        if inputs is not None and len(given) < inputs:
            raise NotImplementedError(f"{node.operation_type} without its sizes input is not supported")
        if max_inputs is not None and len(given) > max_inputs:
            raise NotImplementedError(f"{node.operation_type} with an axes input is not supported")
        mode = attrs.get("mode", "constant")
        if modes is not None and mode not in modes:
            raise NotImplementedError(f"{node.operation_type} mode {mode} is not supported")
        return converter(node, graph)

    return convert


def _reduce_with_axes_input(op: str) -> Callable[..., Any]:
    """ReduceMean-18 / ReduceMax-18+: the axes as a constant input instead of an attribute."""

    def convert(node: Any, graph: Any) -> Any:
        from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
        from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

        names = node.input_values
        axes = None
        if len(names) > 1 and names[1]:
            if names[1] not in graph.initializers:
                raise NotImplementedError(f"{op} with axes computed at run time is not supported")
            axes = [int(a) for a in graph.initializers[names[1]].to_torch().reshape(-1).tolist()]
        if node.attributes.get("noop_with_empty_axes", 0) and not axes:
            raise NotImplementedError(f"{op} with noop_with_empty_axes is not supported")
        module = OnnxReduceStaticAxes(
            operation_type=op, axes=axes, keepdims=node.attributes.get("keepdims", 1)
        )
        return OperationConverterResult(
            torch_module=module, onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values)
        )

    return convert


def _gelu(node: Any, graph: Any) -> Any:
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = node.attributes.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    return OperationConverterResult(
        torch_module=nn.GELU(approximate=approximate), onnx_mapping=onnx_mapping_from_node(node)
    )


def _global_max_pool(node: Any, graph: Any) -> Any:
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    return OperationConverterResult(
        torch_module=nn.AdaptiveMaxPool2d(1), onnx_mapping=onnx_mapping_from_node(node)
    )


# ------------------------------------------------------------------ the torch graph
class AsymmetricPadding:
    """The part of an asymmetric padding that ``padding`` (the top/left one, applied on both sides)
    cannot express: ``pre`` (a forward pre-hook) adds the missing bottom rows / right columns of
    ``value``; ``post`` (a forward hook) drops the output rows / columns that the symmetric padding
    added where the true bottom/right padding is smaller (a convolution only)."""

    def __init__(self, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> None:
        self.top, self.bottom, self.left, self.right, self.value = top, bottom, left, right, value

    def pre(self, module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        extra_rows, extra_cols = max(self.bottom - self.top, 0), max(self.right - self.left, 0)
        if not extra_rows and not extra_cols:
            return inputs
        x = F.pad(inputs[0], (0, extra_cols, 0, extra_rows), value=self.value)
        return (x, *inputs[1:])

    def post(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if self.bottom >= self.top and self.right >= self.left:
            return output
        assert isinstance(module, nn.Conv2d)
        size = [int(s) for s in output.shape[-2:]]
        for axis, (before, after) in enumerate(((self.top, self.bottom), (self.left, self.right))):
            if after < before:  # the true size, with the smaller padding at the end
                reach = module.dilation[axis] * (module.kernel_size[axis] - 1) + 1
                span = int(inputs[0].shape[2 + axis]) + before + after - reach
                size[axis] = span // module.stride[axis] + 1
        return output[..., : size[0], : size[1]]

    def __repr__(self) -> str:
        return (
            f"AsymmetricPadding(top={self.top}, bottom={self.bottom}, left={self.left}, right={self.right}, "
            f"value={self.value})"
        )


def _leaf(module: nn.Module) -> nn.Module:
    """``module`` as an opaque operation to ``torch.fx`` (traced as one call, never into its code).

    fx treats the modules of the ``torch.nn`` namespace as leaves; a subclass declared there makes
    an onnx2torch module one too, so the mapper names it when it cannot follow it.
    """
    for part in module.modules():
        cls = type(part)
        if cls.__module__.startswith("torch.nn"):
            continue
        leaf = _LEAF_CLASSES.get(cls)
        if leaf is None:
            leaf = type(cls.__name__, (cls,), {"__module__": "torch.nn.modules.onnx_leaf"})
            _LEAF_CLASSES[cls] = leaf
        part.__class__ = leaf
    return module


_LEAF_CLASSES: dict[type, type] = {}


def _shape_of(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def canonicalise(raw: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    """onnx2torch's modules as plain PyTorch operations (see the module docstring); a new module."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(raw).propagate(example)
    root = nn.Module()
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    used: set[str] = set()

    def name_for(target: str) -> str:
        base = re.sub(r"\W+", "_", target).strip("_") or "op"
        if base[0].isdigit():
            base = f"op_{base}"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    def add_module(target: str, module: nn.Module) -> str:
        name = name_for(target)
        root.add_module(name, module)
        return name

    def arg(a: Any) -> Any:
        return fx.map_arg(a, lambda n: env[n])

    for node in raw.graph.nodes:
        if node.op == "placeholder":
            env[node] = graph.placeholder("x")
        elif node.op == "output":
            graph.output(arg(node.args[0]))
        elif node.op == "get_attr":
            value = _fetch(raw, str(node.target))
            name = name_for(str(node.target))
            if isinstance(value, nn.Parameter):
                root.register_parameter(name, value)
            elif isinstance(value, torch.Tensor):
                root.register_buffer(name, value)
            else:
                setattr(root, name, value)
            env[node] = graph.get_attr(name)
        elif node.op == "call_module":
            module = raw.get_submodule(str(node.target))
            env[node] = _rewrite(node, module, graph, arg, add_module)
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.lint()
    return fx.GraphModule(root, graph, class_name="OnnxModel")


def _fetch(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}
_REDUCE: dict[str, Callable[..., Any]] = {
    "ReduceMean": torch.mean,
    "ReduceMax": torch.amax,
    "ReduceSum": torch.sum,
}


def _rewrite(
    node: fx.Node,
    module: Any,
    graph: fx.Graph,
    arg: Callable[[Any], Any],
    add_module: Callable[[str, nn.Module], str],
) -> fx.Node:
    """One call of an onnx2torch module, as plain PyTorch where there is a plain equivalent."""
    kind = type(module).__name__
    target = str(node.target)
    args = arg(node.args)
    shape_in = _shape_of(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None

    def call_module(new: nn.Module) -> fx.Node:
        return graph.call_module(add_module(target, new), tuple(args), dict(arg(node.kwargs)))

    if kind == "OnnxBinaryMathOperation" and not (
        getattr(module, "broadcast", None) == 1 and module.axis is not None
    ):
        fn = getattr(module, "math_op_function", None)
        name = getattr(fn, "__name__", "")
        if name in _BINARY:
            return graph.call_function(_BINARY[name], args)
        if name == "_onnx_div" and all(_is_float(a) for a in node.args if isinstance(a, fx.Node)):
            return graph.call_function(torch.div, args)
    if kind == "OnnxConcat":
        return graph.call_function(torch.cat, (tuple(args),), {"dim": int(module.axis)})
    if kind in ("OnnxSplit", "OnnxSplit13"):
        sections = _split_sections(node, int(module.axis))
        if sections is not None and len(args) >= 1:
            return graph.call_function(torch.split, (args[0], sections), {"dim": int(module.axis)})
    if kind in ("OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape") and _is_4d(shape_in):
        return call_module(nn.AdaptiveAvgPool2d(1))
    if kind == "OnnxGlobalMaxPool" and _is_4d(shape_in):
        return call_module(nn.AdaptiveMaxPool2d(1))
    if kind == "OnnxFlatten" and getattr(module, "axis", None) == 1:
        return call_module(nn.Flatten(1))
    if kind == "OnnxClip" and len(args) == 1:
        low, high = getattr(module, "min_val", None), getattr(module, "max_val", None)
        if low == 0 and high == 6:
            return call_module(nn.ReLU6())
        if low == 0 and high is None:
            return call_module(nn.ReLU())
        if low is not None and high is not None:
            return call_module(nn.Hardtanh(float(low), float(high)))
    if kind == "OnnxReduceStaticAxes" and module.axes and len(args) == 1:
        reduce: Callable[..., Any] | None = _REDUCE.get(module.operation_type)
        if reduce is not None:
            return graph.call_function(
                reduce, (args[0],), {"dim": list(module.axes), "keepdim": bool(module.keepdims)}
            )
    if kind == "OnnxHardSigmoid" and len(args) == 1:
        alpha, beta = float(module.alpha), float(module.beta)
        if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
            return call_module(nn.Hardsigmoid())
        scaled = graph.call_function(
            operator.add, (graph.call_function(operator.mul, (args[0], alpha)), beta)
        )
        return graph.call_function(torch.clamp, (scaled,), {"min": 0.0, "max": 1.0})
    if kind == "OnnxNeg" and len(args) == 1:
        return graph.call_function(operator.neg, (args[0],))
    if kind == "OnnxCopyIdentity" and len(args) == 1:
        return call_module(nn.Identity())
    if kind == "OnnxPReLU" and len(node.args) == 2:
        prelu = _prelu(node)
        if prelu is not None:
            return graph.call_module(add_module(target, prelu), (args[0],))
    if isinstance(module, nn.Sequential):
        folded = _fold_padding(module)
        if folded is not None:
            return call_module(folded)
    return call_module(_leaf(copy.deepcopy(module)))


def _prelu(node: fx.Node) -> nn.PReLU | None:
    """PReLU with a constant slope, one per channel or one for all: ``nn.PReLU``."""
    slope_node = node.args[1]
    if not isinstance(slope_node, fx.Node) or slope_node.op != "get_attr":
        return None
    slope = _fetch(slope_node.graph.owning_module, str(slope_node.target))  # type: ignore[arg-type]
    shape = _shape_of(node.args[0]) if isinstance(node.args[0], fx.Node) else None
    if not isinstance(slope, torch.Tensor) or shape is None or len(shape) != 4:
        return None
    if slope.numel() != 1 and not (slope.shape[0] == shape[1] and all(d == 1 for d in slope.shape[1:])):
        return None
    prelu = nn.PReLU(num_parameters=slope.numel())
    with torch.no_grad():
        prelu.weight.copy_(slope.reshape(-1))
    return prelu


def _is_float(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    dtype = getattr(meta, "dtype", None)
    return dtype is not None and dtype.is_floating_point


def _is_4d(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4


def _split_sections(node: fx.Node, axis: int) -> list[int] | None:
    """Static section sizes of a split along ``axis``, from the traced output shapes."""
    meta = node.meta.get("tensor_meta")
    if not isinstance(meta, list | tuple) or not meta or not all(hasattr(m, "shape") for m in meta):
        return None
    return [int(m.shape[axis]) for m in meta]


def _fold_padding(seq: nn.Sequential) -> nn.Module | None:
    """``Sequential(OnnxPadStatic, Conv2d | MaxPool2d | AvgPool2d)`` as one module with an end pad."""
    if len(seq) != 2 or type(seq[0]).__name__ != "OnnxPadStatic":
        return None
    pad: Any = seq[0]
    op: Any = seq[1]
    pads = [int(p) for p in pad.pads]  # torch order: left, right, top, bottom
    if len(pads) != 4 or min(pads) < 0 or pad.mode != "constant":
        return None
    left, right, top, bottom = pads
    own = _pair(getattr(op, "padding", 0))
    if own != (0, 0):
        return None
    new = copy.deepcopy(op)
    if isinstance(op, nn.Conv2d) and pad.constant_value == 0.0 and op.padding_mode == "zeros":
        new.padding = (top, left)
    elif (isinstance(op, nn.MaxPool2d) and pad.constant_value == float("-inf")) or (
        isinstance(op, nn.AvgPool2d) and pad.constant_value == 0.0 and op.count_include_pad
    ):
        kernel = _pair(op.kernel_size)
        if top > kernel[0] // 2 or left > kernel[1] // 2:
            return None
        new.padding = (top, left)
    else:
        return None
    if (bottom < top or right < left) and not isinstance(op, nn.Conv2d):
        return None
    if bottom != top or right != left:
        hooks = AsymmetricPadding(top, bottom, left, right, float(pad.constant_value))
        new.register_forward_pre_hook(hooks.pre)
        new.register_forward_hook(hooks.post)
    return new


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, str):
        return (0, 0) if v == "valid" else (-1, -1)
    a, b = v
    return int(a), int(b)
