"""Figures as files: matplotlib's object API (no pyplot state), PNG or SVG by the file's suffix,
written to a temporary name and renamed, so a figure is whole or absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnngraph.errors import ConfigError
from cnngraph.files import atomic_path

FORMATS = ("png", "svg")
DPI = 110


def new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_format(path: Path) -> str:
    """``png`` or ``svg`` from the suffix; anything else is refused."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"'{path}': give a file name ending in .png or .svg")
    return fmt


def save(fig: Figure, path: str | Path, **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` atomically; the folder is created when missing."""
    path = Path(path)
    fmt = figure_format(path)
    # SVG keeps its text as text (searchable, selectable), not as outlines.
    with atomic_path(path) as partial, matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(partial, format=fmt, dpi=DPI, **kwargs)
    return path
