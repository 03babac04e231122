"""Find the convolutions of a model and the geometry between them (METHOD.md sections 1-3).

The model is traced once with ``torch.fx``; its ``Conv2d`` calls, in graph (= execution)
order, are the layers ``c_1 .. c_M``. Walking back from each convolution's input to the
previous convolution collects the poolings in between; batch norm, activations, dropout and
identities are geometry-neutral. Anything else between two convolutions (up-sampling, adaptive
pooling, concatenation, addition) is a :class:`ModelError` naming the operation. Shapes come
from one forward pass of a zero input through the traced graph.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from cnngraph.errors import ModelError
from cnngraph.mapping.geometry import AxisPool
from cnngraph.mapping.network import LayerInfo

NORM_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.PReLU, nn.Softplus,
)  # fmt: skip
PASS_MODULES: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
ACTIVATION_NAMES = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
     "hardtanh", "hardswish", "hardsigmoid", "softplus"}
)  # fmt: skip
PASS_NAMES = frozenset(
    {"dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone"}
)
POOL_ARGS = {
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}


@dataclass(frozen=True)
class PoolOp:
    """A pooling between two convolutions, with its geometry along rows and columns."""

    name: str
    kind: str  # "max" or "avg"
    rows: AxisPool
    cols: AxisPool


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
    ops_before: tuple[PoolOp, ...]
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
        )


@dataclass(frozen=True)
class TracedModel:
    """The traced graph, the convolutions in execution order and the geometry between them."""

    graph_module: fx.GraphModule
    input_shape: tuple[int, int, int]
    convs: tuple[ConvBlock, ...]

    @property
    def layers(self) -> list[LayerInfo]:
        return [c.layer_info() for c in self.convs]

    @property
    def links(self) -> list[tuple[PoolOp, ...]]:
        """The poolings between ``c_k`` and ``c_{k+1}``, for each consecutive pair."""
        return [c.ops_before for c in self.convs[1:]]

    def response_modules(self, response: str) -> list[str]:
        return [c.response_module if response == "activation" else c.name for c in self.convs]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    """Left/top padding as integers, resolving ``'same'`` and ``'valid'``."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return 0, 0
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        return d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2
    return _pair(m.padding)


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
        ops = _ops_between(conv_nodes[k - 1], node, modules) if k > 0 else ()
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
                ops_before=ops,
                post_ops=post,
            )
        )
    return TracedModel(graph_module=gm, input_shape=tuple(input_shape), convs=tuple(convs))  # type: ignore[arg-type]


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # any failure inside user code is the user's to fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {reason}; "
            "make its forward free of data-dependent control flow"
        ) from e


def _propagate_shapes(gm: fx.GraphModule, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device))
    except Exception as e:
        raise ModelError(
            f"a forward pass of {type(model).__name__} on an input of shape {tuple(input_shape)} failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "check the image size and channels against the model"
        ) from e
    finally:
        model.train(was_training)


def _shape(node: fx.Node) -> tuple[int, int, int]:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    if shape is None or len(shape) != 4:
        raise ModelError(f"'{node.name}' does not produce a 4-d feature map")
    return int(shape[1]), int(shape[2]), int(shape[3])


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        return f"function '{getattr(node.target, '__name__', node.target)}' (node '{node.name}')"
    if node.op == "call_method":
        return f"method '.{node.target}()' (node '{node.name}')"
    return f"'{node.name}'"


def _op_name(node: fx.Node) -> str | None:
    """The plain name of a torch function or tensor method, or None."""
    if node.op == "call_method":
        return str(node.target).rstrip("_")
    if node.op == "call_function":
        module = getattr(node.target, "__module__", "") or ""
        if module.startswith("torch"):
            return str(getattr(node.target, "__name__", "")).rstrip("_")
    return None


def _tensor_input(node: fx.Node) -> fx.Node | None:
    arg = node.args[0] if node.args else node.kwargs.get("input")
    return arg if isinstance(arg, fx.Node) else None


def _ops_between(prev: fx.Node, conv: fx.Node, modules: dict[str, nn.Module]) -> tuple[PoolOp, ...]:
    """Poolings on the path from ``prev``'s output to ``conv``'s input, in execution order."""
    ops: list[PoolOp] = []
    node = _tensor_input(conv)
    while node is not prev:
        if node is None or node.op in ("placeholder", "get_attr", "output"):
            raise ModelError(f"the input of Conv2d '{conv.target}' does not come from Conv2d '{prev.target}'")
        if node.op == "call_module" and isinstance(modules[str(node.target)], nn.Conv2d):
            raise ModelError(
                f"Conv2d '{conv.target}' reads the output of '{node.target}', not of the convolution "
                f"before it '{prev.target}'; branching models are not supported"
            )
        pool = _as_pool(node, modules)
        if pool is not None:
            ops.append(pool)
        elif not _is_neutral(node, modules):
            raise ModelError(
                f"{_describe(node, modules)} between Conv2d '{prev.target}' and '{conv.target}' changes the "
                "geometry in a way cnngraph cannot follow; only pooling, batch norm, activations and dropout "
                "may sit between two convolutions"
            )
        node = _tensor_input(node)
    return tuple(reversed(ops))


def _is_neutral(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], NORM_MODULES + ACTIVATION_MODULES + PASS_MODULES)
    name = _op_name(node)
    return name is not None and (name in ACTIVATION_NAMES or name in PASS_NAMES or name == "batch_norm")


def _as_pool(node: fx.Node, modules: dict[str, nn.Module]) -> PoolOp | None:
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise ModelError(f"MaxPool2d '{node.target}' returns indices; cnngraph cannot follow it")
            return _pool_op(
                str(node.target), "max", m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
            )
        if isinstance(m, nn.AvgPool2d):
            return _pool_op(str(node.target), "avg", m.kernel_size, m.stride, m.padding, 1, m.ceil_mode)
        return None
    name = _op_name(node)
    if node.op != "call_function" or name not in POOL_ARGS:
        return None
    args = dict(zip(POOL_ARGS[name], node.args[1:], strict=False))
    args.update(node.kwargs)
    if args.get("return_indices"):
        raise ModelError(f"{name} at node '{node.name}' returns indices; cnngraph cannot follow it")
    kernel = args["kernel_size"]
    stride = args.get("stride") or kernel
    kind = "max" if name == "max_pool2d" else "avg"
    return _pool_op(
        node.name,
        kind,
        kernel,
        stride,
        args.get("padding", 0),
        args.get("dilation", 1),
        bool(args.get("ceil_mode")),
    )


def _pool_op(
    name: str, kind: str, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: bool
) -> PoolOp:
    k, s, p, d = (
        _pair(kernel),
        _pair(stride if stride is not None else kernel),
        _pair(padding),
        _pair(dilation),
    )
    return PoolOp(
        name=name,
        kind=kind,
        rows=AxisPool(k[0], s[0], p[0], d[0], ceil),
        cols=AxisPool(k[1], s[1], p[1], d[1], ceil),
    )


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
