"""Nodes, arcs and arc-weight nodes of the multilayer network (METHOD.md sections 1 and 3).

All index arithmetic is per axis and vectorised: the arcs of a pair of layers are the Cartesian
product of the row pairs ``(p, i)`` and the column pairs ``(q, j)`` of the windows, so no Python
code ever runs per arc.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.mapping import geometry as geo
from cnngraph.mapping.network import LayerInfo, Topology
from cnngraph.mapping.trace import PoolOp, trace_model


def build_topology(layers: Sequence[LayerInfo], links: Sequence[Sequence[PoolOp]]) -> Topology:
    """The topology of ``layers`` (``c_1 .. c_M``) joined through ``links`` (the poolings per pair)."""
    if len(links) != max(len(layers) - 1, 0):
        raise ModelError(f"{len(layers)} layers need {max(len(layers) - 1, 0)} links, got {len(links)}")
    sizes = np.array([layer.nodes for layer in layers], dtype=np.int64)
    node_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    srcs: list[np.ndarray] = []
    dsts: list[np.ndarray] = []
    weight_node = np.full(int(node_offsets[-1]), -1, dtype=np.int64)
    for k, link in enumerate(links):
        src, dst, wn = pair_arcs(layers[k], layers[k + 1], link)
        srcs.append(src + node_offsets[k])
        dsts.append(dst + node_offsets[k + 1])
        weight_node[node_offsets[k] : node_offsets[k + 1]] = wn + node_offsets[k + 1]
    counts = np.array([s.shape[0] for s in srcs], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    return Topology(
        layers=tuple(layers),
        node_offsets=node_offsets,
        arc_src=np.concatenate(srcs) if srcs else empty,
        arc_dst=np.concatenate(dsts) if dsts else empty,
        arc_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        weight_node=weight_node,
    )


def topology_for_model(model: nn.Module, input_shape: tuple[int, int, int]) -> Topology:
    """Trace ``model`` and build its topology for inputs of shape ``(C, H, W)``."""
    traced = trace_model(model, input_shape)
    return build_topology(traced.layers, traced.links)


def pair_arcs(
    source: LayerInfo, target: LayerInfo, link: Sequence[PoolOp]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local ``(src, dst)`` arcs from ``source`` to ``target`` and the weight node of each source node.

    Ids are local to each layer (``i * width + j``); the caller adds the node offsets.
    """
    rows_p, rows_i, pi_rows = _axis(source, target, [op.rows for op in link], axis=0)
    cols_q, cols_j, pi_cols = _axis(source, target, [op.cols for op in link], axis=1)
    src = (rows_i[:, None] * source.width + cols_j[None, :]).ravel()
    dst = (rows_p[:, None] * target.width + cols_q[None, :]).ravel()
    weight_node = (pi_rows[:, None] * target.width + pi_cols[None, :]).ravel()
    return src, dst, weight_node


def _axis(
    source: LayerInfo, target: LayerInfo, pools: list[geo.AxisPool], axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target/source index pairs of the windows and ``pi`` along one axis."""
    src_size = source.height if axis == 0 else source.width
    out_size = target.height if axis == 0 else target.width
    conv = geo.AxisConv(target.kernel[axis], target.stride[axis], target.padding[axis], target.dilation[axis])
    in_size = geo.input_sizes(src_size, pools)[-1]
    if geo.conv_out_size(conv, in_size) != out_size:
        raise ModelError(
            f"'{target.name}' has {out_size} positions along axis {axis} but its geometry from "
            f"'{source.name}' gives {geo.conv_out_size(conv, in_size)}; an operation between them "
            "changes the size in a way cnngraph cannot follow"
        )
    lo, hi = geo.windows(conv, out_size, src_size, pools)
    target_idx, source_idx = geo.pairs(lo, hi)
    pi = geo.nearest_target(geo.centre(conv, pools), src_size, out_size)
    return target_idx, source_idx, pi
