"""From node scores to the units to keep (docs/METHOD.md sections 5 and 8), and three baselines.

:func:`select_units` applies the paper's rule: threshold ``th = gamma * stat(delta)`` over all
nodes (removable or not), selected nodes ``delta > th``, and a layer rule applied to each
removable unit over the union of its convolutions' nodes (``any``: kept when at least one node is
selected; ``fraction:q``: kept when at least a fraction ``q`` of them is; ``mean``: kept when the
unit's mean delta is above the threshold). Units that are not removable are always kept.
:func:`gamma_for_count` gives the gamma at which a rule removes a chosen number of units.
:func:`random_units`, :func:`weight_norm_units` and :func:`last_units` remove a given number of
removable units without looking at the graph, for comparison.

Every result is a :class:`UnitSelection` with one row per unit. For a VGG-style model every
convolution is a chain unit, so :func:`select_layers` (every convolution a chain unit) and the
``*_layers`` baselines give the per-layer selection of docs/METHOD.md section 5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ConfigError, counted
from cnngraph.pruner.units import NOT_REMOVABLE, Unit, chain_units
from cnngraph.scores import NodeScores

THRESHOLD_STATS = ("mean", "median")
SELECT_METHODS = ("entropy", "random", "weight-norm", "last")


@dataclass(frozen=True)
class UnitRow:
    """One unit: its convolutions, nodes, selected nodes, delta statistics and the verdict.

    ``kept`` is always True for a unit that is not removable (``reason`` says why).
    """

    unit: int
    kind: str
    name: str
    convs: tuple[int, ...]
    conv_names: tuple[str, ...]
    nodes: int
    selected: int
    mean: float
    min: float
    max: float
    kept: bool
    reason: str = ""

    @property
    def removable(self) -> bool:
        return self.kind != NOT_REMOVABLE

    @property
    def share(self) -> float:
        """The fraction of the unit's nodes that are selected (NaN without nodes)."""
        return self.selected / self.nodes if self.nodes else math.nan

    def verdict(self) -> str:
        return "not removable" if not self.removable else ("kept" if self.kept else "removed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "kind": self.kind,
            "name": self.name,
            "convolutions": list(self.convs),
            "convolution_names": list(self.conv_names),
            "nodes": self.nodes,
            "selected": self.selected,
            "mean_delta": _json_float(self.mean),
            "min_delta": _json_float(self.min),
            "max_delta": _json_float(self.max),
            "kept": self.kept,
            "reason": self.reason or None,
        }


@dataclass(frozen=True)
class UnitSelection:
    """The verdict for every unit, how it was reached, and the threshold (if any).

    ``kept`` and ``removed`` are *convolution* indices (what surgery takes); ``kept_units`` and
    ``removed_units`` are unit indices.
    """

    rows: tuple[UnitRow, ...]
    method: str  # entropy (score-based, whatever the aggregator), random, weight-norm or last
    threshold: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(sorted(k for r in self.rows if r.kept for k in r.convs))

    @property
    def removed(self) -> tuple[int, ...]:
        return tuple(sorted(k for r in self.rows if not r.kept for k in r.convs))

    @property
    def kept_units(self) -> tuple[int, ...]:
        return tuple(r.unit for r in self.rows if r.kept)

    @property
    def removed_units(self) -> tuple[int, ...]:
        return tuple(r.unit for r in self.rows if not r.kept)

    @property
    def num_layers(self) -> int:
        return sum(len(r.convs) for r in self.rows)

    @property
    def num_removable(self) -> int:
        return sum(r.removable for r in self.rows)

    def row_of(self, conv: int) -> UnitRow:
        """The row of the unit holding convolution ``conv``."""
        return next(r for r in self.rows if conv in r.convs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": None if self.threshold is None else _json_float(self.threshold),
            "options": dict(self.options),
            "kept": list(self.kept),
            "removed": list(self.removed),
            "removed_units": list(self.removed_units),
            "units": [r.to_dict() for r in self.rows],
        }


LayerSelection = UnitSelection  # the name from before units; a VGG-style model's units are its layers


def parse_layer_rule(rule: str) -> float | None:
    """``any`` and ``mean`` -> None; ``fraction:q`` -> q in (0, 1]; else a :class:`ConfigError`."""
    if rule in ("any", "mean"):
        return None
    if rule.startswith("fraction:"):
        try:
            q = float(rule.split(":", 1)[1])
        except ValueError:
            q = math.nan
        if 0.0 < q <= 1.0:
            return q
    raise ConfigError(
        f"bad layer rule '{rule}'; use 'any', 'mean' or 'fraction:q' with 0 < q <= 1 (e.g. fraction:0.1)"
    )


def threshold(delta: np.ndarray, gamma: float, stat: str = "mean") -> float:
    """``gamma * stat(delta)`` over all nodes."""
    if not gamma >= 0.0 or not math.isfinite(gamma):
        raise ConfigError(f"gamma must be a finite number >= 0, got {gamma}")
    if stat not in THRESHOLD_STATS:
        raise ConfigError(f"unknown threshold statistic '{stat}'; use mean or median")
    if delta.size == 0:
        raise ConfigError("no node scores to select from; score the model first")
    centre = float(np.mean(delta)) if stat == "mean" else float(np.median(delta))
    return gamma * centre


def select_units(
    scores: NodeScores,
    units: Sequence[Unit],
    gamma: float,
    *,
    aggregator: str = "entropy",
    threshold_stat: str = "mean",
    layer_rule: str = "any",
) -> UnitSelection:
    """Keep or remove each removable unit by how many of its nodes score above ``gamma * stat(delta)``."""
    q = parse_layer_rule(layer_rule)
    delta = np.asarray(scores.get(aggregator), dtype=np.float64)
    th = threshold(delta, gamma, threshold_stat)
    unit_of = _unit_of_node(scores, units)
    n = len(units)
    nodes = np.bincount(unit_of, minlength=n)
    selected = np.bincount(unit_of, weights=(delta > th).astype(np.float64), minlength=n).astype(np.int64)
    if layer_rule == "mean":
        sums = np.bincount(unit_of, weights=delta, minlength=n)
        kept = np.divide(sums, nodes, out=np.full(n, -np.inf), where=nodes > 0) > th
    else:
        kept = selected > 0 if q is None else selected >= q * nodes
    kept |= np.array([not u.removable for u in units], dtype=bool)
    rows = _rows(units, unit_of, delta, selected, kept)
    options = {
        "gamma": gamma,
        "threshold_stat": threshold_stat,
        "layer_rule": layer_rule,
        "aggregator": aggregator,
    }
    return UnitSelection(rows=rows, method="entropy", threshold=th, options=options)


def critical_thresholds(
    scores: NodeScores, units: Sequence[Unit], *, aggregator: str = "entropy", layer_rule: str = "any"
) -> np.ndarray:
    """Per unit, the threshold from which ``layer_rule`` removes it: a removable unit goes exactly
    when ``gamma * stat(delta) >=`` its value (NaN for a unit without nodes).

    ``any``: the unit's largest delta; ``fraction:q``: its ``ceil(q * nodes)``-th largest (fewer
    than that many nodes lie above the threshold); ``mean``: its mean delta.
    """
    q = parse_layer_rule(layer_rule)
    delta = np.asarray(scores.get(aggregator), dtype=np.float64)
    unit_of = _unit_of_node(scores, units)
    order = np.lexsort((-delta, unit_of))  # by unit, largest delta first
    starts = np.searchsorted(unit_of[order], np.arange(len(units)))
    nodes = np.bincount(unit_of, minlength=len(units))
    out = np.full(len(units), np.nan)
    for u in range(len(units)):
        if nodes[u] == 0:
            continue
        d = delta[order[starts[u] : starts[u] + nodes[u]]]
        if layer_rule == "mean":
            out[u] = d.mean()
        else:
            out[u] = d[0] if q is None else d[max(1, math.ceil(q * d.size - 1e-9)) - 1]
    return out


def gamma_for_count(
    scores: NodeScores,
    units: Sequence[Unit],
    n_remove: int,
    *,
    aggregator: str = "entropy",
    threshold_stat: str = "mean",
    layer_rule: str = "any",
) -> float:
    """A gamma at which :func:`select_units` removes ``n_remove`` removable units: the threshold
    halfway between the n-th and (n+1)-th smallest :func:`critical_thresholds`, over ``stat(delta)``.

    When units tie at that boundary no gamma removes exactly ``n_remove``; this one then removes
    every tied unit, so check the selection's count.
    """
    candidates = _removable(units, n_remove)
    crit = np.sort(
        critical_thresholds(scores, units, aggregator=aggregator, layer_rule=layer_rule)[candidates]
    )
    crit = crit[np.isfinite(crit)]
    delta = np.asarray(scores.get(aggregator), dtype=np.float64)
    centre = threshold(delta, 1.0, threshold_stat)
    if not centre > 0:
        raise ConfigError(f"the {threshold_stat} of delta is {centre}; no gamma scales a threshold from it")
    if crit.size == 0 or n_remove == 0:
        return float(crit[0]) / 2.0 / centre if crit.size else 0.0
    lower = crit[min(n_remove, crit.size) - 1]
    upper = crit[n_remove] if n_remove < crit.size else lower * 1.01 + 1e-12
    return float((lower + upper) / 2.0) / centre


def select_layers(
    scores: NodeScores,
    gamma: float,
    *,
    aggregator: str = "entropy",
    threshold_stat: str = "mean",
    layer_rule: str = "any",
) -> UnitSelection:
    """:func:`select_units` with every convolution a chain unit (docs/METHOD.md section 5, VGG-style)."""
    units = chain_units(_names(scores.layer_names, scores.num_layers))
    return select_units(
        scores, units, gamma, aggregator=aggregator, threshold_stat=threshold_stat, layer_rule=layer_rule
    )


def _unit_of_node(scores: NodeScores, units: Sequence[Unit]) -> np.ndarray:
    """The unit index of every node, from its convolution index."""
    m = sum(len(u.convs) for u in units)
    if scores.num_layers != m:
        raise ConfigError(
            f"the scores cover {counted(scores.num_layers, 'layer')} but the model has "
            f"{counted(m, 'convolution')}; "
            "map the same model that is pruned"
        )
    lookup = np.empty(m, dtype=np.int64)
    for u, unit in enumerate(units):
        lookup[list(unit.convs)] = u
    return lookup[scores.layer]


def _rows(
    units: Sequence[Unit], unit_of: np.ndarray, delta: np.ndarray, selected: np.ndarray, kept: np.ndarray
) -> tuple[UnitRow, ...]:
    n = len(units)
    nodes = np.bincount(unit_of, minlength=n)
    sums = np.bincount(unit_of, weights=delta, minlength=n)
    mins = np.full(n, np.inf)
    maxs = np.full(n, -np.inf)
    np.minimum.at(mins, unit_of, delta)
    np.maximum.at(maxs, unit_of, delta)
    means = np.divide(sums, nodes, out=np.full(n, np.nan), where=nodes > 0)
    return tuple(
        UnitRow(
            unit=u,
            kind=unit.kind,
            name=unit.name,
            convs=unit.convs,
            conv_names=unit.conv_names,
            nodes=int(nodes[u]),
            selected=int(selected[u]),
            mean=float(means[u]),
            min=float(mins[u]) if nodes[u] else math.nan,
            max=float(maxs[u]) if nodes[u] else math.nan,
            kept=bool(kept[u]),
            reason=unit.reason,
        )
        for u, unit in enumerate(units)
    )


def random_units(units: Sequence[Unit], n_remove: int, seed: int) -> UnitSelection:
    """Remove ``n_remove`` removable units chosen uniformly at random (seeded)."""
    candidates = _removable(units, n_remove)
    chosen = np.random.default_rng(seed).choice(len(candidates), size=n_remove, replace=False)
    removed = {candidates[int(c)] for c in chosen}
    options = {"n_remove": n_remove, "seed": seed}
    return UnitSelection(rows=_blank_rows(units, removed), method="random", options=options)


def weight_norm_units(model: nn.Module, units: Sequence[Unit], n_remove: int) -> UnitSelection:
    """Remove the ``n_remove`` removable units whose weights have the smallest mean absolute value.

    The L1 norm of a unit's convolution weights is divided by their number of elements (the L1
    norm *per parameter*), so wide and narrow units compare fairly. Ties go to the earlier unit.
    """
    candidates = _removable(units, n_remove)
    with torch.no_grad():
        norms = np.array([_unit_mean_abs(model, units[u]) for u in candidates], dtype=np.float64)
    order = np.argsort(norms, kind="stable")
    removed = {candidates[int(i)] for i in order[:n_remove]}
    options = {"n_remove": n_remove, "candidates": candidates, "l1_per_parameter": [float(v) for v in norms]}
    return UnitSelection(rows=_blank_rows(units, removed), method="weight-norm", options=options)


def last_units(units: Sequence[Unit], n_remove: int) -> UnitSelection:
    """Remove the ``n_remove`` deepest removable units (those whose convolutions run last)."""
    candidates = _removable(units, n_remove)
    deepest = sorted(candidates, key=lambda u: max(units[u].convs))
    removed = set(deepest[len(deepest) - n_remove :])
    return UnitSelection(rows=_blank_rows(units, removed), method="last", options={"n_remove": n_remove})


def random_layers(num_layers: int, n_remove: int, seed: int, names: tuple[str, ...] = ()) -> UnitSelection:
    """:func:`random_units` with every one of ``num_layers`` convolutions a chain unit."""
    return random_units(chain_units(_names(names, num_layers)), n_remove, seed)


def weight_norm_layers(model: nn.Module, n_remove: int) -> UnitSelection:
    """:func:`weight_norm_units` with every convolution of ``model`` a chain unit."""
    from cnngraph.pruner.units import conv_names

    return weight_norm_units(model, chain_units(conv_names(model)), n_remove)


def _unit_mean_abs(model: nn.Module, unit: Unit) -> float:
    weights = [model.get_submodule(name).weight for name in unit.conv_names]
    total = sum(float(w.detach().abs().sum()) for w in weights if isinstance(w, torch.Tensor))
    count = sum(w.numel() for w in weights if isinstance(w, torch.Tensor))
    return total / count if count else 0.0


def _removable(units: Sequence[Unit], n_remove: int) -> list[int]:
    candidates = [u.index for u in units if u.removable]
    if not 0 <= n_remove <= len(candidates):
        raise ConfigError(
            f"cannot remove {n_remove} of {len(candidates)} removable units; give 0..{len(candidates)}"
        )
    return candidates


def _blank_rows(units: Sequence[Unit], removed: set[int]) -> tuple[UnitRow, ...]:
    nan = math.nan
    return tuple(
        UnitRow(
            u.index,
            u.kind,
            u.name,
            u.convs,
            u.conv_names,
            0,
            0,
            nan,
            nan,
            nan,
            u.index not in removed,
            u.reason,
        )
        for u in units
    )


def annotate(
    selection: UnitSelection, scores: NodeScores, aggregator: str = "entropy", threshold: float | None = None
) -> UnitSelection:
    """``selection`` with node counts and delta statistics from ``scores`` (for the baselines);
    with ``threshold`` the selected nodes are counted too."""
    delta = np.asarray(scores.get(aggregator), dtype=np.float64)
    units = [Unit(r.unit, r.kind, r.convs, r.conv_names, r.name, reason=r.reason) for r in selection.rows]
    unit_of = _unit_of_node(scores, units)
    hits = (delta > threshold) if threshold is not None else np.zeros(delta.size, dtype=bool)
    selected = np.bincount(unit_of, weights=hits.astype(np.float64), minlength=len(units)).astype(np.int64)
    kept = np.array([r.kept for r in selection.rows], dtype=bool)
    return replace(selection, rows=_rows(units, unit_of, delta, selected, kept))


def _names(names: tuple[str, ...] | list[str], count: int) -> list[str]:
    return [_name(names, k) for k in range(count)]


def _name(names: tuple[str, ...] | list[str], k: int) -> str:
    return names[k] if k < len(names) else f"conv{k}"


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
