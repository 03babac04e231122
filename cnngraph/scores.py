"""Node scores as plain arrays: what the queries stage hands to the pruner. Imports no stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class NodeScores:
    """``delta`` of every node of one model, ordered by (layer, i, j).

    ``values`` maps an aggregator name (``entropy``, ``mean``, ``participation``) to float64 [N];
    ``layer``, ``i``, ``j`` are int64 [N]. ``layer_names[k]`` names convolution ``k``.
    """

    layer: np.ndarray
    i: np.ndarray
    j: np.ndarray
    values: dict[str, np.ndarray]
    layer_names: tuple[str, ...] = ()
    descriptor: str = "mean"
    model: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.layer.max()) + 1 if self.layer.size else 0

    def get(self, aggregator: str = "entropy") -> np.ndarray:
        from cnngraph.errors import ConfigError

        if aggregator not in self.values:
            raise ConfigError(
                f"no '{aggregator}' scores for model '{self.model}'; have {', '.join(sorted(self.values))}"
            )
        return self.values[aggregator]
