"""A per-layer summary of a mapping, for ``cnngraph inspect`` and ``cnngraph map``."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnngraph.mapping.network import MultilayerNetwork


def layer_summary(network: MultilayerNetwork, descriptor: str = "mean") -> list[dict[str, Any]]:
    """One row per layer: name, filters, size, nodes, arcs out and in, the layers it feeds and is fed by,
    node value stats.

    ``arcs_out`` counts the arcs leaving the layer towards every layer it feeds (``arcs_to_next``
    is the same number, kept for chains); the statistics run over every node of the layer in
    every class network.
    """
    topo = network.topology
    values = network.values(descriptor)
    counts = np.diff(topo.arc_offsets)
    m = len(topo.layers)
    arcs_out = np.bincount(topo.edge_src, weights=counts, minlength=m).astype(np.int64)
    arcs_in = np.bincount(topo.edge_dst, weights=counts, minlength=m).astype(np.int64)
    rows = []
    for k, layer in enumerate(topo.layers):
        v = values[:, topo.node_offsets[k] : topo.node_offsets[k + 1]]
        rows.append(
            {
                "layer": k,
                "name": layer.name,
                "filters": layer.filters,
                "height": layer.height,
                "width": layer.width,
                "nodes": layer.nodes,
                "arcs_out": int(arcs_out[k]),
                "arcs_in": int(arcs_in[k]),
                "arcs_to_next": int(arcs_out[k]),
                "feeds": topo.edge_dst[topo.edge_src == k].tolist(),
                "fed_by": topo.edge_src[topo.edge_dst == k].tolist(),
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
        "edges": network.topology.edges(),
        "classes": [
            {"name": name, "images": int(n)}
            for name, n in zip(network.class_names, np.asarray(network.images_per_class), strict=True)
        ],
        "options": network.options,
        "model": network.model,
    }
