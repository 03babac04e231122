"""Find the convolutions of a model and how they feed each other (docs/METHOD.md sections 1, 3 and 8).

The model is traced once with ``torch.fx`` (``symbolic_trace``); its ``Conv2d`` calls, in graph
(= execution) order, are the layers ``c_1 .. c_M``. Shapes come from running the traced graph on
meta tensors (shapes only, nothing computed, the model's weights never touched; a real forward
pass of a zero input only where the meta run fails). :func:`cnngraph.mapping.feeds.find_feeds`
then finds every pair ``c_a`` feeds ``c_b`` with the geometry of its paths; each convolution's
block (the norms and activations that directly and only consume it) gives its response.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from cnngraph.errors import ModelError
from cnngraph.mapping import geometry as geo
from cnngraph.mapping.feeds import (
    ACTIVATION_MODULES,
    ACTIVATION_NAMES,
    NORM_MODULES,
    Feed,
    conv_padding,
    find_feeds,
)
from cnngraph.mapping.feeds import op_name as _op_name
from cnngraph.mapping.network import LayerInfo

__all__ = ["ConvBlock", "Feed", "TracedModel", "conv_padding", "trace_model"]


@dataclass(frozen=True)
class ConvBlock:
    """One convolutional layer ``c_k`` and the block whose output is its response."""

    name: str
    index: int
    module: nn.Conv2d
    block_modules: tuple[str, ...]
    response_module: str
    out_shape: tuple[int, int, int]
    in_shape: tuple[int, int, int]
    post_ops: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = ()

    def layer_info(self) -> LayerInfo:
        m = self.module
        return LayerInfo(
            index=self.index,
            name=self.name,
            filters=self.out_shape[0],
            height=self.out_shape[1],
            width=self.out_shape[2],
            kernel=_pair(m.kernel_size),
            stride=_pair(m.stride),
            padding=conv_padding(m),
            dilation=_pair(m.dilation),
            in_channels=m.in_channels,
            groups=int(m.groups),
            padding_mode=str(m.padding_mode),
        )


@dataclass(frozen=True)
class TracedModel:
    """The traced graph, the convolutions in execution order and the feeds relation between them."""

    graph_module: fx.GraphModule
    input_shape: tuple[int, int, int]
    convs: tuple[ConvBlock, ...]
    feeds: tuple[Feed, ...]

    @property
    def layers(self) -> list[LayerInfo]:
        return [c.layer_info() for c in self.convs]

    def response_modules(self, response: str) -> list[str]:
        return [c.response_module if response == "activation" else c.name for c in self.convs]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def trace_model(model: nn.Module, input_shape: tuple[int, int, int]) -> TracedModel:
    """Trace ``model`` for inputs of shape ``(C, H, W)``; see the module docstring."""
    gm = _symbolic_trace(model)
    _propagate_shapes(gm, model, input_shape)
    modules = dict(gm.named_modules())
    conv_nodes = [
        n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)
    ]
    if not conv_nodes:
        raise ModelError(
            f"{type(model).__name__} has no Conv2d layer; cnngraph maps convolutional layers only"
        )
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for n in conv_nodes:
        if calls[n.target] > 1:
            raise ModelError(
                f"Conv2d '{n.target}' is called {calls[n.target]} times; each convolution must run once"
            )
    convs = []
    for k, node in enumerate(conv_nodes):
        members, response, post = _block(node, modules, calls)
        convs.append(
            ConvBlock(
                name=str(node.target),
                index=k,
                module=modules[node.target],  # type: ignore[arg-type]
                block_modules=members,
                response_module=response,
                out_shape=_shape(node),
                in_shape=_shape(node.args[0]),  # type: ignore[arg-type]
                post_ops=post,
            )
        )
    conv_modules = {c.name: c.module for c in convs}
    feeds = find_feeds(gm, conv_nodes, conv_modules)
    return TracedModel(graph_module=gm, input_shape=tuple(input_shape), convs=tuple(convs), feeds=feeds)  # type: ignore[arg-type]


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """Trace in eval mode: branches that run only in training (auxiliary heads) are not mapped."""
    was_training = model.training
    model.eval()
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # any failure inside user code is the user's to fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {reason}; "
            "make its forward free of data-dependent control flow"
        ) from e
    finally:
        model.train(was_training)


BATCH = 2
"""Shapes are propagated for a batch of 2: a batch of 1 cannot be told from a squeezable dim."""


class ShapeMeta(NamedTuple):
    """What shape propagation records of a tensor (``node.meta['tensor_meta']``)."""

    shape: torch.Size
    dtype: torch.dtype


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph node by node, recording each tensor's shape; remembers the node running.

    On meta tensors the norms, activations and dropouts are not run: their output has their
    input's shape (PyTorch's meta layer norm, batch norm and GELU are slow Python decompositions);
    the shapes a norm needs are checked.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.running: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.running = n
        result = super().run_node(n)
        n.meta["tensor_meta"] = _shape_meta(result)
        if n.meta["tensor_meta"] is None and _constant(result):
            n.meta["value"] = tuple(result) if isinstance(result, torch.Size) else result
        return result

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        module = self.fetch_attr(target)
        x = args[0] if len(args) == 1 and not kwargs else None
        hooked = bool(module._forward_pre_hooks or module._forward_hooks)  # hooks may change shapes: run it
        if isinstance(x, torch.Tensor) and x.is_meta and not hooked:
            if _keeps_shape(module, x):
                return x.new_empty(x.shape)
            if isinstance(module, nn.Linear) and x.dim() >= 1 and x.shape[-1] == module.in_features:
                return x.new_empty((*x.shape[:-1], module.out_features))  # meta addmm imports torch._dynamo
            shape = _window_shape(module, x)  # meta convolution and pooling import sympy (seconds)
            if shape is not None:
                return x.new_empty(shape)
        return super().call_module(target, args, kwargs)

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.is_meta:
            name = str(getattr(target, "__name__", "")).rstrip("_")
            module = str(getattr(target, "__module__", "") or "")
            if module.startswith("torch") and (
                name in ACTIVATION_NAMES
                or name in ("dropout", "dropout2d")
                or (name == "layer_norm" and _layer_norm_fits(x, args[1] if len(args) > 1 else None))
            ):
                return x.new_empty(x.shape)
        return super().call_function(target, args, kwargs)


def _keeps_shape(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` returns its input's shape without needing to be run (checked norms)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return x.dim() > 1 and x.shape[1] == module.num_features
    if isinstance(module, nn.LayerNorm):
        return _layer_norm_fits(x, module.normalized_shape)
    if isinstance(module, nn.GroupNorm):
        return (
            x.dim() > 1 and x.shape[1] == module.num_channels and module.num_channels % module.num_groups == 0
        )
    return isinstance(module, (*ACTIVATION_MODULES, nn.Dropout, nn.Dropout2d, nn.Identity))


def _window_shape(module: nn.Module, x: torch.Tensor) -> tuple[int, ...] | None:
    """The output shape of a convolution or pooling module on ``x`` [N, C, H, W], or None to run it."""
    from cnngraph.mapping.feeds import conv_padding

    if x.dim() != 4:
        return None
    n, c, h, w = (int(v) for v in x.shape)
    if isinstance(module, nn.Conv2d):
        if c != module.in_channels or (module.padding == "same" and module.stride not in (1, (1, 1))):
            return None
        k, s, d = (_pair(v) for v in (module.kernel_size, module.stride, module.dilation))
        p = conv_padding(module)
        after = [
            size
            if module.padding == "same"
            else geo.conv_out_size(geo.AxisConv(k[a], s[a], p[a], d[a]), size)
            for a, size in enumerate((h, w))
        ]
        return (n, module.out_channels, *after) if min(after) >= 1 else None
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d) and not getattr(module, "return_indices", False):
        k, s, p = (
            _pair(v) for v in (module.kernel_size, module.stride or module.kernel_size, module.padding)
        )
        d = _pair(getattr(module, "dilation", 1))
        if any(2 * p[a] > k[a] for a in (0, 1)):
            return None  # PyTorch refuses it: let it say so
        try:
            pools = [geo.AxisPool(k[a], s[a], p[a], d[a], module.ceil_mode) for a in (0, 1)]
            return (n, c, pools[0].out_size(h), pools[1].out_size(w))
        except ModelError:
            return None
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and not getattr(
        module, "return_indices", False
    ):
        out: Any = module.output_size
        rows, cols = (out, out) if isinstance(out, int) else tuple(out)
        return (n, c, h if rows is None else int(rows), w if cols is None else int(cols))
    return None


def _layer_norm_fits(x: torch.Tensor, normalized: Any) -> bool:
    shape = [normalized] if isinstance(normalized, int) else list(normalized or [])
    return bool(shape) and x.dim() >= len(shape) and list(x.shape[-len(shape) :]) == shape


class _Propagate(nn.Module):
    """Holds the graph module so that ``torch.func.functional_call`` can swap its tensors."""

    def __init__(self, recorder: _ShapeRecorder) -> None:
        super().__init__()
        self.gm = recorder.module
        self.recorder = recorder

    def forward(self, x: torch.Tensor) -> Any:
        return self.recorder.run(x)


def _shape_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ShapeMeta(value.shape, value.dtype)
    if isinstance(value, tuple | list) and any(isinstance(v, torch.Tensor) for v in value):
        return tuple(_shape_meta(v) for v in value)
    return None


def _constant(value: Any) -> bool:
    """A size or an index worth keeping for the feeds (``x.size(1) // 2`` in a slice)."""
    if isinstance(value, tuple | list):
        return all(isinstance(v, int | float | bool) for v in value)
    return isinstance(value, int | float | bool)


def _propagate_shapes(gm: fx.GraphModule, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Record every node's output shape, without computing anything when possible.

    The graph runs on meta tensors (shapes only): the model's parameters and buffers are swapped
    for meta copies during the run (``torch.func.functional_call``), so a model built on the meta
    device maps too. Should the meta run fail (an operation without a meta kernel, a plain tensor
    attribute), one real forward pass of a zero input gives the shapes, or the error. A failure is
    reported by its cause only: the channels the first convolution expects, or the module that
    failed and why.
    """
    was_training = model.training
    model.eval()
    gm.eval()
    recorder = _ShapeRecorder(gm)
    tensors = {**dict(gm.named_parameters()), **dict(gm.named_buffers())}  # tied ones once
    on_meta = any(t.is_meta for t in tensors.values())
    try:
        meta = {
            f"gm.{k}": t if t.is_meta else torch.empty(t.shape, dtype=t.dtype, device="meta")
            for k, t in tensors.items()
        }
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.func.functional_call(
                    _Propagate(recorder), meta, (torch.zeros(BATCH, *input_shape, device="meta"),)
                )
            return
        except Exception as e:
            if on_meta:
                raise _fit_error(gm, model, input_shape, recorder.running, e) from None
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        recorder = _ShapeRecorder(gm)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                recorder.run(torch.zeros(BATCH, *input_shape, device=device))
        except Exception as e:
            raise _fit_error(gm, model, input_shape, recorder.running, e) from None
    finally:
        model.train(was_training)


def _fit_error(
    gm: fx.GraphModule,
    model: nn.Module,
    input_shape: tuple[int, int, int],
    node: fx.Node | None,
    e: Exception,
) -> ModelError:
    """The one-line error of a failed shape propagation at ``node``."""
    modules = dict(gm.named_modules())
    convs = [
        n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[str(n.target)], nn.Conv2d)
    ]
    if convs and node is convs[0]:
        expected = modules[str(node.target)].in_channels  # type: ignore[union-attr]
        if expected != input_shape[0]:
            return ModelError(f"model expects {expected} input channels, the images have {input_shape[0]}")
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if node is None:
        where = type(model).__name__
    elif node.op == "call_module":
        where = f"'{node.target}' ({type(modules[str(node.target)]).__name__})"
    else:
        where = f"'{node.name}'"
    c, h, w = input_shape
    return ModelError(
        f"a forward pass of {type(model).__name__} on {c}x{h}x{w} images fails at {where}: {reason}; "
        "the images do not fit the model (check their size and channels)"
    )


def _shape(node: fx.Node) -> tuple[int, int, int]:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    if shape is None or len(shape) != 4:
        raise ModelError(f"'{node.name}' does not produce a 4-d feature map")
    return int(shape[1]), int(shape[2]), int(shape[3])


def _tensor_input(node: fx.Node) -> fx.Node | None:
    arg = node.args[0] if node.args else node.kwargs.get("input")
    return arg if isinstance(arg, fx.Node) else None


def _block(
    conv: fx.Node, modules: dict[str, nn.Module], calls: Counter[Any]
) -> tuple[tuple[str, ...], str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]]:
    """The conv's block: the norms and activations that directly consume it, one after another.

    Returns the block's module names, the module whose output is the block's response, and the
    operations to replay on that output (functional activations, shared activation modules) to
    obtain the response when the block does not end in a module of its own.
    """
    chain: list[fx.Node] = []
    node = conv
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not _is_block_member(user, modules) or _tensor_input(user) is not node:
            break
        chain.append(user)
        node = user
    names = [str(conv.target)] + [str(n.target) for n in chain if n.op == "call_module"]
    response, tail = str(conv.target), list(chain)
    for pos, n in enumerate(chain):
        if n.op == "call_module" and calls[n.target] == 1:
            response, tail = str(n.target), chain[pos + 1 :]
    return tuple(names), response, tuple(_replay(n, modules) for n in tail)


def _is_block_member(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], NORM_MODULES + ACTIVATION_MODULES)
    name = _op_name(node)
    return name is not None and name in ACTIVATION_NAMES


def _replay(node: fx.Node, modules: dict[str, nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A non-inplace callable doing what ``node`` does to its tensor input."""
    rest = tuple(node.args[1:])
    kwargs = {k: v for k, v in node.kwargs.items() if k not in ("inplace", "input")}
    if node.op == "call_module":
        module = copy.copy(modules[str(node.target)])
        if hasattr(module, "inplace"):
            setattr(module, "inplace", False)  # noqa: B010
        return module
    if node.op == "call_method":
        method = str(node.target).rstrip("_")
        return lambda x: getattr(x, method)(*rest, **kwargs)
    name = str(getattr(node.target, "__name__", "")).rstrip("_")
    fn = getattr(torch.nn.functional, name, None) or getattr(torch, name)
    return lambda x: fn(x, *rest, **kwargs)
