"""From node scores to the layers to keep (METHOD.md section 5), and two baselines.

``select_layers`` applies the paper's rule: threshold ``th = gamma * stat(delta)`` over all nodes,
selected nodes ``delta > th``, and a layer rule (``any``: kept when at least one node is selected;
``fraction:q``: kept when at least a fraction ``q`` of its nodes is). ``random_layers`` and
``weight_norm_layers`` remove a given number of layers without looking at the graph, for
comparison. Every result is a :class:`LayerSelection` with one row per convolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ConfigError
from cnngraph.scores import NodeScores

THRESHOLD_STATS = ("mean", "median")
SELECT_METHODS = ("entropy", "random", "weight-norm")


@dataclass(frozen=True)
class LayerRow:
    """One convolution: its nodes, how many were selected, its delta statistics, the verdict."""

    layer: int
    name: str
    nodes: int
    selected: int
    mean: float
    min: float
    max: float
    kept: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "name": self.name,
            "nodes": self.nodes,
            "selected": self.selected,
            "mean_delta": _json_float(self.mean),
            "min_delta": _json_float(self.min),
            "max_delta": _json_float(self.max),
            "kept": self.kept,
        }


@dataclass(frozen=True)
class LayerSelection:
    """The verdict for every convolution, how it was reached, and the threshold (if any)."""

    rows: tuple[LayerRow, ...]
    method: str  # entropy (score-based, whatever the aggregator), random or weight-norm
    threshold: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(r.layer for r in self.rows if r.kept)

    @property
    def removed(self) -> tuple[int, ...]:
        return tuple(r.layer for r in self.rows if not r.kept)

    @property
    def num_layers(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": None if self.threshold is None else _json_float(self.threshold),
            "options": dict(self.options),
            "kept": list(self.kept),
            "removed": list(self.removed),
            "layers": [r.to_dict() for r in self.rows],
        }


def parse_layer_rule(rule: str) -> float | None:
    """``any`` -> None; ``fraction:q`` -> q in (0, 1]; anything else is a :class:`ConfigError`."""
    if rule == "any":
        return None
    if rule.startswith("fraction:"):
        try:
            q = float(rule.split(":", 1)[1])
        except ValueError:
            q = math.nan
        if 0.0 < q <= 1.0:
            return q
    raise ConfigError(
        f"bad layer rule '{rule}'; use 'any' or 'fraction:q' with 0 < q <= 1 (e.g. fraction:0.1)"
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


def select_layers(
    scores: NodeScores,
    gamma: float,
    *,
    aggregator: str = "entropy",
    threshold_stat: str = "mean",
    layer_rule: str = "any",
) -> LayerSelection:
    """Keep or remove each layer by how many of its nodes score above ``gamma * stat(delta)``."""
    q = parse_layer_rule(layer_rule)
    delta = np.asarray(scores.get(aggregator), dtype=np.float64)
    th = threshold(delta, gamma, threshold_stat)
    m = scores.num_layers
    nodes = np.bincount(scores.layer, minlength=m)
    selected = np.bincount(scores.layer, weights=(delta > th).astype(np.float64), minlength=m).astype(
        np.int64
    )
    kept = selected > 0 if q is None else selected >= q * nodes
    rows = _rows(scores, delta, selected, kept)
    options = {
        "gamma": gamma,
        "threshold_stat": threshold_stat,
        "layer_rule": layer_rule,
        "aggregator": aggregator,
    }
    return LayerSelection(rows=rows, method="entropy", threshold=th, options=options)


def _rows(
    scores: NodeScores, delta: np.ndarray, selected: np.ndarray, kept: np.ndarray
) -> tuple[LayerRow, ...]:
    m = scores.num_layers
    nodes = np.bincount(scores.layer, minlength=m)
    sums = np.bincount(scores.layer, weights=delta, minlength=m)
    mins = np.full(m, np.inf)
    maxs = np.full(m, -np.inf)
    np.minimum.at(mins, scores.layer, delta)
    np.maximum.at(maxs, scores.layer, delta)
    means = np.divide(sums, nodes, out=np.full(m, np.nan), where=nodes > 0)
    return tuple(
        LayerRow(
            layer=k,
            name=_name(scores.layer_names, k),
            nodes=int(nodes[k]),
            selected=int(selected[k]),
            mean=float(means[k]),
            min=float(mins[k]) if nodes[k] else math.nan,
            max=float(maxs[k]) if nodes[k] else math.nan,
            kept=bool(kept[k]),
        )
        for k in range(m)
    )


def random_layers(num_layers: int, n_remove: int, seed: int, names: tuple[str, ...] = ()) -> LayerSelection:
    """Remove ``n_remove`` of ``num_layers`` convolutions chosen uniformly at random (seeded)."""
    _check_count(num_layers, n_remove)
    removed = np.random.default_rng(seed).choice(num_layers, size=n_remove, replace=False)
    kept = np.ones(num_layers, dtype=bool)
    kept[removed] = False
    options = {"n_remove": n_remove, "seed": seed}
    return LayerSelection(rows=_blank_rows(kept, names), method="random", options=options)


def weight_norm_layers(model: nn.Module, n_remove: int) -> LayerSelection:
    """Remove the ``n_remove`` convolutions whose weights have the smallest mean absolute value.

    The L1 norm of each convolution's weight tensor is divided by its number of elements (the
    L1 norm *per parameter*), so wide and narrow layers compare fairly. Ties go to the earlier
    layer. Convolutions are numbered in execution order, as everywhere else.
    """
    from cnngraph.pruner.surgery import conv_names

    names = tuple(conv_names(model))
    _check_count(len(names), n_remove)
    with torch.no_grad():
        norms = np.array([_mean_abs(model.get_submodule(n)) for n in names], dtype=np.float64)
    order = np.argsort(norms, kind="stable")
    kept = np.ones(len(names), dtype=bool)
    kept[order[:n_remove]] = False
    options = {"n_remove": n_remove, "l1_per_parameter": [float(v) for v in norms]}
    return LayerSelection(rows=_blank_rows(kept, names), method="weight-norm", options=options)


def _mean_abs(module: nn.Module) -> float:
    weight = module.weight  # type: ignore[union-attr]
    assert isinstance(weight, torch.Tensor)
    return float(weight.detach().abs().mean())


def _check_count(num_layers: int, n_remove: int) -> None:
    if not 0 <= n_remove <= num_layers:
        raise ConfigError(f"cannot remove {n_remove} of {num_layers} convolutions; give 0..{num_layers}")


def _blank_rows(kept: np.ndarray, names: tuple[str, ...]) -> tuple[LayerRow, ...]:
    return tuple(
        LayerRow(k, _name(names, k), 0, 0, math.nan, math.nan, math.nan, bool(kept[k]))
        for k in range(kept.size)
    )


def annotate(selection: LayerSelection, scores: NodeScores, aggregator: str = "entropy") -> LayerSelection:
    """``selection`` with node counts and delta statistics from ``scores`` (for the baselines)."""
    delta = np.asarray(scores.get(aggregator), dtype=np.float64)
    if scores.num_layers != selection.num_layers:
        raise ConfigError(
            f"the scores cover {scores.num_layers} layers but the selection {selection.num_layers}; "
            "map the same model that is pruned"
        )
    kept = np.array([r.kept for r in selection.rows], dtype=bool)
    rows = _rows(scores, delta, np.zeros(kept.size, dtype=np.int64), kept)
    names = [r.name or s.name for r, s in zip(selection.rows, rows, strict=True)]
    return replace(selection, rows=tuple(replace(r, name=n) for r, n in zip(rows, names, strict=True)))


def _name(names: tuple[str, ...] | list[str], k: int) -> str:
    return names[k] if k < len(names) else f"conv{k}"


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
