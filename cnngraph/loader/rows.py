"""Pure functions that turn a slice of the network into column-oriented query parameters.

Each batch is a few flat lists (one per property) rather than a list of maps: less to encode,
and the Cypher indexes them with ``UNWIND range(0, size($src) - 1) AS k``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from cnngraph.mapping.network import DESCRIPTORS, MultilayerNetwork


def checksum(network: MultilayerNetwork) -> str:
    """A digest of everything the graph stores: a resumed load proves it continues the same mapping."""
    digest = hashlib.blake2b(digest_size=16)
    topo = network.topology
    meta = {
        "layers": [layer.to_dict() for layer in topo.layers],
        "class_names": list(network.class_names),
        "options": network.options,
        "model": network.model,
    }
    meta["edge_via"] = list(topo.edge_via)
    arrays = [topo.node_offsets, topo.arc_src, topo.arc_dst, topo.arc_offsets, topo.edge_src, topo.edge_dst]
    arrays += [topo.weight_offsets, topo.pair_weight_node]
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    arrays.append(np.asarray(network.images_per_class))
    arrays += [network.node_values[d] for d in sorted(network.node_values)]
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(str((contiguous.dtype.str, contiguous.shape)).encode())
        digest.update(contiguous.data)
    return digest.hexdigest()


def stored_descriptors(network: MultilayerNetwork) -> list[str]:
    """The descriptors that become ARC properties: every one the mapping has (docs/METHOD.md section 9)."""
    return network.descriptors


def model_properties(
    network: MultilayerNetwork, model: str, digest: str, layout: str = "per-class"
) -> dict[str, Any]:
    """Properties of the ``:Model`` node: what the model is, how it was mapped, how its arcs are
    stored (``layout``), load progress."""
    description = network.model
    descriptors = stored_descriptors(network)
    descriptor = str(network.options.get("descriptor", descriptors[0] if descriptors else "mean"))
    return {
        "id": model,
        "name": model,
        "architecture": architecture(description),
        "input_shape": [int(x) for x in description.get("input_shape", [])],
        "class_names": [str(c) for c in network.class_names],
        "options": json.dumps(network.options, sort_keys=True, default=str),
        "description": json.dumps(description, sort_keys=True, default=str),
        "descriptor": descriptor,
        "descriptors": descriptors,
        "response": str(network.options.get("response", "activation")),
        "num_layers": len(network.layers),
        "num_nodes": network.topology.num_nodes,
        "num_arcs": network.topology.num_arcs,
        "num_classes": network.num_classes,
        "num_relationships": network.topology.num_arcs * (1 if layout == "compact" else network.num_classes),
        "layout": layout,
        "checksum": digest,
        "status": "loading",
        "nodes_loaded": 0,
        "arcs_loaded": 0,
    }


def architecture(description: dict[str, Any]) -> str:
    """The model's source (``vgg16``, ``torchvision:resnet18``) as the mapping recorded it, else its class."""
    spec = description.get("spec")
    source = spec.get("source") if isinstance(spec, dict) else None
    return str(description.get("architecture") or source or description.get("class") or "unknown")


def layer_rows(network: MultilayerNetwork) -> list[dict[str, Any]]:
    """One map per ``:Layer`` node (a handful, so maps are fine here)."""
    return [
        {
            "index": layer.index,
            "name": layer.name,
            "filters": layer.filters,
            "height": layer.height,
            "width": layer.width,
            "kernel": list(layer.kernel),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "dilation": list(layer.dilation),
            "nodes": layer.nodes,
        }
        for layer in network.layers
    ]


def feed_rows(network: MultilayerNetwork) -> list[dict[str, Any]]:
    """One map per ``(:Layer)-[:FEEDS]->(:Layer)`` of the layer DAG: ``src``, ``dst``, ``via``, ``arcs``."""
    return network.topology.edges()


def class_rows(network: MultilayerNetwork) -> list[dict[str, Any]]:
    """One map per ``:Class`` node: its index (the class layer), name and images used."""
    images = np.asarray(network.images_per_class).tolist()
    return [
        {"index": h, "name": str(name), "images": int(images[h]) if h < len(images) else 0}
        for h, name in enumerate(network.class_names)
    ]


def position_batch(network: MultilayerNetwork, start: int, stop: int) -> dict[str, list[int]]:
    """Columns ``nid``, ``layer``, ``i``, ``j`` of the nodes ``start .. stop-1``."""
    layer, i, j = _positions(network, start, stop)
    return {
        "nid": np.arange(start, stop, dtype=np.int64).tolist(),
        "layer": layer.tolist(),
        "i": i.tolist(),
        "j": j.tolist(),
    }


def _positions(
    network: MultilayerNetwork, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    topo = network.topology
    nid = np.arange(start, stop, dtype=np.int64)
    layer = np.searchsorted(topo.node_offsets, nid, side="right") - 1
    widths = np.array([lay.width for lay in topo.layers], dtype=np.int64)[layer]
    local = nid - topo.node_offsets[layer]
    return layer.astype(np.int64), local // widths, local % widths


def arc_batch(network: MultilayerNetwork, start: int, stop: int) -> dict[str, Any]:
    """Columns of the arcs ``start .. stop-1``: ``src``, ``dst`` and per descriptor a flat [arc, class] list.

    A descriptor the mapping lacks is sent as ``null``, so the relationship simply has no such property.
    """
    topo = network.topology
    arcs = slice(start, stop)
    params: dict[str, Any] = {
        "src": topo.arc_src[arcs].tolist(),
        "dst": topo.arc_dst[arcs].tolist(),
        "classes": network.num_classes,
    }
    for descriptor in DESCRIPTORS:
        key = f"w_{descriptor}"
        if descriptor in network.node_values:
            weights = network.weights(descriptor, arcs=arcs)  # [t, E']
            params[key] = weights.T.astype(np.float64).ravel().tolist()
        else:
            params[key] = None
    return params


def compact_arc_batch(network: MultilayerNetwork, start: int, stop: int) -> dict[str, Any]:
    """:func:`arc_batch` plus the nid ranges ``src_lo..src_hi``, ``dst_lo..dst_hi`` that its arcs join
    (the compact statement reads each range with one index seek)."""
    params = arc_batch(network, start, stop)
    topo = network.topology
    for end, column in (("src", topo.arc_src[start:stop]), ("dst", topo.arc_dst[start:stop])):
        params[f"{end}_lo"] = int(column.min()) if column.size else 0
        params[f"{end}_hi"] = int(column.max()) if column.size else -1
    return params
