"""PNG plots (matplotlib, Agg backend): delta heat maps, the per-layer bar chart, the gamma sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cnngraph.pruner.select import LayerSelection
from cnngraph.scores import NodeScores

KEPT_COLOUR = "#2b8cbe"
REMOVED_COLOUR = "#e34a33"


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
    scores: NodeScores, selection: LayerSelection, path: str | Path, aggregator: str = "entropy"
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
        row = selection.rows[k]
        image = ax.imshow(grids[k], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        verdict = "kept" if row.kept else "removed"
        ax.set_title(
            f"c{k} {row.name}: {verdict}", fontsize=9, color=KEPT_COLOUR if row.kept else REMOVED_COLOUR
        )
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label=f"delta ({aggregator})")
    fig.suptitle(f"Node scores per layer ({scores.model or 'model'})")
    return _save(fig, path)


def plot_layers(selection: LayerSelection, path: str | Path) -> Path:
    """Bars of each layer's mean delta, coloured kept/removed, with the threshold line."""
    means = np.array([r.mean for r in selection.rows], dtype=np.float64)
    colours = [KEPT_COLOUR if r.kept else REMOVED_COLOUR for r in selection.rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(means) + 2), 3.8))
    x = np.arange(len(means))
    ax.bar(x, np.nan_to_num(means), color=colours)
    if selection.threshold is not None:
        ax.axhline(
            selection.threshold,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"threshold {selection.threshold:.4g}",
        )
    _zoom(ax, means, selection.threshold)
    ax.set_xticks(x, [f"c{k}" for k in x])
    ax.set_xlabel("convolution (execution order)")
    ax.set_ylabel("mean delta")
    ax.bar([0], [0], color=KEPT_COLOUR, label="kept")
    ax.bar([0], [0], color=REMOVED_COLOUR, label="removed")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Layers kept and removed ({selection.method})")
    return _save(fig, path)


def _zoom(ax: plt.Axes, means: np.ndarray, threshold: float | None) -> None:
    """Zoom the y axis in when all bars are high and close together (entropies near ln t)."""
    values = means[np.isfinite(means)].tolist() + ([threshold] if threshold is not None else [])
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
    """Layers removed against gamma, and accuracy after a short fine-tune when given."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    ax.step(gammas, removed, where="mid", color=REMOVED_COLOUR, label="layers removed")
    ax.set_xlabel("gamma")
    ax.set_ylabel("layers removed", color=REMOVED_COLOUR)
    if accuracy is not None and any(a is not None for a in accuracy):
        twin = ax.twinx()
        acc = [np.nan if a is None else 100.0 * a for a in accuracy]
        twin.plot(gammas, acc, "o-", color=KEPT_COLOUR, label="accuracy")
        twin.set_ylabel("top-1 accuracy %", color=KEPT_COLOUR)
    ax.set_title("Layers removed vs gamma")
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
