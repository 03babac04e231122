"""Pictures of where class-specific information lives (``cnngraph plot``): maps of ``delta`` per
layer, one layer's per-class degrees, the layer DAG, and each unit's delta against the threshold.

Data come from Neo4j (:func:`from_neo4j`) or from a mapping file and its scores
(:func:`from_mapping`); a selection from ``cnngraph prune --dry-run --json`` (:func:`read_selection`)
or computed with the pruner's rule (:func:`select`). Every figure is PNG or SVG by its suffix.
"""

from __future__ import annotations

from cnngraph.figures.bars import plot_unit_deltas
from cnngraph.figures.dag import DagFigure, graphviz_available, plot_layer_dag
from cnngraph.figures.data import FigureData, LayerBox, from_mapping, from_neo4j, read_selection, select
from cnngraph.figures.maps import Panels, plot_class_degrees, plot_delta_maps

__all__ = [
    "DagFigure",
    "FigureData",
    "LayerBox",
    "Panels",
    "from_mapping",
    "from_neo4j",
    "graphviz_available",
    "plot_class_degrees",
    "plot_delta_maps",
    "plot_layer_dag",
    "plot_unit_deltas",
    "read_selection",
    "select",
]
