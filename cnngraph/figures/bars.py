"""Per-unit delta against the threshold: each unit's mean delta with its min-max range, coloured by
the pruner's verdict, the selection's threshold as a line (the units the rule removes are those
whose deciding value lies under it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnngraph.figures.maps import VERDICT_COLOURS, Panels, _selection_text
from cnngraph.figures.output import new_figure, save
from cnngraph.pruner.plots import _zoom, decision_bars
from cnngraph.pruner.select import UnitSelection


def plot_unit_deltas(selection: UnitSelection, path: str | Path, model: str = "") -> Panels:
    """Two panels over the units (execution order), coloured by verdict: each unit's mean delta
    with a bar from its min to its max against the threshold; below, zoomed in, the value that
    decided it (:func:`cnngraph.pruner.plots.decision_bars`: the max under ``any``, the mean under
    ``mean``, the share of selected nodes under ``fraction:q``) against its line."""
    rows = selection.rows
    x = np.arange(len(rows))
    mean = np.array([r.mean for r in rows], dtype=np.float64)
    low = np.array([r.min for r in rows], dtype=np.float64)
    high = np.array([r.max for r in rows], dtype=np.float64)
    colours = [VERDICT_COLOURS[r.verdict()] for r in rows]
    width = max(7.5, 0.3 * len(rows) + 2.5)
    fig = new_figure(figsize=(width, 7.2))
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    ax, decided = axes
    ax.set_gid("panel-delta")
    ax.vlines(x, low, high, colors=colours, linewidth=3.0, alpha=0.55, label="min to max delta")
    ax.scatter(x, mean, c=colours, s=26, zorder=3, edgecolors="black", linewidths=0.4, label="mean delta")
    if selection.threshold is not None:
        ax.axhline(selection.threshold, color="black", linestyle="--", linewidth=1,
                   label=f"threshold {selection.threshold:.5g}")  # fmt: skip
    _zoom(ax, np.concatenate([low, high]), selection.threshold)
    ax.set_ylabel(f"delta ({selection.options.get('aggregator', 'entropy')})")
    for colour, label in ((VERDICT_COLOURS["kept"], "kept"), (VERDICT_COLOURS["removed"], "removed"),
                          (VERDICT_COLOURS["not removable"], "not removable")):  # fmt: skip
        ax.scatter([], [], c=colour, s=26, edgecolors="black", linewidths=0.4, label=label)
    ax.legend(loc="lower right", fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(
        f"Delta per unit{' of ' + model if model else ''}\n{_selection_text(selection)}", fontsize=9.5
    )

    values, line, what = decision_bars(selection)
    decided.set_gid("panel-decision")
    decided.scatter(x, values, c=colours, s=30, marker="s", edgecolors="black", linewidths=0.4, zorder=3)
    decided.vlines(
        x, np.nanmin(values) if np.isfinite(values).any() else 0.0, values, colors=colours, linewidth=1
    )
    if line is not None:
        label = f"q = {line:g}" if what.startswith("share") else f"threshold {line:.6g}"
        decided.axhline(line, color="black", linestyle="--", linewidth=1, label=label)
        decided.legend(loc="best", fontsize=7)
    if not what.startswith("share"):
        _zoom(decided, values, line)
    rule = str(selection.options.get("layer_rule", "any"))
    decided.set_ylabel(what)
    decided.set_title(f"What decided each unit under rule '{rule}' (zoomed): a removable unit stays "
                      "when it is above the line", fontsize=9)  # fmt: skip
    decided.grid(axis="y", alpha=0.3)
    decided.set_xticks(x, [f"u{r.unit} {r.name}" for r in rows], rotation=90, fontsize=7)
    decided.set_xlabel("unit (execution order)")
    return Panels(save(fig, path), ("delta per unit", what))
