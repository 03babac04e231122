"""Remove whole units from a PyTorch model with torch.fx (docs/METHOD.md sections 6 and 8).

One entry point, :func:`remove_convolutions` ``(model, example_input, remove, strategy)``:

1. trace a copy of the model with ``torch.fx.symbolic_trace`` and propagate shapes
   (``ShapeProp``) on the example input; convolution ``k`` is the ``k``-th ``nn.Conv2d`` call in
   graph (execution) order, the numbering the mapping uses;
2. group ``remove`` into units (:mod:`cnngraph.pruner.units`, from the same trace): every
   convolution must belong to a removable unit, and a residual branch goes whole or not at all;
3. a *residual branch* goes with every node between its fork and the addition closing it, and
   the addition becomes its other operand (the identity or the projection): no consumer changes
   shape, so nothing is rewired;
4. a *chain convolution* goes with its *block*: the convolution plus the ``BatchNorm2d`` and
   activation modules or functions that directly and only consume it (pooling stays), and the
   block's consumers read the block's input instead; what no longer fits is rewired by
   ``strategy``:

   - ``reinit``: every consumer whose input size changed (the next convolution's
     ``in_channels``, or the first ``Linear`` after the flatten's ``in_features``) is replaced by a
     freshly initialised layer of the new input size; every other trained weight is kept;
   - ``bridge``: where a removed block changed the shape, a small adapter takes its place: a 1x1
     convolution from the block's input channels to its output channels (and an
     ``AdaptiveAvgPool2d`` back to the old spatial size when that changed), so every consumer
     keeps its trained weights; the adapters (``pruning_bridge_K``) are new and untrained;

5. recompile, ``graph.lint()``, delete unused submodules and prove the result with a forward pass
   whose output shape must equal the original's.

Anything that cannot give a working model (removing every convolution, an index out of range, a
convolution that is not removable, part of a residual branch, a structure that cannot be
rewired) raises :class:`PruningError` with one clear line.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from cnngraph.errors import ModelError, PruningError
from cnngraph.files import partial_path
from cnngraph.models import ModelSpec, build_model, load_weights
from cnngraph.pruner.units import (
    RESIDUAL,
    Unit,
    block_nodes,
    conv_nodes,
    find_units_in_graph,
    first_line,
    trace,
)
from cnngraph.pruner.units import conv_names as conv_names

STRATEGIES = ("reinit", "bridge")
RECIPE_VERSION = 2


@dataclass(frozen=True)
class Rewire:
    """One change made to keep the pruned model consistent."""

    name: str  # the module replaced or inserted
    kind: str  # 'reinit' or 'bridge'
    detail: str  # what changed, for people

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "detail": self.detail}


@dataclass
class PrunedModel:
    """The pruned model and what was done to it."""

    module: fx.GraphModule
    removed: tuple[int, ...]
    removed_names: tuple[str, ...]
    conv_names: tuple[str, ...]  # every convolution of the original, in execution order
    strategy: str
    rewired: tuple[Rewire, ...]
    input_shape: tuple[int, ...]
    units: tuple[Unit, ...] = ()  # the units removed (chain convolutions, residual branches)

    def recipe(self) -> dict[str, Any]:
        """What :func:`load_pruned` needs to redo the surgery on a freshly built original."""
        return {
            "version": RECIPE_VERSION,
            "removed": list(self.removed),
            "removed_names": list(self.removed_names),
            "units": [u.to_dict() for u in self.units],
            "strategy": self.strategy,
            "input_shape": list(self.input_shape),
            "rewired": [r.to_dict() for r in self.rewired],
        }


def remove_convolutions(
    model: nn.Module,
    example_input: torch.Tensor,
    remove: Sequence[int],
    strategy: str = "reinit",
    seed: int = 0,
) -> PrunedModel:
    """A copy of ``model`` without the convolutional blocks ``remove`` (see the module docstring).

    New layers (re-initialised consumers, bridges) are initialised from ``seed``, so the same
    call gives the same model; the global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _remove_convolutions(model, example_input, remove, strategy)


def _remove_convolutions(
    model: nn.Module, example_input: torch.Tensor, remove: Sequence[int], strategy: str
) -> PrunedModel:
    if strategy not in STRATEGIES:
        raise PruningError(f"unknown strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")
    was_training = model.training
    gm = trace(copy.deepcopy(model))
    gm.eval()
    with torch.no_grad():
        expected = _propagate(gm, example_input)
    convs = conv_nodes(gm)
    targets = _validate(remove, convs)
    units = _units_to_remove(find_units_in_graph(gm), targets)
    names = tuple(str(n.target) for n in convs)
    rewired: list[Rewire] = []
    for unit in units:
        if unit.kind == RESIDUAL:
            _remove_branch(gm, unit)
            continue
        k = unit.convs[0]
        bridge = _remove_block(gm, convs[k], k, strategy)
        if bridge is not None:
            rewired.append(bridge)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    with torch.no_grad():
        rewired += _Rewirer(gm).rewire(example_input)
    gm.recompile()
    _prove(gm, example_input, expected)
    gm.train(was_training)
    return PrunedModel(
        module=gm,
        removed=tuple(targets),
        removed_names=tuple(names[k] for k in targets),
        conv_names=names,
        strategy=strategy,
        rewired=tuple(rewired),
        input_shape=tuple(int(s) for s in example_input.shape),
        units=tuple(units),
    )


def _propagate(gm: fx.GraphModule, example_input: torch.Tensor) -> torch.Tensor:
    try:
        out = ShapeProp(gm).propagate(example_input)
    except Exception as e:
        raise PruningError(
            f"the model does not run on an input of shape {list(example_input.shape)} "
            f"({type(e).__name__}: {first_line(e)})"
        ) from e
    if not isinstance(out, torch.Tensor):
        raise PruningError("the model's forward must return one tensor for surgery")
    return out


def _validate(remove: Sequence[int], convs: list[fx.Node]) -> list[int]:
    m = len(convs)
    if m == 0:
        raise PruningError("the model has no nn.Conv2d to remove")
    targets = sorted({int(k) for k in remove})
    bad = [k for k in targets if not 0 <= k < m]
    if bad:
        raise PruningError(f"convolution index {bad[0]} is out of range; the model has {m} (0..{m - 1})")
    if len(targets) == m:
        raise PruningError(f"refusing to remove all {m} convolutions; keep at least one (lower gamma)")
    return targets


def _units_to_remove(units: list[Unit], targets: list[int]) -> list[Unit]:
    """The whole removable units that ``targets`` make up; a :class:`PruningError` otherwise."""
    wanted = set(targets)
    chosen = []
    for unit in units:
        hit = wanted & set(unit.convs)
        if not hit:
            continue
        k = min(hit)
        if not unit.removable:
            raise PruningError(f"convolution {k} ('{unit.conv_names[0]}') is not removable: {unit.reason}")
        if hit != set(unit.convs):
            listed = ", ".join(f"c{c}" for c in unit.convs)
            raise PruningError(
                f"convolution {k} belongs to residual branch '{unit.name}' ({listed}); "
                "remove the whole branch"
            )
        chosen.append(unit)
    return chosen


def _remove_block(gm: fx.GraphModule, conv: fx.Node, k: int, strategy: str) -> Rewire | None:
    """Drop the block of convolution ``k``; with ``bridge``, put an adapter where shapes change."""
    block = block_nodes(conv, dict(gm.named_modules()))
    source = conv.args[0] if len(conv.args) == 1 and not conv.kwargs else None
    if not isinstance(source, fx.Node):
        raise PruningError(
            f"convolution {k} ('{conv.target}') is not called on a single tensor; cannot remove it"
        )
    end = block[-1]
    replacement: fx.Node = source
    rewire = None
    if strategy == "bridge":
        before, after = _shape(source), _shape(end)
        if before != after:
            adapter = _bridge(before, after, gm.get_submodule(str(conv.target)))
            name = f"pruning_bridge_{k}"
            gm.add_submodule(name, adapter)
            with gm.graph.inserting_after(end):
                replacement = gm.graph.call_module(name, (source,))
            replacement.meta["tensor_meta"] = end.meta["tensor_meta"]
            rewire = Rewire(
                name, "bridge", f"{list(before[1:])} -> {list(after[1:])} replaces convolution {k}"
            )
    end.replace_all_uses_with(replacement)
    for node in reversed(block):
        gm.graph.erase_node(node)
    return rewire


def _remove_branch(gm: fx.GraphModule, unit: Unit) -> None:
    """Drop a residual branch: the addition closing it becomes its other operand (the shortcut)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    merge = nodes[unit.merge]
    other = next(a for a in merge.args if isinstance(a, fx.Node) and a.name != unit.branch_end)
    if _shape(other) != _shape(merge):
        raise PruningError(
            f"the shortcut of residual branch '{unit.name}' has shape {list(_shape(other))} but the block "
            f"{list(_shape(merge))}; removing the branch would change what follows"
        )
    merge.replace_all_uses_with(other)
    gm.graph.erase_node(merge)
    for name in reversed(unit.graph_nodes):
        gm.graph.erase_node(nodes[name])


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise PruningError(f"no shape known for '{node.name}'; the structure around it cannot be rewired")
    return tuple(int(s) for s in meta.shape)


def _bridge(before: tuple[int, ...], after: tuple[int, ...], conv: nn.Module) -> nn.Sequential:
    """A 1x1 convolution (channels) and/or adaptive average pool (spatial size): ``before`` -> ``after``."""
    if len(before) != 4 or len(after) != 4:
        raise PruningError(f"cannot bridge shape {list(before)} to {list(after)}; only 4-D feature maps")
    weight = next(conv.parameters())
    layers: list[nn.Module] = []
    if before[1] != after[1]:
        layers.append(nn.Conv2d(before[1], after[1], kernel_size=1).to(weight.device, weight.dtype))
    if before[2:] != after[2:]:
        layers.append(nn.AdaptiveAvgPool2d(after[2:]))
    return nn.Sequential(*layers)


class _Rewirer(fx.Interpreter):
    """Runs the edited graph once and replaces every Conv2d/Linear whose input size changed."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.gm = gm
        self.changes: list[Rewire] = []

    def rewire(self, example_input: torch.Tensor) -> list[Rewire]:
        try:
            self.run(example_input)
        except PruningError as e:  # fx appends "While executing ..." lines: keep the message one line
            raise PruningError(first_line(e)) from e
        return self.changes

    def run_node(self, n: fx.Node) -> Any:
        try:
            return super().run_node(n)
        except PruningError:
            raise
        except Exception as e:
            raise PruningError(
                f"after the removal '{n.name}' fails ({type(e).__name__}: {first_line(e)}); "
                "this structure cannot be rewired"
            ) from e

    def call_module(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        module = self.fetch_attr(str(target))
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            replacement = _refit(module, x, str(target))
            if replacement is not None:
                _set_submodule(self.gm, str(target), replacement)
                self.changes.append(Rewire(str(target), "reinit", _describe(module, replacement)))
                module = replacement
        return module(*args, **kwargs)


def _refit(module: nn.Module, x: torch.Tensor, name: str) -> nn.Module | None:
    """A freshly initialised copy of ``module`` for input ``x``, or None when it already fits."""
    if isinstance(module, nn.Conv2d) and x.dim() == 4 and x.shape[1] != module.in_channels:
        if module.groups != 1:
            raise PruningError(
                f"'{name}' is a grouped convolution; its input channels cannot be changed "
                "(--strategy bridge keeps it)"
            )
        new: nn.Module = nn.Conv2d(
            int(x.shape[1]),
            module.out_channels,
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    elif isinstance(module, nn.Linear) and x.shape[-1] != module.in_features:
        new = nn.Linear(int(x.shape[-1]), module.out_features, bias=module.bias is not None)
    else:
        return None
    return new.to(module.weight.device, module.weight.dtype)


def _describe(old: nn.Module, new: nn.Module) -> str:
    if isinstance(old, nn.Conv2d) and isinstance(new, nn.Conv2d):
        return f"in_channels {old.in_channels} -> {new.in_channels}, re-initialised"
    if isinstance(old, nn.Linear) and isinstance(new, nn.Linear):
        return f"in_features {old.in_features} -> {new.in_features}, re-initialised"
    return "re-initialised"


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def _prove(gm: fx.GraphModule, example_input: torch.Tensor, expected: torch.Tensor) -> None:
    gm.graph.lint()
    try:
        with torch.no_grad():
            out = gm(example_input)
    except Exception as e:
        raise PruningError(
            f"the pruned model fails its forward pass ({type(e).__name__}: {first_line(e)})"
        ) from e
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PruningError(f"the pruned model returns {got} instead of {list(expected.shape)}")
    if not torch.isfinite(out).all():
        raise PruningError("the pruned model returns non-finite values on the example input")


# --------------------------------------------------------------------------- storage
def recipe_path(path: str | Path) -> Path:
    """The JSON recipe written beside a pruned state dict: ``pruned.pt`` -> ``pruned.json``."""
    return Path(path).with_suffix(".json")


def save_pruned(
    path: str | Path, pruned: PrunedModel, original_spec: ModelSpec, recipe: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write the pruned state dict (``torch.save``) and its JSON recipe, both atomically.

    The recipe holds the original spec, the removed convolutions, the strategy and the example
    input shape (plus ``recipe``, any extra JSON-able facts), so :func:`load_pruned` can rebuild
    the model without unpickling code. Returns ``(state_dict_path, recipe_path)``.
    """
    path = Path(path)
    document = {"spec": original_spec.to_dict(), **pruned.recipe(), "info": dict(recipe or {})}
    text = json.dumps(document, indent=2, default=str)
    json_path = recipe_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_pt = partial_path(path)
    tmp_json = partial_path(json_path)
    try:
        torch.save({"state_dict": pruned.module.state_dict(), "cnngraph": {"pruned": document}}, tmp_pt)
        tmp_json.write_text(text)
        tmp_pt.replace(path)
        tmp_json.replace(json_path)
    finally:
        tmp_pt.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
    return path, json_path


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe of a pruned model: the JSON beside it, else the copy inside the checkpoint."""
    json_path = recipe_path(path)
    if json_path.is_file():
        try:
            return dict(json.loads(json_path.read_text()))
        except json.JSONDecodeError as e:
            raise ModelError(f"'{json_path}' is not valid JSON ({e}); prune again") from e
    from cnngraph.models import read_checkpoint

    _, info = read_checkpoint(path)
    if "pruned" not in info:
        raise ModelError(f"'{path}' is not a pruned model (no recipe); write one with 'cnngraph prune'")
    return dict(info["pruned"])


def load_pruned(path: str | Path) -> nn.Module:
    """Rebuild a pruned model: original from its spec, the recipe's surgery, then the weights.

    Loads with ``weights_only=True``; nothing is unpickled but tensors.
    """
    from cnngraph.models import read_checkpoint

    state, _ = read_checkpoint(path)
    recipe = read_recipe(path)
    try:
        spec = ModelSpec.from_dict(recipe["spec"])
        removed = [int(k) for k in recipe["removed"]]
        strategy = str(recipe["strategy"])
        shape = [int(s) for s in recipe["input_shape"]]
        # version 1 recipes predate units: their convolutions are all chain units
        units = [(str(u["kind"]), [int(k) for k in u["convolutions"]]) for u in recipe.get("units", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"the recipe of '{path}' is incomplete ({e}); prune again") from e
    original = build_model(spec)
    original.eval()
    pruned = remove_convolutions(original, torch.zeros(shape), removed, strategy)
    if "units" in recipe and units != [(u.kind, list(u.convs)) for u in pruned.units]:
        raise ModelError(
            f"the recipe of '{path}' names other units than the rebuilt model has; "
            "the architecture changed since pruning, prune again"
        )
    load_weights(pruned.module, state, str(path))
    pruned.module.eval()
    return pruned.module
