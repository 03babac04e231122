"""Nodes, arcs and arc-weight nodes of the multilayer network (docs/METHOD.md sections 1, 3 and 8).

All index arithmetic is per axis and vectorised: the arcs of one path between two layers are
the Cartesian product of its row pairs ``(p, i)`` and column pairs ``(q, j)``, so no Python code
ever runs per arc. Where two paths of one pair have different geometry (say one through a
pooling), their arcs are united, so an arc exists once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.mapping import geometry as geo
from cnngraph.mapping.feeds import Feed, PathGeometry
from cnngraph.mapping.network import LayerInfo, Topology
from cnngraph.mapping.trace import TracedModel, trace_model

if TYPE_CHECKING:
    from cnngraph.models import ModelSpec


def assemble_topology(layers: Sequence[LayerInfo], feeds: Sequence[Feed]) -> Topology:
    """The topology of ``layers`` (``c_1 .. c_M``) joined by ``feeds`` (any order; sorted here)."""
    feeds = sorted(feeds, key=lambda f: (f.src, f.dst))
    sizes = np.array([layer.nodes for layer in layers], dtype=np.int64)
    node_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    srcs: list[np.ndarray] = []
    dsts: list[np.ndarray] = []
    weight_nodes: list[np.ndarray] = []
    for feed in feeds:
        src, dst, wn = pair_arcs(layers[feed.src], layers[feed.dst], feed)
        srcs.append(src + node_offsets[feed.src])
        dsts.append(dst + node_offsets[feed.dst])
        weight_nodes.append(wn + node_offsets[feed.dst])
    empty = np.zeros(0, dtype=np.int64)
    counts = np.array([s.shape[0] for s in srcs], dtype=np.int64)
    wcounts = np.array([w.shape[0] for w in weight_nodes], dtype=np.int64)
    return Topology(
        layers=tuple(layers),
        node_offsets=node_offsets,
        arc_src=np.concatenate(srcs) if srcs else empty,
        arc_dst=np.concatenate(dsts) if dsts else empty,
        arc_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        edge_src=np.array([f.src for f in feeds], dtype=np.int64),
        edge_dst=np.array([f.dst for f in feeds], dtype=np.int64),
        edge_via=tuple(f.via for f in feeds),
        weight_offsets=np.concatenate([[0], np.cumsum(wcounts)]).astype(np.int64),
        pair_weight_node=np.concatenate(weight_nodes) if weight_nodes else empty,
    )


def topology_for_model(model: nn.Module, input_shape: tuple[int, int, int]) -> Topology:
    """Trace ``model`` and build its topology for inputs of shape ``(C, H, W)``."""
    traced = trace_model(model, input_shape)
    return assemble_topology(traced.layers, traced.feeds)


@dataclass(frozen=True)
class ModelTopology:
    """A model's topology found without images or weights, and what it took."""

    traced: TracedModel
    topology: Topology
    seconds: float  # trace (fx, shapes on meta tensors, feeds) + assemble_topology


@contextmanager
def weights_on_meta() -> Iterator[None]:
    """Models built inside keep their parameters and buffers on the meta device (no memory).

    Each tensor moves to meta as the module registers it, so a model larger than the memory
    can still be built one layer at a time; whatever the constructor computes stays real.
    """
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        if tensor is not None and not tensor.is_meta:
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent)

    nn.Module.register_parameter = parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def model_topology(spec: ModelSpec) -> ModelTopology:
    """The topology of the model ``spec`` names, for its ``input_size`` and ``in_channels``, built
    with its weights on the meta device: no images, no weights, no forward pass."""
    from cnngraph.models import build_model

    with weights_on_meta():
        model = build_model(spec)
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    start = time.perf_counter()
    traced = trace_model(model, shape)
    topology = assemble_topology(traced.layers, traced.feeds)
    return ModelTopology(traced, topology, time.perf_counter() - start)


def topology_summary(topology: Topology) -> dict[str, Any]:
    """Totals, one row per layer (filters, size, nodes, arcs out and in) and the layer pairs."""
    counts = np.diff(topology.arc_offsets)
    m = len(topology.layers)
    arcs_out = np.bincount(topology.edge_src, weights=counts, minlength=m).astype(np.int64)
    arcs_in = np.bincount(topology.edge_dst, weights=counts, minlength=m).astype(np.int64)
    layers = [
        {
            "layer": k, "name": layer.name, "filters": layer.filters, "height": layer.height,
            "width": layer.width, "nodes": layer.nodes, "arcs_out": int(arcs_out[k]),
            "arcs_in": int(arcs_in[k]),
        }
        for k, layer in enumerate(topology.layers)
    ]  # fmt: skip
    return {
        "layers_count": m,
        "nodes": topology.num_nodes,
        "arcs_per_class": topology.num_arcs,
        "layer_pairs": topology.num_edges,
        "layers": layers,
        "edges": topology.edges(),
    }


def pair_arcs(source: LayerInfo, target: LayerInfo, feed: Feed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local ``(src, dst)`` arcs of one feed and ``pi`` of each source node (ids ``i * width + j``)."""
    parts = [_product(p, source.width, target.width) for p in feed.paths]
    if len(parts) == 1:
        src, dst = parts[0]
    else:  # unite the paths' arcs: sort by (dst, src) keys, drop repeats
        key = np.unique(np.concatenate([d * source.nodes + s for s, d in parts]))
        src, dst = key % source.nodes, key // source.nodes
    path = feed.weight_path
    pi_rows, pi_cols = geo.nearest_target(path.rows), geo.nearest_target(path.cols)
    weight_node = (pi_rows[:, None] * target.width + pi_cols[None, :]).ravel()
    return src, dst, weight_node


def _product(path: PathGeometry, source_width: int, target_width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = path.rows, path.cols
    src = (rows.source[:, None] * source_width + cols.source[None, :]).ravel()
    dst = (rows.target[:, None] * target_width + cols.target[None, :]).ravel()
    return src, dst


# ------------------------------------------------------------------ chains of synthetic layers
def chain_feeds(layers: Sequence[LayerInfo], links: Sequence[Sequence[geo.AxisPool | object]]) -> list[Feed]:
    """Feeds of a VGG-style chain: ``c_k`` feeds ``c_{k+1}`` through the poolings ``links[k]``.

    Each link item is a pair of :class:`~cnngraph.mapping.geometry.AxisPool` (rows, cols) or any
    object with ``rows`` and ``cols`` attributes. Sizes are checked against the layers.
    """
    if len(links) != max(len(layers) - 1, 0):
        raise ModelError(f"{len(layers)} layers need {max(len(layers) - 1, 0)} links, got {len(links)}")
    feeds = []
    for k, link in enumerate(links):
        source, target = layers[k], layers[k + 1]
        axes = []
        for axis in (0, 1):
            pools = [op[axis] if isinstance(op, tuple) else (op.rows, op.cols)[axis] for op in link]  # type: ignore[attr-defined]
            size = source.height if axis == 0 else source.width
            m = geo.identity(size)
            for pool in pools:
                m = geo.through_taps(m, pool.as_taps(), pool.out_size(m.size))
            conv = geo.AxisConv(
                target.kernel[axis], target.stride[axis], target.padding[axis], target.dilation[axis],
                target.padding_mode,
            )  # fmt: skip
            out = target.height if axis == 0 else target.width
            if geo.conv_out_size(conv, m.size) != out:
                raise ModelError(
                    f"'{target.name}' has {out} positions along axis {axis} but its geometry from "
                    f"'{source.name}' gives {geo.conv_out_size(conv, m.size)}; an operation between them "
                    "changes the size in a way cnngraph cannot follow"
                )
            axes.append(geo.through_taps(m, conv, out))
        via = frozenset({"pool"}) if link else frozenset()
        feeds.append(Feed(k, k + 1, "pool" if link else "direct", (PathGeometry(axes[0], axes[1], via),)))
    return feeds


def build_topology(layers: Sequence[LayerInfo], links: Sequence[Sequence[object]]) -> Topology:
    """The topology of a chain of ``layers`` joined through ``links`` (the poolings per pair)."""
    return assemble_topology(layers, chain_feeds(layers, links))
