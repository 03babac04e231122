"""The *feeds* relation between convolutions, with the geometry of every path (docs/METHOD.md section 8).

One forward sweep over the traced ``torch.fx`` graph (its nodes are in execution order) records,
for every tensor, which source convolutions reach it (a *flow*) and how: per source, the distinct
paths, each with its geometry along the two spatial axes (an
:class:`~cnngraph.mapping.geometry.AxisMap` per axis) and the *channels* of the tensor that carry
the source's data (a boolean mask over the tensor's dims other than the batch and the two spatial
ones). A flow also knows where the spatial axes are, so layout-only permutes (ConvNeXt's round
trip to channels-last and back) and channel reshapes (ShuffleNet's view/transpose/view shuffle)
are followed.

A convolution's output starts a fresh flow of its own. Operations act on both parts:

- element-wise operations, norms and activations keep the geometry; a 1x1 map broadcast over a
  larger one is read everywhere (a squeeze-and-excitation gate); the channel masks broadcast too;
- poolings and adaptive poolings transform the geometry (docs/METHOD.md section 3);
- concatenation, split/chunk/unbind/tensor_split, channel indexing (``x[:, a:b]``, ``narrow``,
  ``select``) and channel shuffles move, select and drop channels: a path whose channels are all
  dropped carries nothing and is gone, so a convolution reading one chunk of a concatenation is
  fed only by the convolutions whose channels are in that chunk;
- operations mixing channels (a reduction over channels, a norm over channels, ``nn.Linear`` over
  a channels-last axis, softmax over channels) make every output channel carry what any input
  channel carried.

When a convolution ``c_b`` reads a tensor, every source ``c_a`` with a path there *feeds* it: the
read positions are the path's maps seen through ``c_b``'s own taps. Anything else (interpolation,
permutes and views that move or merge the spatial axes, flattening) marks the paths as
unfollowable; that is an error only when such a path reaches a convolution, and the error names
the operation and both convolutions. Distinct path geometries between one pair are all kept (their
arcs are united); identical ones are merged.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import fx, nn

from cnngraph.errors import ModelError
from cnngraph.mapping import geometry as geo

NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
)  # fmt: skip
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.PReLU, nn.Softplus,
)  # fmt: skip
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
)  # fmt: skip
ACTIVATION_NAMES = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
     "hardtanh", "hardswish", "hardsigmoid", "softplus", "prelu", "rrelu", "logsigmoid", "softsign"}
)  # fmt: skip
PASS_NAMES = frozenset(
    {"dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach",
     "to", "float", "half", "double", "bfloat16", "type", "type_as", "batch_norm", "instance_norm",
     "neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "stochastic_depth"}
)  # fmt: skip
ARITHMETIC = {
    "add": "add", "sub": "add", "rsub": "add", "mul": "mul", "div": "mul", "truediv": "mul",
    "pow": None, "clamp": None, "clip": None, "maximum": None, "minimum": None, "where": None,
}  # fmt: skip
OPERATORS = {
    operator.add: "add", operator.iadd: "add", operator.sub: "sub", operator.isub: "sub",
    operator.mul: "mul", operator.imul: "mul", operator.truediv: "truediv", operator.itruediv: "truediv",
    operator.getitem: "getitem", operator.neg: "neg",
}  # fmt: skip
SPLIT_NAMES = frozenset({"chunk", "split", "tensor_split", "unbind", "split_with_sizes"})
CAT_NAMES = frozenset({"cat", "concat", "concatenate"})
RESHAPE_NAMES = frozenset({"view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze"})
REDUCE_NAMES = frozenset(
    {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "prod", "norm",
     "linalg_vector_norm"}
)  # fmt: skip
PERMUTE_NAMES = frozenset({"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis"})
SHUFFLE_NAMES = frozenset({"channel_shuffle", "native_channel_shuffle"})
SOFTMAX_NAMES = frozenset({"softmax", "log_softmax"})
POOL_ARGS = {
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}
ADAPTIVE_NAMES = frozenset({"adaptive_avg_pool2d", "adaptive_max_pool2d"})


@dataclass(frozen=True)
class PathGeometry:
    """One way a source convolution's output reaches a tensor: per-axis maps and the ops passed."""

    rows: geo.AxisMap
    cols: geo.AxisMap
    via: frozenset[str]
    blocked: str | None = None  # the operation that cannot be followed, if any

    def same_geometry(self, other: PathGeometry) -> bool:
        return (
            self.blocked == other.blocked
            and self.rows.same_pairs(other.rows)
            and self.cols.same_pairs(other.cols)
        )


@dataclass(frozen=True)
class Feed:
    """``c_src`` feeds ``c_dst``: the distinct path geometries, on ``c_dst``'s output grid.

    ``via`` names the non-neutral operations on the paths ('direct' when there are none), e.g.
    ``add``, ``cat``, ``pool``, ``mul``, ``broadcast``, ``split``, joined by '+'.
    """

    src: int
    dst: int
    via: str
    paths: tuple[PathGeometry, ...]

    @property
    def weight_path(self) -> PathGeometry:
        """The path whose geometry gives the arc weights: the one through the fewest operations
        (ties: the first in the traced graph's argument order)."""
        return min(self.paths, key=lambda p: len(p.via))


# ------------------------------------------------------------------------------------ flows
@dataclass(frozen=True)
class _Path:
    """A path and the channels of the tensor that carry its source's data (``None``: blocked)."""

    geometry: PathGeometry
    channels: np.ndarray | None


Sources = dict[int, list[_Path]]


@dataclass(frozen=True)
class _Flow:
    """What reaches one tensor: per source convolution its paths; ``axes``: the row and column dims,
    or ``()`` once both (of size 1) were squeezed away, as in ``pool(x).view(n, c)`` before the
    linear layers of a squeeze-and-excitation gate; a later ``view(n, c, 1, 1)`` brings them back."""

    axes: tuple[int, ...]
    sources: Sources


@dataclass(frozen=True)
class _Items:
    """What reaches each tensor of a tuple-valued node (a split, ``max`` over a dim)."""

    items: tuple[_Flow | None, ...]


Flow = _Flow | _Items
_UNKNOWN = object()


def find_feeds(
    gm: fx.GraphModule, conv_nodes: list[fx.Node], convs: dict[str, nn.Conv2d]
) -> tuple[Feed, ...]:
    """Every pair ``c_a`` feeds ``c_b`` of the traced ``gm``, sorted by ``(a, b)``.

    Every node needs ``meta['tensor_meta']`` (its output's shape) from shape propagation.
    """
    modules = dict(gm.named_modules())
    index = {node: k for k, node in enumerate(conv_nodes)}
    names = {k: str(n.target) for n, k in index.items()}
    flows: dict[fx.Node, Flow] = {}
    feeds: list[Feed] = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output") or node.meta.get("tensor_meta") is None:
            continue  # no tensor comes out (sizes, shapes): nothing to follow
        if node in index:
            feeds += _feeds_into(node, index[node], names, flows, convs[str(node.target)])
            shape = _shape(node)
            channels = np.ones(shape[1] if shape is not None and len(shape) == 4 else 1, dtype=bool)
            _, h, w = _spatial_shape(node) or (0, 0, 0)
            path = PathGeometry(geo.identity(h), geo.identity(w), frozenset())
            flows[node] = _Flow((2, 3), {index[node]: [_Path(path, channels)]})
            continue
        if any(a in flows for a in _tensor_args(node)):
            flows[node] = _through(node, modules, flows)
    return tuple(sorted(feeds, key=lambda f: (f.src, f.dst)))


def _feeds_into(
    conv_node: fx.Node, b: int, names: dict[int, str], flows: dict[fx.Node, Flow], conv: nn.Conv2d
) -> list[Feed]:
    source = conv_node.args[0] if conv_node.args else conv_node.kwargs.get("input")
    flow = flows.get(source) if isinstance(source, fx.Node) else None
    if flow is None:
        return []
    if isinstance(flow, _Items):
        flow = _blocked(_union_items(flow), f"the tuple read by Conv2d '{conv_node.target}'")
    out = _spatial_shape(conv_node)
    assert out is not None
    if flow.axes != (2, 3):
        flow = _blocked(flow, "a permute or view that leaves the spatial axes elsewhere")
    rows_conv, cols_conv = conv_axes(conv)
    feeds = []
    for a, paths in sorted(flow.sources.items()):
        for path in paths:
            if path.geometry.blocked is not None:
                raise ModelError(
                    f"{path.geometry.blocked} between Conv2d '{names[a]}' and '{conv_node.target}' changes "
                    "the geometry in a way cnngraph cannot follow (only pooling, adaptive pooling, "
                    "element-wise, channel and layout-only operations may sit between two convolutions); "
                    "map a model without it"
                )
        mapped = [
            PathGeometry(
                geo.through_taps(p.geometry.rows, rows_conv, out[1]),
                geo.through_taps(p.geometry.cols, cols_conv, out[2]),
                p.geometry.via,
            )
            for p in paths
        ]
        mapped = _dedupe([p for p in mapped if p.rows.target.size and p.cols.target.size])
        if not mapped:  # every window of c_b lies in its padding: nothing is read
            continue
        tags = sorted(set().union(*(p.via for p in mapped)))
        feeds.append(Feed(a, b, "+".join(tags) or "direct", tuple(mapped)))
    return feeds


def conv_axes(conv: nn.Conv2d) -> tuple[geo.AxisConv, geo.AxisConv]:
    """The convolution's geometry along rows and columns (left/top padding, PyTorch's 'same' rule)."""
    k, s, d = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    pad = conv_padding(conv)
    mode = str(conv.padding_mode)
    if mode not in geo.PADDING_MODES:
        raise ModelError(f"Conv2d with padding_mode '{mode}' is not supported; use zeros, reflect, circular")
    return (geo.AxisConv(k[0], s[0], pad[0], d[0], mode), geo.AxisConv(k[1], s[1], pad[1], d[1], mode))


def conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    """Left/top padding as integers, resolving ``'same'`` (the odd one out goes at the end, as in
    PyTorch) and ``'valid'``."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return 0, 0
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        return d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2
    return _pair(m.padding)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def _dedupe(paths: list[PathGeometry]) -> list[PathGeometry]:
    """Merge paths with the same geometry (their operation tags united)."""
    out: list[PathGeometry] = []
    for p in paths:
        for i, q in enumerate(out):
            if q.same_geometry(p):
                out[i] = PathGeometry(q.rows, q.cols, q.via | p.via, q.blocked)
                break
        else:
            out.append(p)
    return out


def _dedupe_paths(paths: list[_Path]) -> list[_Path]:
    """Merge paths with the same geometry: tags united, channels united."""
    out: list[_Path] = []
    for p in paths:
        for i, q in enumerate(out):
            if q.geometry is p.geometry or q.geometry.same_geometry(p.geometry):
                g = q.geometry
                merged = PathGeometry(g.rows, g.cols, g.via | p.geometry.via, g.blocked)
                channels = None if q.channels is None or p.channels is None else q.channels | p.channels
                out[i] = _Path(merged, channels)
                break
        else:
            out.append(p)
    return out


def _merge(sources: Sequence[Sources]) -> Sources:
    if len(sources) == 1:
        return sources[0]
    merged: dict[int, list[_Path]] = {}
    for s in sources:
        for a, paths in s.items():
            merged.setdefault(a, []).extend(paths)
    return {a: _dedupe_paths(paths) for a, paths in merged.items()}


def _tensor_args(node: fx.Node) -> Iterator[fx.Node]:
    """The fx nodes among the arguments (nested lists too), in order, once each."""
    seen: set[fx.Node] = set()
    for arg in node.all_input_nodes:
        if arg not in seen:
            seen.add(arg)
            yield arg


def _shape(node: Any) -> tuple[int, ...] | None:
    """The shape of a node's tensor output, or None (not a node, not a tensor, a tuple)."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return tuple(int(x) for x in shape) if shape is not None else None


def _spatial_shape(node: fx.Node) -> tuple[int, int, int] | None:
    """``(ndim, H, W)`` of the node's tensor output (its last two dims), or None."""
    shape = _shape(node)
    if shape is None or len(shape) < 3:
        return None
    return len(shape), shape[-2], shape[-1]


def _value(arg: Any) -> Any:
    """A constant argument, with the values shape propagation recorded for nodes (sizes) put in."""
    if isinstance(arg, fx.Node):
        return arg.meta.get("value", _UNKNOWN)
    if isinstance(arg, tuple | list):
        values = [_value(a) for a in arg]
        return _UNKNOWN if any(v is _UNKNOWN for v in values) else type(arg)(values)
    if isinstance(arg, slice):
        parts = (_value(arg.start), _value(arg.stop), _value(arg.step))
        return _UNKNOWN if _UNKNOWN in parts else slice(*parts)
    return arg


def describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """``module 'name' (Type)``, ``function 'name'`` or ``method '.name()'`` for messages."""
    if node.op == "call_module":
        return f"module '{node.target}' ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        return f"function '{getattr(node.target, '__name__', node.target)}' (node '{node.name}')"
    if node.op == "call_method":
        return f"method '.{node.target}()' (node '{node.name}')"
    return f"'{node.name}'"


def op_name(node: fx.Node) -> str | None:
    """The plain name of a torch function, Python operator or tensor method, or None."""
    if node.op == "call_method":
        return str(node.target).rstrip("_")
    if node.op == "call_function":
        if node.target in OPERATORS:
            return OPERATORS[node.target]  # type: ignore[index]
        module = getattr(node.target, "__module__", "") or ""
        if module.startswith("torch"):
            return str(getattr(node.target, "__name__", "")).rstrip("_")
    return None


# ---------------------------------------------------------------------------- flow helpers
def _blocked(flow: _Flow, what: str) -> _Flow:
    """Every path of ``flow`` marked unfollowable at ``what`` (kept only for the error message)."""
    sources = {
        a: _dedupe_paths(
            [
                p
                if p.channels is None
                else _Path(PathGeometry(p.geometry.rows, p.geometry.cols, p.geometry.via, what), None)
                for p in paths
            ]
        )
        for a, paths in flow.sources.items()
    }
    return _Flow(flow.axes, sources)


def _union_items(items: _Items) -> _Flow:
    flows = [f for f in items.items if f is not None]
    return _Flow(flows[0].axes if flows else (2, 3), _merge([f.sources for f in flows]) if flows else {})


def _block_inputs(node: fx.Node, flows: dict[fx.Node, Flow], what: str) -> _Flow:
    parts = [flows[a] for a in _tensor_args(node) if a in flows]
    merged = [_union_items(f) if isinstance(f, _Items) else f for f in parts]
    return _blocked(_Flow(merged[0].axes, _merge([f.sources for f in merged])), what)


def _remap(
    flow: _Flow,
    axes: tuple[int, ...] | None = None,
    channels: Callable[[np.ndarray], np.ndarray] | None = None,
    geometry: Callable[[PathGeometry], PathGeometry] | None = None,
    tag: str | None = None,
) -> _Flow:
    """Each open path's channels and geometry transformed; a path left without channels is dropped."""
    sources: Sources = {}
    for a, paths in flow.sources.items():
        out = []
        for p in paths:
            if p.channels is None:  # blocked: carried along for the error message only
                out.append(p)
                continue
            g = geometry(p.geometry) if geometry is not None else p.geometry
            if tag is not None and tag not in g.via:
                g = PathGeometry(g.rows, g.cols, g.via | {tag}, g.blocked)
            m = channels(p.channels) if channels is not None else p.channels
            if m.any():
                out.append(_Path(g, m))
        if out:
            sources[a] = _dedupe_paths(out) if geometry is not None else out
    return _Flow(flow.axes if axes is None else axes, sources)


def _channel_dims(ndim: int, axes: tuple[int, ...]) -> list[int]:
    """The dims of a tensor that its channel masks span: all but the batch and the spatial axes."""
    return [d for d in range(1, ndim) if d not in axes]


def _mask_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[d] for d in _channel_dims(len(shape), axes))


def _mix(mask: np.ndarray, along: Sequence[int]) -> np.ndarray:
    """Every channel along the mask axes ``along`` carries what any of them carried."""
    if not along:
        return mask
    return np.broadcast_to(mask.any(axis=tuple(along), keepdims=True), mask.shape)


def _standard_layout(flow: _Flow, shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and flow.axes == (2, 3)


# ----------------------------------------------------------------------------------- dispatch
def _primary(node: fx.Node) -> Any:
    if node.args:
        return node.args[0]
    return node.kwargs.get("input", node.kwargs.get("tensors", node.kwargs.get("self")))


def _through(node: fx.Node, modules: dict[str, nn.Module], flows: dict[fx.Node, Flow]) -> Flow:
    """The flow of ``node``'s output from those of its inputs; see the module docstring."""
    what = describe(node, modules)
    first = _primary(node)
    flow = flows.get(first) if isinstance(first, fx.Node) else None
    if node.op == "call_function" and node.target is getattr and isinstance(flow, _Items):
        attribute = node.args[1] if len(node.args) > 1 else None
        position = {"values": 0, "indices": 1}.get(str(attribute))
        item = flow.items[position] if position is not None and position < len(flow.items) else None
        return item if item is not None else _block_inputs(node, flows, what)
    if isinstance(flow, _Items):
        if op_name(node) == "getitem":
            k = _value(node.args[1])
            if isinstance(k, slice):
                return _Items(flow.items[k])
            item = flow.items[k] if isinstance(k, int) and -len(flow.items) <= k < len(flow.items) else None
            return item if item is not None else _Flow((2, 3), {})
        if op_name(node) in CAT_NAMES:
            return _cat(node, flows, what)
        return _block_inputs(node, flows, what)
    module = modules.get(str(node.target)) if node.op == "call_module" else None
    shape_in, shape_out = _shape(first), _shape(node)
    if module is not None:
        if flow is None or shape_in is None or shape_out is None:
            return _block_inputs(node, flows, what)
        return _through_module(node, module, flow, shape_in, shape_out, flows, what)
    name = op_name(node)
    if name is None:
        return _block_inputs(node, flows, what)
    if name in CAT_NAMES:
        return _cat(node, flows, what)
    if name in ARITHMETIC or (name in ("max", "min") and _shape(_arg(node, 1, "other")) is not None):
        return _elementwise(node, flows, what, ARITHMETIC.get(name))
    if flow is None or shape_in is None:
        return _block_inputs(node, flows, what)
    if name in SPLIT_NAMES:
        return _split(node, name, flow, shape_in, what)
    if name in REDUCE_NAMES:
        return _reduce(node, name, flow, shape_in, flows, what)
    if shape_out is None:
        return _block_inputs(node, flows, what)
    return _through_function(node, name, flow, shape_in, shape_out, flows, what)


def _through_module(
    node: fx.Node,
    module: nn.Module,
    flow: _Flow,
    shape_in: tuple[int, ...],
    shape_out: tuple[int, ...],
    flows: dict[fx.Node, Flow],
    what: str,
) -> Flow:
    if isinstance(module, nn.Conv2d):  # pragma: no cover - convolutions are handled by the caller
        raise AssertionError
    pool = _module_pool(module, str(node.target))
    if pool is not None:
        if not _standard_layout(flow, shape_in):
            return _blocked(flow, what)
        if pool == "adaptive":
            return _adaptive(flow, shape_out)
        return _pool(flow, pool, shape_out)  # type: ignore[arg-type]
    if isinstance(module, nn.LayerNorm):
        return _norm_last(flow, shape_in, len(module.normalized_shape))
    if isinstance(module, nn.GroupNorm):
        return _groups(flow, shape_in, int(module.num_groups), "mix")
    if isinstance(module, nn.LocalResponseNorm):
        return _window(flow, shape_in, int(module.size))
    if isinstance(module, nn.ChannelShuffle):
        return _groups(flow, shape_in, int(module.groups), "shuffle")
    if isinstance(module, nn.Softmax | nn.LogSoftmax):
        return _softmax(flow, shape_in, module.dim, what)
    if isinstance(module, NORM_MODULES + ACTIVATION_MODULES + PASS_MODULES):
        return flow if shape_in == shape_out else _blocked(flow, what)
    if isinstance(module, nn.Linear):
        return _linear(flow, shape_in, shape_out, what)
    if isinstance(module, nn.Flatten | nn.Unflatten):
        return _reshape(flow, shape_in, shape_out, what)
    return _blocked(flow, what)


def _through_function(
    node: fx.Node,
    name: str,
    flow: _Flow,
    shape_in: tuple[int, ...],
    shape_out: tuple[int, ...],
    flows: dict[fx.Node, Flow],
    what: str,
) -> Flow:
    if name in POOL_ARGS:
        if not _standard_layout(flow, shape_in):
            return _blocked(flow, what)
        return _pool(flow, _functional_pool(node, name), shape_out)
    if name in ADAPTIVE_NAMES:
        return _adaptive(flow, shape_out) if _standard_layout(flow, shape_in) else _blocked(flow, what)
    if name in ACTIVATION_NAMES or name in PASS_NAMES:
        return flow if shape_in == shape_out else _blocked(flow, what)
    if name == "getitem":
        return _index(flow, shape_in, shape_out, _value(node.args[1]), what)
    if name == "narrow":
        dim, start, length = (_value(_arg(node, i, k)) for i, k in ((1, "dim"), (2, "start"), (3, "length")))
        if not all(isinstance(v, int) for v in (dim, start, length)):
            return _blocked(flow, what)
        start = start % shape_in[dim] if start < 0 else start
        return _index(flow, shape_in, shape_out, _at_dim(dim, slice(start, start + length)), what)
    if name == "select":
        dim, i = _value(_arg(node, 1, "dim")), _value(_arg(node, 2, "index"))
        if not isinstance(dim, int) or not isinstance(i, int):
            return _blocked(flow, what)
        return _index(flow, shape_in, shape_out, _at_dim(dim, i), what)
    if name in RESHAPE_NAMES:
        return _reshape(flow, shape_in, shape_out, what)
    if name in PERMUTE_NAMES:
        return _permute(node, name, flow, shape_in, what)
    if name in ("expand", "expand_as"):
        return _elementwise(node, flows, what, None, only_first=True)
    if name == "layer_norm":
        normalized = _value(_arg(node, 1, "normalized_shape"))
        if isinstance(normalized, int):
            normalized = [normalized]
        if not isinstance(normalized, list | tuple):
            return _blocked(flow, what)
        return _norm_last(flow, shape_in, len(normalized))
    if name == "group_norm":
        groups = _value(_arg(node, 1, "num_groups"))
        return _groups(flow, shape_in, groups, "mix") if isinstance(groups, int) else _blocked(flow, what)
    if name == "local_response_norm":
        size = _value(_arg(node, 1, "size"))
        return _window(flow, shape_in, size) if isinstance(size, int) else _blocked(flow, what)
    if name in SHUFFLE_NAMES:
        groups = _value(_arg(node, 1, "groups"))
        return _groups(flow, shape_in, groups, "shuffle") if isinstance(groups, int) else _blocked(flow, what)
    if name in SOFTMAX_NAMES:
        return _softmax(flow, shape_in, _value(_arg(node, 1, "dim")), what)
    if name == "linear":
        return _linear(flow, shape_in, shape_out, what)
    return _blocked(flow, what)


def _arg(node: fx.Node, position: int, key: str) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(key)


def _at_dim(dim: int, item: Any) -> tuple[Any, ...]:
    """An index that applies ``item`` at ``dim`` (non-negative) or counted from the end."""
    if dim >= 0:
        return (slice(None),) * dim + (item,)
    return (Ellipsis, item) + (slice(None),) * (-dim - 1)


# ------------------------------------------------------------------------------ geometry ops
def _module_pool(module: nn.Module, name: str) -> tuple[geo.AxisPool, geo.AxisPool] | str | None:
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise ModelError(f"MaxPool2d '{name}' returns indices; cnngraph cannot follow it")
        return _axis_pools(
            module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode
        )
    if isinstance(module, nn.AvgPool2d):
        return _axis_pools(module.kernel_size, module.stride, module.padding, 1, module.ceil_mode)
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        if getattr(module, "return_indices", False):
            raise ModelError(f"{type(module).__name__} '{name}' returns indices; cnngraph cannot follow it")
        return "adaptive"
    return None


def _functional_pool(node: fx.Node, name: str) -> tuple[geo.AxisPool, geo.AxisPool]:
    args = dict(zip(POOL_ARGS[name], node.args[1:], strict=False))
    args.update({k: v for k, v in node.kwargs.items() if k != "input"})
    if args.get("return_indices"):
        raise ModelError(f"{name} at node '{node.name}' returns indices; cnngraph cannot follow it")
    kernel = args["kernel_size"]
    return _axis_pools(
        kernel, args.get("stride") or kernel, args.get("padding", 0), args.get("dilation", 1),
        bool(args.get("ceil_mode")),
    )  # fmt: skip


def _axis_pools(
    kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: bool
) -> tuple[geo.AxisPool, geo.AxisPool]:
    k, s, p, d = (
        _pair(kernel),
        _pair(stride if stride is not None else kernel),
        _pair(padding),
        _pair(dilation),
    )
    return geo.AxisPool(k[0], s[0], p[0], d[0], ceil), geo.AxisPool(k[1], s[1], p[1], d[1], ceil)


def _pool(flow: _Flow, pools: tuple[geo.AxisPool, geo.AxisPool], out: tuple[int, ...]) -> _Flow:
    rows, cols = pools

    def through(g: PathGeometry) -> PathGeometry:
        return PathGeometry(
            geo.through_taps(g.rows, rows.as_taps(), out[-2]),
            geo.through_taps(g.cols, cols.as_taps(), out[-1]),
            g.via,
        )

    return _remap(flow, geometry=through, tag="pool")


def _adaptive(flow: _Flow, out: tuple[int, ...]) -> _Flow:
    def through(g: PathGeometry) -> PathGeometry:
        return PathGeometry(
            geo.through_adaptive(g.rows, out[-2]), geo.through_adaptive(g.cols, out[-1]), g.via
        )

    return _remap(flow, geometry=through, tag="pool")


# ----------------------------------------------------------------------- element-wise and cat
def _elementwise(
    node: fx.Node, flows: dict[fx.Node, Flow], what: str, tag: str | None, only_first: bool = False
) -> _Flow:
    """Inputs broadcast to the output: same-sized maps pass on, a 1x1 map is read everywhere,
    channel masks broadcast like the tensors."""
    out = _shape(node)
    args = [a for a in _tensor_args(node) if a in flows]
    if only_first:
        args = args[:1]
    if out is None or any(isinstance(flows[a], _Items) for a in args):
        return _block_inputs(node, flows, what)
    parts: list[_Flow] = []
    layout: tuple[int, ...] | None = None
    for arg in args:
        flow, shape = flows[arg], _shape(arg)
        assert isinstance(flow, _Flow)
        if (
            shape is None
            or len(shape) != len(out)
            or any(a not in (1, b) for a, b in zip(shape, out, strict=True))
        ):
            parts.append(_blocked(flow, what))  # the batch would move, or not a broadcast: cannot follow
            continue
        if layout is not None and flow.axes != layout:
            parts.append(_blocked(flow, what))
            continue
        layout = flow.axes
        if shape == out:
            parts.append(flow if tag is None else _remap(flow, tag=tag))
            continue
        target = _mask_shape(out, flow.axes)
        if not flow.axes:  # spatial axes squeezed away: only the channels broadcast
            parts.append(_remap(flow, channels=functools.partial(np.broadcast_to, shape=target), tag=tag))
            continue
        size_r, size_c = out[flow.axes[0]], out[flow.axes[1]]

        def broadcast(g: PathGeometry, size_r: int = size_r, size_c: int = size_c) -> PathGeometry:
            rows, cols, via = g.rows, g.cols, set(g.via)
            if rows.size not in (1, size_r) or cols.size not in (1, size_c):
                return PathGeometry(rows, cols, g.via, what)
            if rows.size != size_r:
                rows, via = geo.through_broadcast(rows, size_r), via | {"broadcast"}
            if cols.size != size_c:
                cols, via = geo.through_broadcast(cols, size_c), via | {"broadcast"}
            return PathGeometry(rows, cols, frozenset(via))

        moved = _remap(
            flow, channels=functools.partial(np.broadcast_to, shape=target), geometry=broadcast, tag=tag
        )
        parts.append(_Flow(moved.axes, {a: [_settle(p) for p in ps] for a, ps in moved.sources.items()}))
    if not parts:
        return _Flow((2, 3), {})
    return _Flow(parts[0].axes if layout is None else layout, _merge([p.sources for p in parts]))


def _settle(p: _Path) -> _Path:
    """A path that became blocked while being transformed drops its channels."""
    return _Path(p.geometry, None) if p.geometry.blocked is not None else p


def _cat(node: fx.Node, flows: dict[fx.Node, Flow], what: str) -> _Flow:
    """Concatenation: each input's channels move to its segment of the output."""
    tensors = _primary(node)
    out = _shape(node)
    dim = _value(_arg(node, 1, "dim"))
    dim = 0 if dim is None else dim
    entries: list[tuple[Flow | None, tuple[int, ...] | None]] = []
    if isinstance(tensors, fx.Node) and isinstance(flows.get(tensors), _Items):
        items = flows[tensors]
        assert isinstance(items, _Items)
        metas = tensors.meta.get("tensor_meta") or ()
        entries = [
            (f, tuple(int(s) for s in m.shape) if m is not None else None)
            for f, m in zip(items.items, metas, strict=False)
        ]
    elif isinstance(tensors, list | tuple):
        entries = [(flows.get(t) if isinstance(t, fx.Node) else None, _shape(t)) for t in tensors]
    present = [f for f, _ in entries if f is not None]
    if out is None or not isinstance(dim, int) or any(isinstance(f, _Items) for f in present):
        return _block_inputs(node, flows, what)
    axes = {f.axes for f in present if isinstance(f, _Flow)}
    dim %= len(out)
    if len(axes) != 1 or any(s is None or len(s) != len(out) for _, s in entries):
        return _block_inputs(node, flows, what)
    (layout,) = axes
    if dim == 0 or dim in layout:
        return _block_inputs(node, flows, what)
    k = _channel_dims(len(out), layout).index(dim)
    target = _mask_shape(out, layout)
    parts: list[Sources] = []
    offset = 0
    for flow, shape in entries:
        assert shape is not None
        if isinstance(flow, _Flow):

            def place(m: np.ndarray, start: int = offset, stop: int = offset + shape[dim]) -> np.ndarray:
                full = np.zeros(target, dtype=bool)
                full[(slice(None),) * k + (slice(start, stop),)] = m
                return full

            parts.append(_remap(flow, channels=place, tag="cat").sources)
        offset += shape[dim]
    return _Flow(layout, _merge(parts))


def _split(node: fx.Node, name: str, flow: _Flow, shape_in: tuple[int, ...], what: str) -> Flow:
    """A split into pieces along a channel dim: each piece carries its own channels."""
    metas = node.meta.get("tensor_meta")
    if not isinstance(metas, tuple | list) or any(m is None for m in metas):
        return _blocked(flow, what)
    dim = _value(_arg(node, 1 if name == "unbind" else 2, "dim"))
    dim = 0 if dim is None else dim
    if not isinstance(dim, int):
        return _blocked(flow, what)
    dim %= len(shape_in)
    if dim == 0 or dim in flow.axes:
        return _blocked(flow, what)
    k = _channel_dims(len(shape_in), flow.axes).index(dim)
    items: list[_Flow | None] = []
    offset = 0
    for meta in metas:
        if name == "unbind":
            axes = tuple(a - (a > dim) for a in flow.axes)
            items.append(_remap(flow, axes, functools.partial(np.take, indices=offset, axis=k), tag="split"))
            offset += 1
            continue
        size = int(meta.shape[dim])
        cut = (slice(None),) * k + (slice(offset, offset + size),)
        items.append(_remap(flow, channels=operator.itemgetter(cut), tag="split"))
        offset += size
    return _Items(tuple(items))


def _index(
    flow: _Flow, shape_in: tuple[int, ...], shape_out: tuple[int, ...], index: Any, what: str
) -> _Flow:
    """``x[index]`` that keeps the batch and both spatial axes whole: the index applies to channels."""
    items = index if isinstance(index, tuple) else (index,)
    allowed = (int, slice, list, type(None), type(Ellipsis))
    if index is _UNKNOWN or not all(isinstance(i, allowed) and not isinstance(i, bool) for i in items):
        return _blocked(flow, what)
    if sum(i is Ellipsis for i in items) > 1:
        return _blocked(flow, what)
    consuming = sum(i is not None and i is not Ellipsis for i in items)
    fill = [slice(None)] * (len(shape_in) - consuming)
    if Ellipsis in items:
        at = next(n for n, i in enumerate(items) if i is Ellipsis)
        items = items[:at] + tuple(fill) + items[at + 1 :]
    else:
        items = items + tuple(fill)
    d_in = d_out = 0
    axes: list[int] = [-1] * len(flow.axes)
    mask_index: list[Any] = []
    lists = 0
    for item in items:
        if item is None:
            if d_in == 0:
                return _blocked(flow, what)  # a new dim before the batch
            mask_index.append(None)
            d_out += 1
            continue
        if d_in >= len(shape_in):
            return _blocked(flow, what)
        if d_in == 0 or d_in in flow.axes:
            if d_in and shape_in[d_in] == 1 and item in (0, -1):  # a spatial axis of size 1 dropped
                d_in += 1
                continue
            whole = isinstance(item, slice) and range(*item.indices(shape_in[d_in])) == range(shape_in[d_in])
            if not whole:
                return _blocked(flow, what)
            if d_in in flow.axes:
                axes[flow.axes.index(d_in)] = d_out
        else:
            if isinstance(item, list):
                lists += 1
                item = np.asarray(item, dtype=np.int64)
            mask_index.append(item)
            if isinstance(item, int):
                d_in += 1
                continue
        d_in += 1
        d_out += 1
    if lists > 1 or d_out != len(shape_out) or (axes.count(-1) not in (0, len(axes))):
        return _blocked(flow, what)  # one spatial axis dropped, the other kept
    layout = tuple(axes) if -1 not in axes else ()
    target = _mask_shape(shape_out, layout)
    selector = tuple(mask_index)
    if all(isinstance(i, slice) and i == slice(None) for i in selector) and layout == flow.axes:
        return flow
    try:
        probe = np.zeros(_mask_shape(shape_in, flow.axes), dtype=bool)[selector]
    except IndexError:
        return _blocked(flow, what)
    if probe.shape != target:
        return _blocked(flow, what)
    return _reattach(_remap(flow, layout, lambda m: m[selector]), shape_out)


def _reshape(flow: _Flow, shape_in: tuple[int, ...], shape_out: tuple[int, ...], what: str) -> _Flow:
    """A view/reshape that keeps the batch and each spatial axis as a dim of its own."""
    if shape_in == shape_out:
        return flow
    groups = _reshape_groups(shape_in, shape_out)
    if groups is None:
        return _blocked(flow, what)
    axes = [-1] * len(flow.axes)
    batch = False
    dropped = 0
    for ins, outs in groups:
        special = [d for d in ins if d == 0 or d in flow.axes]
        if not special:
            if any(d == 0 for d in outs):
                return _blocked(flow, what)
            continue
        if ins[0] != 0 and len(ins) == 1 and not outs and shape_in[ins[0]] == 1:
            dropped += 1  # a spatial axis of size 1 squeezed away
            continue
        if len(ins) != 1 or len(outs) != 1 or shape_in[ins[0]] != shape_out[outs[0]]:
            return _blocked(flow, what)  # the batch or a spatial axis is merged, split or dropped
        if ins[0] == 0:
            batch = outs[0] == 0
        else:
            axes[flow.axes.index(ins[0])] = outs[0]
    if not batch or dropped not in (0, len(axes)) or (not dropped and axes and axes[0] > axes[1]):
        return _blocked(flow, what)
    layout = () if dropped else tuple(axes)
    target = _mask_shape(shape_out, layout)
    return _reattach(_remap(flow, layout, lambda m: m.reshape(target)), shape_out)


def _reattach(flow: _Flow, shape: tuple[int, ...]) -> _Flow:
    """Squeezed-away spatial axes come back as the last two dims of a map ``[n, ..., 1, 1]``."""
    if flow.axes or len(shape) < 4 or shape[-2:] != (1, 1):
        return flow
    return _remap(flow, (len(shape) - 2, len(shape) - 1), lambda m: m.reshape(m.shape[:-2]))


def _reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """The dims of ``a`` and ``b`` in matching runs of equal product (row-major reshape)."""
    if 0 in a or 0 in b or int(np.prod(a)) != int(np.prod(b)):
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and j < len(b) and a[i] == b[j] == 1:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
        elif i < len(a) and a[i] == 1:
            groups.append(([i], []))
            i += 1
        elif j < len(b) and b[j] == 1:
            groups.append(([], [j]))
            j += 1
        elif i < len(a) and j < len(b):
            ins, outs, pa, pb = [i], [j], a[i], b[j]
            while pa != pb:
                if pa < pb:
                    i += 1
                    ins.append(i)
                    pa *= a[i]
                else:
                    j += 1
                    outs.append(j)
                    pb *= b[j]
            groups.append((ins, outs))
            i, j = i + 1, j + 1
        else:
            return None
    return groups


def _permute(node: fx.Node, name: str, flow: _Flow, shape_in: tuple[int, ...], what: str) -> _Flow:
    """A permutation of dims that keeps the batch first and the row axis before the column axis."""
    n = len(shape_in)
    probe = np.empty(tuple(range(2, n + 2)), dtype=np.uint8)  # dim d has size d + 2
    args: list[Any] = [_value(a) for a in node.args[1:]]
    kwargs: dict[str, Any] = {k: _value(v) for k, v in node.kwargs.items()}
    try:
        if name == "permute":
            dims = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
            moved = np.transpose(probe, kwargs.get("dims", dims))
        elif name in ("transpose", "swapaxes", "swapdims"):
            d0: Any = args[0] if args else kwargs.get("dim0", kwargs.get("axis0"))
            d1: Any = args[1] if len(args) > 1 else kwargs.get("dim1", kwargs.get("axis1"))
            moved = np.swapaxes(probe, d0, d1)
        else:
            src: Any = args[0] if args else kwargs.get("source")
            dst: Any = args[1] if len(args) > 1 else kwargs.get("destination")
            moved = np.moveaxis(probe, src, dst)
    except (TypeError, ValueError, IndexError, np.exceptions.AxisError):
        return _blocked(flow, what)
    perm = [s - 2 for s in moved.shape]
    if perm == list(range(n)):
        return flow
    if perm[0] != 0:
        return _blocked(flow, what)
    axes = tuple(perm.index(a) for a in flow.axes)
    if axes and axes[0] > axes[1]:
        return _blocked(flow, what)  # rows and columns change places
    before = _channel_dims(n, flow.axes)
    order = [before.index(perm[d]) for d in _channel_dims(n, axes)]
    return _remap(flow, axes, lambda m: np.transpose(m, order))


# -------------------------------------------------------------------------- channel mixing
def _norm_last(flow: _Flow, shape_in: tuple[int, ...], count: int) -> _Flow:
    """A layer norm over the last ``count`` dims mixes the channel dims among them."""
    n = len(shape_in)
    dims = _channel_dims(n, flow.axes)
    along = [k for k, d in enumerate(dims) if d >= n - count]
    return _remap(flow, channels=lambda m: _mix(m, along)) if along else flow


def _groups(flow: _Flow, shape_in: tuple[int, ...], groups: int, how: str) -> _Flow:
    """Group norm (channels mix within each of ``groups`` runs of dim 1) or channel shuffle."""
    if 1 in flow.axes or groups < 1 or shape_in[1] % groups:
        return _remap(flow, channels=lambda m: _mix(m, range(m.ndim)))
    c = shape_in[1]

    def mix(m: np.ndarray) -> np.ndarray:
        split = m.reshape((groups, c // groups, *m.shape[1:]))
        return np.broadcast_to(split.any(axis=1, keepdims=True), split.shape).reshape(m.shape)

    def shuffle(m: np.ndarray) -> np.ndarray:
        return m.reshape((groups, c // groups, *m.shape[1:])).swapaxes(0, 1).reshape(m.shape)

    return _remap(flow, channels=mix if how == "mix" else shuffle)


def _window(flow: _Flow, shape_in: tuple[int, ...], size: int) -> _Flow:
    """Local response norm: channel ``c`` of dim 1 mixes ``c - size//2 .. c + (size-1)//2``."""
    if 1 in flow.axes:
        return _remap(flow, channels=lambda m: _mix(m, range(m.ndim)))
    c = shape_in[1]
    lo = np.clip(np.arange(c) - size // 2, 0, c)
    hi = np.clip(np.arange(c) + (size - 1) // 2 + 1, 0, c)

    def window(m: np.ndarray) -> np.ndarray:
        counts = np.concatenate([np.zeros((1, *m.shape[1:]), dtype=np.int64), np.cumsum(m, axis=0)])
        return (counts[hi] - counts[lo]) > 0

    return _remap(flow, channels=window)


def _softmax(flow: _Flow, shape_in: tuple[int, ...], dim: Any, what: str) -> _Flow:
    if not isinstance(dim, int):
        return _blocked(flow, what)
    dim %= len(shape_in)
    if dim == 0 or dim in flow.axes:
        return _blocked(flow, what)
    k = _channel_dims(len(shape_in), flow.axes).index(dim)
    return _remap(flow, channels=lambda m: _mix(m, [k]))


def _linear(flow: _Flow, shape_in: tuple[int, ...], shape_out: tuple[int, ...], what: str) -> _Flow:
    """``nn.Linear`` over the last dim: a channel dim (channels-last) mixes into the new features."""
    n = len(shape_in)
    if n - 1 in flow.axes or len(shape_out) != n:
        return _blocked(flow, what)
    target = _mask_shape(shape_out, flow.axes)
    return _remap(flow, channels=lambda m: np.broadcast_to(m.any(axis=-1, keepdims=True), target))


def _reduce(
    node: fx.Node, name: str, flow: _Flow, shape_in: tuple[int, ...], flows: dict[fx.Node, Flow], what: str
) -> Flow:
    """A reduction over channel dims mixes them; over both spatial axes it is a global pooling
    (without keepdim the spatial axes are squeezed away); over the batch or one spatial axis it
    cannot be followed."""
    n = len(shape_in)
    at = 2 if name in ("norm", "linalg_vector_norm") else 1  # norm(x, p, dim, keepdim)
    dims = _value(_arg(node, at, "dim"))
    keep = _value(node.kwargs["keepdim"] if "keepdim" in node.kwargs else _arg(node, at + 1, "keepdim"))
    if name in ("std", "var") and "keepdim" not in node.kwargs:  # var(x, dim, unbiased, keepdim)
        keep = _value(_arg(node, 3, "keepdim"))
    listed = [dims] if isinstance(dims, int) else dims
    if not isinstance(listed, list | tuple) or not listed or not isinstance(keep, bool | type(None)):
        return _blocked(flow, what)
    if not all(isinstance(d, int) for d in listed):
        return _blocked(flow, what)
    reduced = sorted({d % n for d in listed})
    keep = bool(keep)
    spatial = [d for d in reduced if d in flow.axes]
    if 0 in reduced or len(spatial) == 1:
        result: Flow = _blocked(flow, what)
    else:
        channel = _channel_dims(n, flow.axes)
        along = tuple(channel.index(d) for d in reduced if d not in flow.axes)
        axes = flow.axes
        if spatial and not keep:
            axes = ()
        elif not keep:
            axes = tuple(a - sum(d < a for d in reduced) for a in axes)

        def mix(m: np.ndarray) -> np.ndarray:
            return np.asarray(m.any(axis=along, keepdims=keep)) if along else m

        result = _remap(flow, axes, mix)
        if spatial:
            result = _adaptive(result, (1, 1))
    if name in ("max", "min"):  # (values, indices)
        return _Items((result, result)) if isinstance(result, _Flow) else result
    return result
