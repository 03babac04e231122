"""Reference degrees and node scores, straight from the arrays (METHOD.md section 4).

This is the oracle that the Cypher queries must reproduce.
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


def degrees(network: MultilayerNetwork, descriptor: str = "mean") -> Degrees:
    """``d^h`` split into in and out parts, for every class ``h`` and node."""
    topo = network.topology
    values = network.values(descriptor).astype(np.float64)
    n = topo.num_nodes
    t = network.num_classes
    # All arcs leaving u carry the value of weight_node[u]: out-degree = count * value.
    out_count = np.bincount(topo.arc_src, minlength=n).astype(np.float64)
    has_out = topo.weight_node >= 0
    outdeg = np.zeros((t, n), dtype=np.float64)
    outdeg[:, has_out] = values[:, topo.weight_node[has_out]] * out_count[has_out]
    # In-degree: sum over incoming arcs of the source's weight. Group arcs by source weight
    # node, so the sum is one sparse product per class rather than a [t, E] temporary.
    src_value_node = topo.weight_node[topo.arc_src]
    indeg = np.empty((t, n), dtype=np.float64)
    for h in range(t):
        indeg[h] = np.bincount(topo.arc_dst, weights=values[h, src_value_node], minlength=n)
    return Degrees(indegree=indeg, outdegree=outdeg)


def score(total_degree: np.ndarray, aggregator: str = "entropy", absolute: bool = False) -> np.ndarray:
    """``delta(v)`` for every node from ``d^h(v)`` given as [t, N] (METHOD.md section 4).

    ``absolute`` uses ``|d^h|`` (needed when responses can be negative, ``response = conv``).
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
    """``delta`` of every node, float64 [N], as the pruner uses it."""
    absolute = network.options.get("response") == "conv"
    return score(degrees(network, descriptor).total, aggregator, absolute=absolute)
