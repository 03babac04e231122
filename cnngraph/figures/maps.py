"""Maps over the positions of a layer: ``delta`` of every convolution, and one layer's per-class degrees.

Both draw each layer as its H x W grid of positions on one shared colour scale, so that panels
compare; the pruner's :func:`cnngraph.pruner.plots.delta_grids` turns scores into grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnngraph.errors import ConfigError
from cnngraph.figures.data import FigureData, LayerBox
from cnngraph.figures.output import new_figure, save
from cnngraph.pruner.plots import FIXED_COLOUR, KEPT_COLOUR, REMOVED_COLOUR, delta_grids
from cnngraph.pruner.select import UnitSelection

VERDICT_COLOURS = {"kept": KEPT_COLOUR, "removed": REMOVED_COLOUR, "not removable": FIXED_COLOUR}


@dataclass(frozen=True)
class Panels:
    """A saved figure of panels: where it is and what each panel shows."""

    path: Path
    titles: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.titles)


def grid_shape(n: int, aspect: float = 1.6) -> tuple[int, int]:
    """``(rows, cols)`` for ``n`` panels, about ``aspect`` times wider than tall."""
    cols = max(1, min(n, math.ceil(math.sqrt(n * aspect))))
    return math.ceil(n / cols), cols


SCALES = ("rank", "linear")


def plot_delta_maps(
    data: FigureData,
    path: str | Path,
    selection: UnitSelection | None = None,
    aggregator: str = "entropy",
    scale: str = "rank",
) -> Panels:
    """One panel per convolution: its ``delta`` over the H x W grid on one shared colour scale,
    titled with the layer's index and name and, with a selection, its unit's verdict.

    ``scale``: ``rank`` (default) gives each of 64 colours an equal share of all positions, so the
    small differences of entropies that all lie near ln t still show (the colour bar is marked in
    delta); ``linear`` spreads the colours evenly from the lowest to the highest delta."""
    from matplotlib.colors import BoundaryNorm, Normalize

    if scale not in SCALES:
        raise ConfigError(f"unknown scale '{scale}'; use {' or '.join(SCALES)}")
    grids = delta_grids(data.scores, aggregator)
    rows, cols = grid_shape(len(grids))
    side = 1.75 if len(grids) > 20 else 2.3
    fig = new_figure(figsize=(side * cols + 1.2, side * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    finite = [g[np.isfinite(g)] for g in grids]
    values = np.concatenate(finite) if finite else np.zeros(0)
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if vmax <= vmin:
        vmin, vmax = vmin - 1e-9, vmax + 1e-9
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, 65))) if values.size else np.zeros(0)
    norm: Normalize = (
        BoundaryNorm(edges, 256) if scale == "rank" and edges.size > 2 else Normalize(vmin=vmin, vmax=vmax)
    )
    image = None
    titles = []
    for k, ax in enumerate(axes.flat):
        if k >= len(grids):
            fig.delaxes(ax)
            continue
        layer = data.layers[k]
        image = ax.imshow(grids[k], cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_gid(f"panel-c{k}")
        title = f"c{k} {layer.name}"
        colour = "black"
        if selection is not None:
            row = selection.row_of(k)
            title += f"\n{row.verdict()}"
            colour = VERDICT_COLOURS[row.verdict()]
        else:
            title += f"\n{layer.height}x{layer.width}"
        ax.set_title(title, fontsize=7.5 if len(grids) > 20 else 9, color=colour, pad=3)
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(1.5 if selection is not None else 0.6)
        titles.append(title)
    if image is not None:
        bar = fig.colorbar(image, ax=[a for a in axes.flat if a.figure is fig], shrink=0.6, pad=0.02)
        t = max(len(data.class_names), 1)
        spread = "each colour 1/64 of all positions" if isinstance(norm, BoundaryNorm) else "linear"
        bar.set_label(f"delta ({aggregator}; {spread}); ln {t} = {math.log(t):.4f}: shared evenly")
        if isinstance(norm, BoundaryNorm):
            bar.set_ticks([float(v) for v in edges[:: max(1, edges.size // 8)]])
            bar.ax.yaxis.set_major_formatter("{x:.5g}")
        bar.ax.set_gid("colorbar")
    what = f"delta per position, model {data.model} ({len(grids)} convolutions, one colour scale)"
    if selection is not None:
        what += f"\n{_selection_text(selection)}".replace(":\n", ": ")
    fig.suptitle(what, fontsize=11)
    return Panels(save(fig, path), tuple(titles))


def plot_class_degrees(data: FigureData, layer: int, path: str | Path) -> Panels:
    """For one layer, each class network's degree of every position (in + out, absolute as the
    score reads it), side by side on one shared colour scale: where each class's weight sits."""
    box = data.layer(layer)
    nodes, i, j, signed = data.degrees()
    total = np.abs(signed)  # |d^h|, as the score reads it (responses before an add can be negative)
    mask = nodes == layer
    t = total.shape[0]
    names = data.class_names if len(data.class_names) == t else [str(h) for h in range(t)]
    grids = []
    for h in range(t):
        grid = np.full((box.height, box.width), np.nan)
        grid[i[mask], j[mask]] = total[h, mask]
        grids.append(grid)
    rows, cols = grid_shape(t, aspect=3.0 if t <= 12 else 1.6)
    side = 2.0 if t <= 12 else 1.5
    fig = new_figure(figsize=(side * cols + 1.2, side * rows + 1.0))
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(np.nanmax(total[:, mask])) if mask.any() else 1.0
    image = None
    titles = []
    for h, ax in enumerate(axes.flat):
        if h >= t:
            fig.delaxes(ax)
            continue
        image = ax.imshow(grids[h], cmap="magma", vmin=0.0, vmax=vmax or 1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_gid(f"panel-class{h}")
        share = float(total[h, mask].sum() / total[:, mask].sum()) if total[:, mask].sum() > 0 else math.nan
        title = (
            f"class {h}"
            + (f" {names[h]}" if names[h] != str(h) else "")
            + f"\n{100 * share:.1f}% of the weight"
        )
        ax.set_title(title, fontsize=8.5, pad=3)
        titles.append(title)
    if image is not None:
        bar = fig.colorbar(image, ax=[a for a in axes.flat if a.figure is fig], shrink=0.7, pad=0.02)
        bar.set_label("|degree| in the class network (in + out)")
        bar.ax.set_gid("colorbar")
    fig.suptitle(
        f"Per-class degree of each position of c{layer} {box.name} ({box.height}x{box.width}), model "
        f"{data.model}, one colour scale",
        fontsize=11,
    )
    return Panels(save(fig, path), tuple(titles))


def _selection_text(selection: UnitSelection) -> str:
    options = selection.options
    parts = [f"{k} {options[k]:g}" if isinstance(options.get(k), float) else f"{k} {options[k]}"
             for k in ("gamma", "layer_rule", "threshold_stat") if k in options]  # fmt: skip
    th = "" if selection.threshold is None else f", threshold {selection.threshold:.5g}"
    removed = len(selection.removed_units)
    return (
        f"{selection.method} selection ({', '.join(parts)}{th}):\n{removed} of {selection.num_removable} "
        "removable units removed"
    )


def layer_names(layers: Sequence[LayerBox]) -> list[str]:
    return [layer.name for layer in layers]
