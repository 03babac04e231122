"""The *feeds* relation between convolutions, with the geometry of every path (docs/METHOD.md section 8).

One forward sweep over the traced ``torch.fx`` graph (its nodes are in execution order) records,
for every tensor, which source convolutions it depends on and how, along each spatial axis (an
:class:`~cnngraph.mapping.geometry.AxisMap`). A convolution's output starts a fresh map of its
own; geometry-neutral operations (norms, activations, dropout, element-wise arithmetic of
same-sized maps, concatenation and split along channels, channel-only reshapes) pass the maps
on; poolings, adaptive poolings and the broadcast of a 1x1 map (a squeeze-and-excitation gate)
transform them. When a convolution ``c_b`` reads a tensor, every source ``c_a`` in its maps
*feeds* it: the read positions are the maps seen through ``c_b``'s own taps. Anything else
(interpolation, spatial permutes and views, flattening) marks the maps as unfollowable; that is
an error only when such a map reaches a convolution, and the error names the operation and both
convolutions. Distinct path geometries between one pair are all kept (their arcs are united);
identical ones are merged.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
    nn.ChannelShuffle,
)  # fmt: skip
ACTIVATION_NAMES = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
     "hardtanh", "hardswish", "hardsigmoid", "softplus", "prelu", "rrelu", "logsigmoid", "softsign"}
)  # fmt: skip
PASS_NAMES = frozenset(
    {"dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach",
     "to", "float", "half", "double", "type_as", "batch_norm", "group_norm", "instance_norm",
     "layer_norm", "local_response_norm", "neg", "abs", "exp", "sqrt", "rsqrt", "pow", "clamp", "clip",
     "channel_shuffle", "native_channel_shuffle", "getitem", "stochastic_depth"}
)  # fmt: skip
ARITHMETIC = {"add": "add", "sub": "add", "rsub": "add", "mul": "mul", "div": "mul", "truediv": "mul"}
OPERATORS = {
    operator.add: "add", operator.iadd: "add", operator.sub: "sub", operator.isub: "sub",
    operator.mul: "mul", operator.imul: "mul", operator.truediv: "truediv", operator.itruediv: "truediv",
    operator.getitem: "getitem", operator.neg: "neg",
}  # fmt: skip
SPLIT_NAMES = frozenset({"chunk", "split", "tensor_split", "unbind", "split_with_sizes"})
CAT_NAMES = frozenset({"cat", "concat", "concatenate"})
RESHAPE_NAMES = frozenset({"view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze"})
REDUCE_NAMES = frozenset({"mean", "sum", "amax", "amin"})
PERMUTE_NAMES = frozenset({"permute", "transpose", "swapaxes", "movedim"})
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


Reach = dict[int, list[PathGeometry]]


def find_feeds(
    gm: fx.GraphModule, conv_nodes: list[fx.Node], convs: dict[str, nn.Conv2d]
) -> tuple[Feed, ...]:
    """Every pair ``c_a`` feeds ``c_b`` of the traced ``gm``, sorted by ``(a, b)``."""
    modules = dict(gm.named_modules())
    index = {node: k for k, node in enumerate(conv_nodes)}
    reach: dict[fx.Node, Reach] = {}
    feeds: list[Feed] = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output") or node.meta.get("tensor_meta") is None:
            continue  # no tensor comes out (sizes, shapes): nothing to follow
        if node in index:
            feeds += _feeds_into(node, index, reach, convs[str(node.target)])
            _, h, w = _spatial_shape(node) or (0, 0, 0)
            reach[node] = {index[node]: [PathGeometry(geo.identity(h), geo.identity(w), frozenset())]}
            continue
        incoming = _merge([reach[a] for a in _tensor_args(node) if a in reach])
        if incoming:
            reach[node] = _through(node, modules, incoming)
    return tuple(sorted(feeds, key=lambda f: (f.src, f.dst)))


def _feeds_into(
    conv_node: fx.Node, index: dict[fx.Node, int], reach: dict[fx.Node, Reach], conv: nn.Conv2d
) -> list[Feed]:
    source = conv_node.args[0] if conv_node.args else conv_node.kwargs.get("input")
    if not isinstance(source, fx.Node) or source not in reach:
        return []
    out = _spatial_shape(conv_node)
    assert out is not None
    rows_conv, cols_conv = conv_axes(conv)
    feeds = []
    names = {k: str(n.target) for n, k in index.items()}
    for a, paths in sorted(reach[source].items()):
        for path in paths:
            if path.blocked is not None:
                raise ModelError(
                    f"{path.blocked} between Conv2d '{names[a]}' and '{conv_node.target}' changes the "
                    "geometry in a way cnngraph cannot follow (only pooling, adaptive pooling, element-wise "
                    "and channel operations may sit between two convolutions); map a model without it"
                )
        mapped = [
            PathGeometry(
                geo.through_taps(p.rows, rows_conv, out[1]),
                geo.through_taps(p.cols, cols_conv, out[2]),
                p.via,
            )
            for p in paths
        ]
        mapped = _dedupe([p for p in mapped if p.rows.target.size and p.cols.target.size])
        if not mapped:  # every window of c_b lies in its padding: nothing is read
            continue
        tags = sorted(set().union(*(p.via for p in mapped)))
        feeds.append(Feed(a, index[conv_node], "+".join(tags) or "direct", tuple(mapped)))
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


def _merge(reaches: list[Reach]) -> Reach:
    merged: Reach = {}
    for r in reaches:
        for a, paths in r.items():
            merged[a] = _dedupe(merged.get(a, []) + paths)
    return merged


def _tensor_args(node: fx.Node) -> Iterator[fx.Node]:
    """The fx nodes among the arguments (nested lists too), in order, once each."""
    seen: set[fx.Node] = set()
    for arg in node.all_input_nodes:
        if arg not in seen:
            seen.add(arg)
            yield arg


def _meta_shape(meta: Any) -> tuple[int, ...] | None:
    shape = getattr(meta, "shape", None)
    return tuple(int(x) for x in shape) if shape is not None else None


def _spatial_shape(node: fx.Node) -> tuple[int, int, int] | None:
    """``(ndim, H, W)`` of the node's tensor output (its last two dims), or None."""
    shape = _meta_shape(node.meta.get("tensor_meta"))
    if shape is None or len(shape) < 3:
        return None
    return len(shape), shape[-2], shape[-1]


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


def _block_all(incoming: Reach, what: str) -> Reach:
    return {
        a: [PathGeometry(p.rows, p.cols, p.via, p.blocked or what) for p in ps] for a, ps in incoming.items()
    }


def _tag(incoming: Reach, tag: str) -> Reach:
    return {
        a: [PathGeometry(p.rows, p.cols, p.via | {tag}, p.blocked) for p in ps] for a, ps in incoming.items()
    }


def _through(node: fx.Node, modules: dict[str, nn.Module], incoming: Reach) -> Reach:
    """The maps of ``node``'s output from those of its inputs; see the module docstring."""
    what = describe(node, modules)
    module = modules.get(str(node.target)) if node.op == "call_module" else None
    name = op_name(node)
    if isinstance(module, nn.Conv2d):  # pragma: no cover - convolutions are handled by the caller
        raise AssertionError
    out = _spatial_shape(node)
    if module is not None:
        pool = _module_pool(module, str(node.target))
        if isinstance(pool, tuple) and out is not None:
            return _tag(_pool(incoming, pool, out), "pool")
        if pool == "adaptive" and out is not None:
            return _tag(_adaptive(incoming, out), "pool")
        if isinstance(module, NORM_MODULES + ACTIVATION_MODULES + PASS_MODULES):
            return _elementwise(node, incoming, out, what, None)
        return _block_all(incoming, what)
    if name is None:
        return _block_all(incoming, what)
    if name in POOL_ARGS and out is not None:
        return _tag(_pool(incoming, _functional_pool(node, name), out), "pool")
    if name in ADAPTIVE_NAMES and out is not None:
        return _tag(_adaptive(incoming, out), "pool")
    if name in ACTIVATION_NAMES or name in PASS_NAMES:
        if name == "getitem" and not _channel_getitem(node):
            return _block_all(incoming, what)
        return _elementwise(node, incoming, out, what, None)
    if name in ARITHMETIC:
        return _elementwise(node, incoming, out, what, ARITHMETIC[name])
    if name in CAT_NAMES:
        return _tag(incoming, "cat") if _channel_dim(node, "dim", 1) else _block_all(incoming, what)
    if name in SPLIT_NAMES:
        position = 1 if name == "unbind" else 2
        return _tag(incoming, "split") if _channel_dim(node, "dim", position) else _block_all(incoming, what)
    if name in REDUCE_NAMES:
        return _reduce(node, incoming, out, what)
    if name in RESHAPE_NAMES:
        return incoming if _keeps_spatial(node) else _block_all(incoming, what)
    if name in PERMUTE_NAMES:
        return incoming if _keeps_spatial(node) and _permute_keeps_axes(node) else _block_all(incoming, what)
    return _block_all(incoming, what)


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


def _pool(incoming: Reach, pools: tuple[geo.AxisPool, geo.AxisPool], out: tuple[int, int, int]) -> Reach:
    rows, cols = pools
    return {
        a: _dedupe(
            [
                PathGeometry(
                    geo.through_taps(p.rows, rows.as_taps(), out[1]),
                    geo.through_taps(p.cols, cols.as_taps(), out[2]),
                    p.via,
                    p.blocked,
                )
                for p in ps
            ]
        )
        for a, ps in incoming.items()
    }


def _adaptive(incoming: Reach, out: tuple[int, int, int]) -> Reach:
    return {
        a: _dedupe(
            [
                PathGeometry(
                    geo.through_adaptive(p.rows, out[1]),
                    geo.through_adaptive(p.cols, out[2]),
                    p.via,
                    p.blocked,
                )
                for p in ps
            ]
        )
        for a, ps in incoming.items()
    }


def _elementwise(
    node: fx.Node, incoming: Reach, out: tuple[int, int, int] | None, what: str, tag: str | None
) -> Reach:
    """Same-sized maps pass on; a 1x1 map broadcast over a larger output is read everywhere."""
    if out is None:  # not a spatial tensor (a flattened one): nothing can follow
        return _block_all(incoming, what)
    result: Reach = {}
    for a, paths in incoming.items():
        mapped = []
        for p in paths:
            rows, cols, via = p.rows, p.cols, set(p.via) | ({tag} if tag else set())
            if rows.size != out[1] or cols.size != out[2]:
                if rows.size not in (1, out[1]) or cols.size not in (1, out[2]):
                    mapped.append(PathGeometry(rows, cols, frozenset(via), p.blocked or what))
                    continue
                if rows.size != out[1]:
                    rows = geo.through_broadcast(rows, out[1])
                if cols.size != out[2]:
                    cols = geo.through_broadcast(cols, out[2])
                via.add("broadcast")
            mapped.append(PathGeometry(rows, cols, frozenset(via), p.blocked))
        result[a] = _dedupe(mapped)
    return result


def _reduce(node: fx.Node, incoming: Reach, out: tuple[int, int, int] | None, what: str) -> Reach:
    """A reduction over channels keeps the geometry; one over both spatial axes (keepdim) is a
    global pooling; anything else cannot be followed."""
    shape_in = _input_shape(node)
    if out is None or shape_in is None or len(shape_in) != out[0]:
        return _block_all(incoming, what)
    if shape_in[-2:] == out[1:]:
        return incoming
    if out[1:] == (1, 1):
        return _tag(_adaptive(incoming, out), "pool")
    return _block_all(incoming, what)


def _input_shape(node: fx.Node) -> tuple[int, ...] | None:
    first = node.args[0] if node.args else node.kwargs.get("input")
    return _meta_shape(first.meta.get("tensor_meta")) if isinstance(first, fx.Node) else None


def _channel_dim(node: fx.Node, key: str, position: int) -> bool:
    """Whether the dim argument of a cat/split names neither spatial axis nor the batch axis."""
    dim = node.kwargs.get(key, node.args[position] if len(node.args) > position else 0)
    first = node.args[0] if node.args else node.kwargs.get("tensors", node.kwargs.get("input"))
    if isinstance(first, list | tuple):
        first = first[0] if first else None
    shape = _meta_shape(first.meta.get("tensor_meta")) if isinstance(first, fx.Node) else None
    if shape is None or not isinstance(dim, int):
        return False
    dim = dim % len(shape)
    return 0 < dim < len(shape) - 2


def _channel_getitem(node: fx.Node) -> bool:
    """``x[k]`` of a split's tuple, or a tensor index that leaves both spatial axes whole."""
    source = node.args[0]
    if isinstance(source, fx.Node) and not isinstance(source.meta.get("tensor_meta"), tuple | list):
        shape_in, shape_out = _input_shape(node), _meta_shape(node.meta.get("tensor_meta"))
        return shape_in is not None and shape_out is not None and _same_spatial(shape_in, shape_out)
    return True


def _same_spatial(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) >= 3 and len(b) >= 3 and a[-2:] == b[-2:]


def _keeps_spatial(node: fx.Node) -> bool:
    shape_in, shape_out = _input_shape(node), _meta_shape(node.meta.get("tensor_meta"))
    return shape_in is not None and shape_out is not None and _same_spatial(shape_in, shape_out)


def _permute_keeps_axes(node: fx.Node) -> bool:
    """A permute/transpose that leaves the last two axes where they are."""
    shape = _input_shape(node)
    if shape is None:
        return False
    n = len(shape)
    dims = [a for a in node.args[1:] if isinstance(a, int)] or [
        v for k, v in node.kwargs.items() if k.startswith("dim") and isinstance(v, int)
    ]
    if len(node.args) > 1 and isinstance(node.args[1], list | tuple):
        dims = [int(d) for d in node.args[1] if isinstance(d, int)]
    name = op_name(node)
    if name == "permute":
        return len(dims) == n and [d % n for d in dims][-2:] == [n - 2, n - 1]
    return all(d % n < n - 2 for d in dims)
