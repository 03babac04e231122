"""PNG plots (matplotlib, Agg backend): delta heat maps, the per-unit bar chart, the gamma sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cnngraph.pruner.select import UnitSelection, parse_layer_rule
from cnngraph.scores import NodeScores

KEPT_COLOUR = "#2b8cbe"
REMOVED_COLOUR = "#e34a33"
FIXED_COLOUR = "#999999"  # not removable


def delta_grids(scores: NodeScores, aggregator: str = "entropy") -> list[np.ndarray]:
    """Each layer's ``delta`` as an ``[H, W]`` array (positions without a score are NaN)."""
    delta = scores.get(aggregator)
    grids = []
    for k in range(scores.num_layers):
        mask = scores.layer == k
        i, j = scores.i[mask], scores.j[mask]
        grid = np.full((int(i.max()) + 1, int(j.max()) + 1) if i.size else (1, 1), np.nan)
        grid[i, j] = delta[mask]
        grids.append(grid)
    return grids


def plot_delta_heatmaps(
    scores: NodeScores, selection: UnitSelection, path: str | Path, aggregator: str = "entropy"
) -> Path:
    """One panel per layer: its ``delta`` over the H x W grid, kept or removed in the title."""
    grids = delta_grids(scores, aggregator)
    cols = min(4, max(1, len(grids)))
    rows = math.ceil(len(grids) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.zeros(1)
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(grids):
            ax.axis("off")
            continue
        row = selection.row_of(k)
        image = ax.imshow(grids[k], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        name = row.conv_names[row.convs.index(k)]
        ax.set_title(f"c{k} {name}: {row.verdict()}", fontsize=9, color=_colour(row.removable, row.kept))
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=f"delta ({aggregator})")
    fig.suptitle(f"Node scores per layer ({scores.model or 'model'})")
    return _save(fig, path)


def decision_bars(selection: UnitSelection) -> tuple[np.ndarray, float | None, str]:
    """``(bar per unit, line, what they show)``: what decided each unit under the layer rule.

    Under ``fraction:q`` the bar is the share of the unit's nodes that are selected and the line
    is ``q``; under ``any`` the bar is the unit's largest delta and the line the threshold (a unit
    is kept when one node lies above it); under ``mean`` the bar is the unit's mean delta.
    """
    rule = str(selection.options.get("layer_rule", "any"))
    q = parse_layer_rule(rule)
    if rule == "mean":
        return np.array([r.mean for r in selection.rows], dtype=np.float64), selection.threshold, "mean delta"
    if q is not None:
        return np.array([r.share for r in selection.rows], dtype=np.float64), q, "share of nodes selected"
    return np.array([r.max for r in selection.rows], dtype=np.float64), selection.threshold, "max delta"


def plot_layers(selection: UnitSelection, path: str | Path) -> Path:
    """One bar per unit showing what decided it (:func:`decision_bars`), coloured kept / removed /
    not removable."""
    rows = selection.rows
    values, line, ylabel = decision_bars(selection)
    if line is None:
        line_label = ""
    else:
        line_label = f"q = {line:g}" if ylabel.startswith("share") else f"threshold {line:.4g}"
    colours = [_colour(r.removable, r.kept) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    ax.bar(x, np.nan_to_num(values), color=colours)
    if line is not None:
        ax.axhline(line, color="black", linestyle="--", linewidth=1, label=line_label)
    if not ylabel.startswith("share"):
        _zoom(ax, values, line)
    ax.set_xticks(x, [f"u{r.unit}" for r in rows], rotation=90 if len(rows) > 20 else 0)
    ax.set_xlabel("unit (execution order)")
    ax.set_ylabel(ylabel)
    for colour, label in (
        (KEPT_COLOUR, "kept"),
        (REMOVED_COLOUR, "removed"),
        (FIXED_COLOUR, "not removable"),
    ):
        ax.bar([0], [0], color=colour, label=label)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Units kept and removed ({selection.method})")
    return _save(fig, path)


def _colour(removable: bool, kept: bool) -> str:
    return FIXED_COLOUR if not removable else (KEPT_COLOUR if kept else REMOVED_COLOUR)


def _zoom(ax: plt.Axes, bars: np.ndarray, threshold: float | None) -> None:
    """Zoom the y axis in when all bars are high and close together (entropies near ln t)."""
    values = bars[np.isfinite(bars)].tolist() + ([threshold] if threshold is not None else [])
    if not values:
        return
    lo, hi = min(values), max(values)
    if lo > 0 and hi - lo < 0.5 * hi:
        pad = max(0.15 * (hi - lo), 1e-3 * hi)
        ax.set_ylim(lo - pad, hi + pad)


def plot_sweep(
    gammas: Sequence[float],
    removed: Sequence[int],
    path: str | Path,
    accuracy: Sequence[float | None] | None = None,
) -> Path:
    """Units removed against gamma, and accuracy after a short fine-tune when given."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.step(gammas, removed, where="mid", color=REMOVED_COLOUR, label="units removed")
    ax.set_xlabel("gamma")
    ax.set_ylabel("units removed", color=REMOVED_COLOUR)
    if accuracy is not None and any(a is not None for a in accuracy):
        twin = ax.twinx()
        acc = [np.nan if a is None else 100.0 * a for a in accuracy]
        twin.plot(gammas, acc, "o-", color=KEPT_COLOUR, label="accuracy")
        twin.set_ylabel("top-1 accuracy %", color=KEPT_COLOUR)
    ax.set_title("Units removed vs gamma")
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
