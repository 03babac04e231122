"""Reference degrees and node scores, straight from the arrays (docs/METHOD.md sections 4 and 8).

This is the oracle that the Cypher queries must reproduce: every arc of the layer DAG, in and
out, weighted per fed layer; ``|d^h|`` when the responses can be negative (``response = conv``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnngraph.errors import ConfigError
from cnngraph.mapping.network import MultilayerNetwork

AGGREGATORS = ("entropy", "mean", "participation")


@dataclass(frozen=True)
class Degrees:
    """Weighted in- and out-degrees of every node in every class network, float64 [t, N]."""

    indegree: np.ndarray
    outdegree: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.indegree + self.outdegree


def degrees(network: MultilayerNetwork, descriptor: str = "mean", chunk: int = 4_000_000) -> Degrees:
    """``d^h`` split into in and out parts, for every class ``h`` and node (docs/METHOD.md sections 4, 8).

    The arc ``u -> v`` of edge ``e`` weighs ``values[h, pi_e(u)]`` and counts for both ends; the
    arcs are taken ``chunk`` at a time so no ``[t, E]`` temporary is ever built.
    """
    topo = network.topology
    values = network.values(descriptor).astype(np.float64)
    n, t = topo.num_nodes, network.num_classes
    indeg = np.zeros((t, n), dtype=np.float64)
    outdeg = np.zeros((t, n), dtype=np.float64)
    for start in range(0, topo.num_arcs, chunk):
        arcs = slice(start, min(start + chunk, topo.num_arcs))
        weight_node = topo.arc_weight_nodes(arcs)
        src, dst = topo.arc_src[arcs], topo.arc_dst[arcs]
        for h in range(t):
            w = values[h, weight_node]
            outdeg[h] += np.bincount(src, weights=w, minlength=n)
            indeg[h] += np.bincount(dst, weights=w, minlength=n)
    return Degrees(indegree=indeg, outdegree=outdeg)


def score(total_degree: np.ndarray, aggregator: str = "entropy", absolute: bool = True) -> np.ndarray:
    """``delta(v)`` for every node from ``d^h(v)`` given as [t, N] (docs/METHOD.md sections 4 and 8).

    ``absolute`` (the method's rule) uses ``|d^h|``: a block that ends at a batch norm (the last
    convolution of a residual branch) or ``response = conv`` gives negative values; ReLU
    responses are >= 0, where it changes nothing. ``absolute=False`` is only for checks.
    """
    d = np.abs(total_degree) if absolute else np.asarray(total_degree, dtype=np.float64)
    t = d.shape[0]
    if aggregator == "mean":
        return d.mean(axis=0)
    total = d.sum(axis=0)
    safe = np.where(total == 0, 1.0, total)
    p = d / safe
    if aggregator == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        return np.where(total == 0, 0.0, -terms.sum(axis=0))
    if aggregator == "participation":
        if t < 2:
            return np.zeros(d.shape[1])
        return np.where(total == 0, 0.0, t / (t - 1) * (1.0 - (p**2).sum(axis=0)))
    raise ConfigError(f"unknown aggregator '{aggregator}'; use one of {', '.join(AGGREGATORS)}")


def node_scores(
    network: MultilayerNetwork, descriptor: str = "mean", aggregator: str = "entropy"
) -> np.ndarray:
    """``delta`` of every node, float64 [N], as the pruner uses it (``|d^h|``, docs/METHOD.md 4 and 8)."""
    return score(degrees(network, descriptor).total, aggregator)
