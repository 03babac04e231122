"""A per-layer summary of a mapping, for ``cnngraph inspect`` and ``cnngraph map``."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnngraph.mapping.network import MultilayerNetwork


def layer_summary(network: MultilayerNetwork, descriptor: str = "mean") -> list[dict[str, Any]]:
    """One row per layer: name, filters, size, nodes, arcs to the next layer, node value stats.

    The statistics run over every node of the layer in every class network.
    """
    topo = network.topology
    values = network.values(descriptor)
    rows = []
    for k, layer in enumerate(topo.layers):
        v = values[:, topo.node_offsets[k] : topo.node_offsets[k + 1]]
        arcs = int(topo.arc_offsets[k + 1] - topo.arc_offsets[k]) if k + 1 < len(topo.arc_offsets) else 0
        rows.append(
            {
                "layer": k,
                "name": layer.name,
                "filters": layer.filters,
                "height": layer.height,
                "width": layer.width,
                "nodes": layer.nodes,
                "arcs_to_next": arcs,
                "mean_value": float(v.mean()) if v.size else 0.0,
                "min_value": float(v.min()) if v.size else 0.0,
                "max_value": float(v.max()) if v.size else 0.0,
            }
        )
    return rows


def network_summary(network: MultilayerNetwork, descriptor: str = "mean") -> dict[str, Any]:
    """Everything ``inspect --json`` prints: totals, layers, classes, options and the model."""
    return {
        "nodes": network.topology.num_nodes,
        "arcs_per_class": network.topology.num_arcs,
        "descriptor": descriptor,
        "layers": layer_summary(network, descriptor),
        "classes": [
            {"name": name, "images": int(n)}
            for name, n in zip(network.class_names, np.asarray(network.images_per_class), strict=True)
        ],
        "options": network.options,
        "model": network.model,
    }
