"""The layer DAG as a layered diagram: convolutions left to right in execution order, one arrow per
``FEEDS`` pair labelled by its ``via``, skip edges as arcs, units coloured by the pruner's verdict.

Two engines, the same picture: Graphviz ``dot`` through the ``graphviz`` package when the ``dot``
program is installed (Debian: ``apt install graphviz``), else a layered layout of our own drawn
with matplotlib. Each box is one convolution and each arrow one ``FEEDS`` pair; in the SVG every
box is an element with id ``node_c<k>`` and every arrow one with id ``edge_c<src>_c<dst>``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnngraph.errors import ConfigError
from cnngraph.figures.data import FigureData, LayerBox
from cnngraph.figures.output import figure_format, new_figure, save
from cnngraph.files import write_bytes
from cnngraph.pruner.plots import FIXED_COLOUR, KEPT_COLOUR, REMOVED_COLOUR
from cnngraph.pruner.select import UnitSelection
from cnngraph.pruner.units import NOT_REMOVABLE, RESIDUAL

ENGINES = ("auto", "graphviz", "layered")
GRAPHVIZ_MAX_LAYERS = 32
"""``auto`` draws deeper models with the layered layout: Graphviz cannot turn node labels, so its
drawing of ResNet-56 (57 convolutions) is about 10,000 px wide, the layered one 3,200 px."""
REMOVABLE_COLOUR = "#9ecae1"  # without a selection: removable, verdict not asked for
VIA_COLOURS = {"direct": "#333333", "add": "#1f5fa8", "cat": "#2a9d3a", "pool": "#d9730d"}
OTHER_VIA_COLOUR = "#8a4fb0"


@dataclass(frozen=True)
class DagFigure:
    """A drawn layer DAG: the file, the engine, one box per convolution, one arrow per FEEDS pair."""

    path: Path
    engine: str
    boxes: tuple[int, ...]
    arrows: tuple[tuple[int, int, str], ...]


def ranks(num_layers: int, feeds: Sequence[tuple[int, int, str]]) -> list[int]:
    """Each layer's column: the longest path to it from a layer nothing feeds (execution order is a
    topological order, so one pass in index order suffices)."""
    rank = [0] * num_layers
    for src, dst, _ in sorted(feeds, key=lambda f: (f[1], f[0])):
        rank[dst] = max(rank[dst], rank[src] + 1)
    return rank


def verdicts(data: FigureData, selection: UnitSelection | None) -> dict[int, str]:
    """Convolution -> ``kept``, ``removed`` or ``not removable`` (with a selection); else
    ``removable`` or ``not removable`` from the units."""
    if selection is not None:
        return {k: row.verdict() for row in selection.rows for k in row.convs}
    return {
        k: ("not removable" if u.kind == NOT_REMOVABLE else "removable") for u in data.units for k in u.convs
    }


FILLS = {
    "kept": KEPT_COLOUR,
    "removed": REMOVED_COLOUR,
    "not removable": FIXED_COLOUR,
    "removable": REMOVABLE_COLOUR,
}
TEXT = {"kept": "#FFFFFF", "removed": "#FFFFFF", "not removable": "#111111", "removable": "#111111"}


def via_colour(via: str) -> str:
    return VIA_COLOURS.get(via, OTHER_VIA_COLOUR)


def plot_layer_dag(
    data: FigureData, path: str | Path, selection: UnitSelection | None = None, engine: str = "auto"
) -> DagFigure:
    """Draw ``data``'s layer DAG to ``path`` (.png or .svg) with ``engine`` (``auto``: Graphviz when
    ``dot`` is installed and the model has at most :data:`GRAPHVIZ_MAX_LAYERS` convolutions, else
    the layered layout)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}'; use {', '.join(ENGINES)}")
    path = Path(path)
    figure_format(path)
    if engine == "graphviz" and not graphviz_available():
        raise ConfigError(
            "Graphviz's 'dot' is not installed (Debian: apt install graphviz); use --engine layered"
        )
    if engine == "graphviz" or (
        engine == "auto" and len(data.layers) <= GRAPHVIZ_MAX_LAYERS and graphviz_available()
    ):
        return _graphviz(data, path, selection)
    return _layered(data, path, selection)


def graphviz_available() -> bool:
    """The ``graphviz`` package and its ``dot`` program are both there."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _title(data: FigureData, selection: UnitSelection | None) -> str:
    what = f"Layer DAG of {data.model}: {len(data.layers)} convolutions, {len(data.feeds)} FEEDS pairs"
    if selection is not None:
        what += f"; {len(selection.removed_units)} of {selection.num_removable} removable units removed"
    return what


def _legend_items(data: FigureData, selection: UnitSelection | None) -> list[tuple[str, str]]:
    keys = ["kept", "removed", "not removable"] if selection is not None else ["removable", "not removable"]
    return [(k, FILLS[k]) for k in keys]


def _vias(data: FigureData) -> list[str]:
    return sorted({via for _, _, via in data.feeds}, key=lambda v: (v != "direct", v))


# ----------------------------------------------------------------------------------------- Graphviz
def _graphviz(data: FigureData, path: Path, selection: UnitSelection | None) -> DagFigure:
    import graphviz

    fmt = figure_format(path)
    rank = ranks(len(data.layers), data.feeds)
    verdict = verdicts(data, selection)
    legend = "".join(
        f'<TD BGCOLOR="{fill}"><FONT COLOR="{TEXT[name]}"> {name} </FONT></TD>'
        for name, fill in _legend_items(data, selection)
    )
    vias = "".join(f'<TD><FONT COLOR="{via_colour(v)}">&#8594; {_html(v)}</FONT></TD>' for v in _vias(data))
    title = _html(_title(data, selection))
    label = (
        f'<<TABLE BORDER="0" CELLSPACING="3"><TR><TD COLSPAN="12"><FONT POINT-SIZE="13">{title}</FONT>'
        f"</TD></TR><TR>{legend}<TD> </TD>{vias}<TD>(arrows: FEEDS, labelled by via)</TD></TR></TABLE>>"
    )
    graph = graphviz.Digraph(
        name="layers",
        graph_attr={
            "rankdir": "LR",
            "ranksep": "0.28",
            "nodesep": "0.12",
            "splines": "spline",
            "forcelabels": "true",
            "fontname": "Helvetica",
            "label": label,
            "labelloc": "t",
            "dpi": "110",
            "pad": "0.2",
        },
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fontname": "Helvetica",
            "fontsize": "9",
            "margin": "0.05,0.03",
            "penwidth": "0.8",
        },
        edge_attr={"fontname": "Helvetica", "fontsize": "7", "arrowsize": "0.55"},
    )
    clustered = {k for u in data.units if u.kind == RESIDUAL for k in u.convs}
    for unit in data.units:
        if unit.kind != RESIDUAL:
            continue
        with graph.subgraph(name=f"cluster_u{unit.index}") as cluster:
            cluster.attr(label=f"u{unit.index} {unit.name}", style="dashed,rounded", color="#888888",
                         fontsize="8", fontname="Helvetica", margin="6")  # fmt: skip
            for k in unit.convs:
                _gv_node(cluster, data.layers[k], verdict[k])
    for layer in data.layers:
        if layer.index not in clustered:
            _gv_node(graph, layer, verdict[layer.index])
    for src, dst, via in data.feeds:
        span = rank[dst] - rank[src]
        graph.edge(
            f"c{src}",
            f"c{dst}",
            id=f"edge_c{src}_c{dst}",
            label=via if span == 1 else "",
            xlabel=via if span != 1 else "",
            color=via_colour(via) + ("" if span == 1 else "b0"),
            fontcolor=via_colour(via),
            constraint="true" if span == 1 else "false",
            penwidth="1.2" if span == 1 else "0.8",
        )
    write_bytes(path, graph.pipe(format=fmt))
    return DagFigure(path, "graphviz", tuple(layer.index for layer in data.layers), tuple(data.feeds))


def _gv_node(graph: object, layer: LayerBox, verdict: str) -> None:
    graph.node(  # type: ignore[attr-defined]
        f"c{layer.index}",
        label=f"c{layer.index}\n{layer.name}\n{layer.height}x{layer.width}",
        id=f"node_c{layer.index}",
        fillcolor=FILLS[verdict],
        fontcolor=TEXT[verdict],
        tooltip=f"c{layer.index} {layer.name}: {verdict}",
    )


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ----------------------------------------------------------------------------- our layered layout
def _layered(data: FigureData, path: Path, selection: UnitSelection | None) -> DagFigure:
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    n = len(data.layers)
    rank = ranks(n, data.feeds)
    slots: dict[int, list[int]] = {}
    for k in range(n):
        slots.setdefault(rank[k], []).append(k)
    x = np.array([float(rank[k]) for k in range(n)])
    y = np.zeros(n)
    for members in slots.values():
        for s, k in enumerate(members):
            y[k] = -1.6 * s
    depth = max(len(m) for m in slots.values()) if slots else 1
    columns = (max(rank) + 1) if n else 1
    verdict = verdicts(data, selection)
    width = max(8.0, 0.5 * columns + 1.5)
    height = 3.6 + 1.3 * depth
    fig = new_figure(figsize=(width, height))
    ax = fig.add_subplot()
    ax.set_gid("dag")
    box_w, box_h = 0.36, 1.1
    for k, layer in enumerate(data.layers):
        patch = FancyBboxPatch(
            (x[k] - box_w / 2, y[k] - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
            facecolor=FILLS[verdict[k]], edgecolor="#333333", linewidth=0.8, zorder=3,
        )  # fmt: skip
        patch.set_gid(f"node_c{k}")
        ax.add_patch(patch)
        ax.text(x[k], y[k] + box_h / 2 - 0.04, f"c{k}", ha="center", va="top", fontsize=6.5,
                color=TEXT[verdict[k]], zorder=4, fontweight="bold")  # fmt: skip
        ax.text(x[k], y[k] - 0.1, layer.name, ha="center", va="center", rotation=90, fontsize=6,
                color=TEXT[verdict[k]], zorder=4)  # fmt: skip
    top = 0.0
    arrows = []
    for src, dst, via in data.feeds:
        span = rank[dst] - rank[src]
        straight = span == 1 and abs(y[src] - y[dst]) < 1e-9
        a = (x[src] + box_w / 2, y[src]) if straight else (x[src], y[src] + box_h / 2)
        b = (x[dst] - box_w / 2, y[dst]) if straight else (x[dst], y[dst] + box_h / 2)
        rad = 0.0 if straight else min(0.55, 0.22 + 0.035 * span)
        arrow = FancyArrowPatch(
            a, b, connectionstyle=f"arc3,rad={-rad}", arrowstyle="-|>", mutation_scale=7,
            color=via_colour(via), linewidth=1.1 if straight else 0.7, alpha=1.0 if straight else 0.75,
            zorder=2,
        )  # fmt: skip
        arrow.set_gid(f"edge_c{src}_c{dst}")
        ax.add_patch(arrow)
        arrows.append((src, dst, via))
        mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        dist = abs(b[0] - a[0])
        apex = mid[1] + rad * dist / 2
        top = max(top, apex)
        ax.text(mid[0], apex + (0.06 if not straight else 0.12), via, ha="center", va="bottom", fontsize=5.5,
                color=via_colour(via), zorder=5)  # fmt: skip
    ax.set_xlim(-0.8, columns - 0.2)
    ax.set_ylim(min(y) - box_h, max(box_h, top + 0.6))
    ax.axis("off")
    handles: list[Artist] = [
        Patch(facecolor=fill, edgecolor="#333333", label=name)
        for name, fill in _legend_items(data, selection)
    ]
    handles += [Line2D([0], [0], color=via_colour(v), label=f"via {v}") for v in _vias(data)]
    ax.legend(handles=handles, loc="lower left", fontsize=7, ncol=len(handles), frameon=False,
              bbox_to_anchor=(0.0, -0.08))  # fmt: skip
    ax.set_title(_title(data, selection) + " (arrows: FEEDS, labelled by via)", fontsize=10)
    return DagFigure(save(fig, path), "layered", tuple(range(n)), tuple(arrows))
