"""Removable units (docs/METHOD.md section 8), found from one torch.fx trace, as plain data.

A *unit* is what the pruner removes as a whole:

- ``chain``: one convolution outside every residual branch whose block (the convolution and the
  batch norm / activation that directly and only consume it) passes its output, through
  single-input operations such as pooling or flatten, to exactly one convolution or linear layer,
  never to a fork or a merge, and which every path from the input to the output goes through
  (every convolution of a VGG-style model; a DenseNet transition convolution);
- ``residual-branch``: the convolutions between a fork and the addition that closes it, where the
  other operand of the addition is the fork's tensor itself (identity shortcut) or the fork through
  one projection convolution and its batch norm; removing it makes the block its shortcut;
- ``not-removable``: every other convolution (stems whose output forks, projections, convolutions
  inside concatenating blocks or squeeze-and-excitation gates, shared convolutions), with why.

Every convolution belongs to exactly one unit; convolution ``k`` is the ``k``-th ``nn.Conv2d`` call
in the traced graph (execution order), the numbering the mapping uses. Residual branches nested in
a larger residual branch are part of the outer one. Finding units only reads the graph;
``surgery`` changes it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from cnngraph.errors import PruningError

CHAIN = "chain"
RESIDUAL = "residual-branch"
NOT_REMOVABLE = "not-removable"
UNIT_KINDS = (CHAIN, RESIDUAL, NOT_REMOVABLE)

_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.PReLU,
)  # fmt: skip
BLOCK_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm2d, *_ACTIVATION_MODULES)
BLOCK_FUNCTIONS: frozenset[Any] = frozenset(
    {
        F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
        F.hardswish, F.hardtanh, torch.relu, torch.relu_, torch.sigmoid, torch.tanh, F.batch_norm,
    }
)  # fmt: skip
BLOCK_METHODS = frozenset({"relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_"})
_ADD_FUNCTIONS: frozenset[Any] = frozenset({operator.add, operator.iadd, torch.add})
_ADD_METHODS = frozenset({"add", "add_"})
_PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout)
_SHAPE_METHODS = frozenset({"size", "dim"})
_SHAPE_ATTRIBUTES = frozenset({"shape", "ndim"})


@dataclass(frozen=True)
class Unit:
    """One removable (or not removable) group of convolutions.

    ``convs`` are convolution indices (execution order), ``conv_names`` their module names,
    ``name`` the unit's module path (the convolution, or the block holding a branch). For a
    residual branch ``merge`` is the fx node of the closing addition, ``branch_end`` the operand
    that the branch produces, ``graph_nodes`` every fx node of the branch (what surgery erases)
    and ``shortcut`` ``identity`` or the projection convolution's name. ``reason`` says why a
    convolution is not removable.
    """

    index: int
    kind: str
    convs: tuple[int, ...]
    conv_names: tuple[str, ...]
    name: str
    reason: str = ""
    shortcut: str = ""
    merge: str = ""
    branch_end: str = ""
    graph_nodes: tuple[str, ...] = ()

    @property
    def removable(self) -> bool:
        return self.kind != NOT_REMOVABLE

    def describe(self) -> str:
        """For people: ``chain conv``, ``residual branch (identity shortcut)``, ``not removable``."""
        if self.kind == CHAIN:
            return "chain conv"
        if self.kind == RESIDUAL and self.shortcut == "identity":
            return "residual branch (identity shortcut)"
        if self.kind == RESIDUAL:
            return f"residual branch (projection {self.shortcut})"
        return "not removable"

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.index,
            "kind": self.kind,
            "name": self.name,
            "convolutions": list(self.convs),
            "convolution_names": list(self.conv_names),
            "shortcut": self.shortcut or None,
            "reason": self.reason or None,
        }


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` of ``model``; a :class:`PruningError` when it cannot be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, ...) for user code
        raise PruningError(
            f"torch.fx cannot trace the model ({type(e).__name__}: {first_line(e)}); "
            "data-dependent control flow in forward() prevents surgery"
        ) from e


def conv_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The ``nn.Conv2d`` call nodes of ``gm`` in execution order."""
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)]


def conv_names(model: nn.Module) -> list[str]:
    """Qualified names of the convolutions of ``model`` in execution order (``c_1 .. c_M``)."""
    return [str(n.target) for n in conv_nodes(trace(model))]


def find_units(model: nn.Module) -> list[Unit]:
    """The units of ``model`` (traced once), ordered by their first convolution."""
    return find_units_in_graph(trace(model))


def chain_units(names: Sequence[str]) -> list[Unit]:
    """Every convolution a chain unit: the units of a VGG-style model with these convolutions."""
    return [Unit(k, CHAIN, (k,), (name,), name) for k, name in enumerate(names)]


def block_nodes(conv: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """The convolution and the batch-norm/activation nodes that directly and only consume it."""
    block = [conv]
    node = conv
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not is_block_member(user, modules) or not user.args or user.args[0] is not node:
            break
        if any(isinstance(a, fx.Node) for a in (*user.args[1:], *user.kwargs.values())):
            break
        block.append(user)
        node = user
    return block


def is_block_member(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), BLOCK_MODULES)
    if node.op == "call_function":
        return node.target in BLOCK_FUNCTIONS
    if node.op == "call_method":
        return node.target in BLOCK_METHODS
    return False


def find_units_in_graph(gm: fx.GraphModule) -> list[Unit]:
    """The units of a traced model; see the module docstring for the rules."""
    graph = _Graph(gm)
    convs = conv_nodes(gm)
    index = {n: k for k, n in enumerate(convs)}
    branches = _residual_branches(graph, index)
    claimed: dict[int, str] = {}
    units: list[tuple[int, Unit]] = []
    for branch in branches:
        ks = tuple(sorted(index[n] for n in branch.region if n in index))
        names = tuple(str(convs[k].target) for k in ks)
        for k in ks:
            claimed[k] = ""
        shortcut = "identity" if branch.projection is None else str(branch.projection.target)
        if branch.projection is not None:
            claimed[index[branch.projection]] = (
                f"it is the projection shortcut of residual branch '{_prefix(names)}'"
            )
        members = tuple(n.name for n in gm.graph.nodes if n in branch.region)
        unit = Unit(
            0, RESIDUAL, ks, names, _prefix(names), shortcut=shortcut, merge=branch.merge.name,
            branch_end=branch.end.name, graph_nodes=members,
        )  # fmt: skip
        units.append((ks[0], unit))
    for k, conv in enumerate(convs):
        if k in claimed and not claimed[k]:
            continue
        reason = claimed.get(k) or _chain_refusal(graph, conv)
        name = str(conv.target)
        kind = NOT_REMOVABLE if reason else CHAIN
        units.append((k, Unit(0, kind, (k,), (name,), name, reason=reason)))
    units.sort(key=lambda pair: pair[0])
    return [replace(u, index=i) for i, (_, u) in enumerate(units)]


def _prefix(names: Sequence[str]) -> str:
    """The longest common module path of ``names`` (``layer1.0`` for its two convolutions)."""
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if len(names) == 1:
        return names[0]
    return ".".join(common) if common else "+".join(names)


class _Graph:
    """Data edges of a traced graph: shape queries (``x.size(0)``) and constants are not data."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.shape_like: set[fx.Node] = set()
        for node in gm.graph.nodes:
            if _is_shape_query(node) or (
                node.op == "call_function"
                and node.all_input_nodes
                and all(a in self.shape_like for a in node.all_input_nodes)
            ):
                self.shape_like.add(node)
        self.calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                self.calls[str(node.target)] = self.calls.get(str(node.target), 0) + 1

    def inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a not in self.shape_like and a.op != "get_attr"]

    def users(self, node: fx.Node) -> list[fx.Node]:
        return [u for u in node.users if u not in self.shape_like]

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(str(node.target)) if node.op == "call_module" else None

    def is_conv(self, node: fx.Node) -> bool:
        return isinstance(self.module(node), nn.Conv2d)

    def label(self, node: fx.Node) -> str:
        module = self.module(node)
        if module is not None:
            return f"'{node.target}' ({type(module).__name__})"
        target = getattr(node.target, "__name__", str(node.target))
        return f"'{node.name}' ({target})"


def _is_shape_query(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    return node.op == "call_function" and node.target is getattr and str(node.args[1]) in _SHAPE_ATTRIBUTES


@dataclass(frozen=True)
class _Branch:
    merge: fx.Node
    end: fx.Node
    fork: fx.Node
    projection: fx.Node | None
    region: frozenset[fx.Node]


def _residual_branches(graph: _Graph, index: dict[fx.Node, int]) -> list[_Branch]:
    """Every addition closing a residual branch; nested branches give way to the outer one."""
    found = []
    for node in graph.gm.graph.nodes:
        operands = _add_operands(node)
        if operands is None:
            continue
        options = [b for b in (_branch(graph, node, *operands), _branch(graph, node, *operands[::-1])) if b]
        best = _pick(graph, options, index)
        if best is not None:
            found.append(best)
    found.sort(key=lambda b: -len(b.region))
    kept: list[_Branch] = []
    for branch in found:
        if all(not (branch.region & other.region) for other in kept):
            kept.append(branch)
    return kept


def _add_operands(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )
    if not is_add or node.kwargs or len(node.args) != 2:
        return None
    a, b = node.args
    if isinstance(a, fx.Node) and isinstance(b, fx.Node) and a is not b:
        return a, b
    return None


def _branch(graph: _Graph, merge: fx.Node, end: fx.Node, other: fx.Node) -> _Branch | None:
    """``merge = end + other`` as a residual branch ending at ``end``, or None when it is not one."""
    fork, projection = _shortcut(graph, other)
    region = _region(graph, end, fork)
    if region is None or not any(graph.is_conv(n) for n in region):
        return None
    if not any(fork in graph.inputs(n) for n in region):
        return None
    for n in region:
        allowed = {merge} if n is end else region
        if any(u not in allowed for u in graph.users(n)):
            return None
        if graph.is_conv(n) and graph.calls.get(str(n.target), 0) != 1:
            return None
    if graph.users(end) != [merge]:
        return None
    return _Branch(merge, end, fork, projection, frozenset(region))


def _shortcut(graph: _Graph, other: fx.Node) -> tuple[fx.Node, fx.Node | None]:
    """``(fork, projection)``: ``other`` through one convolution (+ batch norm) used only on the way
    to the addition is a projection of that convolution's input; anything else is an identity."""
    inner = other
    while isinstance(graph.module(inner), _PASS_THROUGH) and len(graph.inputs(inner)) == 1:
        if len(graph.users(inner)) != 1:
            break
        inner = graph.inputs(inner)[0]
    if inner is not other:  # an nn.Identity (or dropout) module on the shortcut: still the identity
        return inner, None
    conv = other
    if isinstance(graph.module(other), nn.BatchNorm2d) and len(graph.inputs(other)) == 1:
        conv = graph.inputs(other)[0]
    if not graph.is_conv(conv):
        return other, None
    path = [conv] if conv is other else [conv, other]
    inputs = graph.inputs(conv)
    if (
        any(len(graph.users(n)) != 1 for n in path)
        or len(inputs) != 1
        or graph.calls.get(str(conv.target)) != 1
    ):
        return other, None
    return inputs[0], conv


def _region(graph: _Graph, end: fx.Node, fork: fx.Node) -> set[fx.Node] | None:
    """The nodes from ``end`` back to ``fork`` (exclusive); None when the branch reads anything else."""
    if end is fork:
        return None
    region: set[fx.Node] = set()
    stack = [end]
    while stack:
        node = stack.pop()
        if node in region:
            continue
        if node.op == "placeholder":
            return None
        region.add(node)
        stack.extend(a for a in graph.inputs(node) if a is not fork)
    return region


def _pick(graph: _Graph, options: list[_Branch], index: dict[fx.Node, int]) -> _Branch | None:
    """One reading of an addition: the branch with more convolutions, else the 1x1 projection."""
    if len(options) < 2:
        return options[0] if options else None

    def key(b: _Branch) -> tuple[int, int]:
        convs = sum(1 for n in b.region if n in index)
        module = graph.module(b.projection) if b.projection is not None else None
        one_by_one = isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
        return convs, int(one_by_one)

    a, b = sorted(options, key=key, reverse=True)
    return a if key(a) != key(b) else None


def _chain_refusal(graph: _Graph, conv: fx.Node) -> str:
    """Why ``conv`` is not a chain convolution, or "" when it is one."""
    calls = graph.calls.get(str(conv.target), 0)
    if calls != 1:
        return f"the module is called {calls} times (shared weights)"
    if len(conv.args) != 1 or conv.kwargs or not isinstance(conv.args[0], fx.Node):
        return "it is not called on a single tensor"
    node = block_nodes(conv, graph.modules)[-1]
    while True:
        users = graph.users(node)
        if len(users) != 1:
            if not users:
                return "its output is not used"
            names = ", ".join(graph.label(u) for u in users[:3])
            return f"its output forks to {len(users)} operations ({names})"
        user = users[0]
        if user.op == "output" or graph.is_conv(user) or isinstance(graph.module(user), nn.Linear):
            break
        if len(graph.inputs(user)) > 1:
            return f"its output is merged with another tensor by {graph.label(user)}"
        node = user
    if _bypassed(graph, conv):
        return "the data also reaches the output around it (a side path of a branching block)"
    return ""


def _bypassed(graph: _Graph, conv: fx.Node) -> bool:
    """True when the output is reachable from the inputs without passing through ``conv``."""
    starts = [n for n in graph.gm.graph.nodes if n.op == "placeholder"]
    seen: set[fx.Node] = set(starts)
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node.op == "output":
            return True
        for user in graph.users(node):
            if user is not conv and user not in seen:
                seen.add(user)
                stack.append(user)
    return False


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""
