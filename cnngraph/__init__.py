"""cnngraph: map a trained CNN into a multilayer network, explore it in Neo4j, prune it.

The Python API mirrors the CLI, one function per stage::

    import cnngraph
    from cnngraph.loader.connection import connect

    model, spec = cnngraph.load_model(None, "model.pt")          # checkpoint from `cnngraph train`
    data = cnngraph.load_dataset("builtin:digits")
    network = cnngraph.map_model(model, data, images_per_class=64, spec=spec)
    network.save("digits.npz")
    with connect(cnngraph.Neo4jSettings.from_env()) as driver:
        cnngraph.load_network(driver, network, "digits")
        scores = cnngraph.compute_scores(driver, "digits")

Imports are lazy so that ``cnngraph --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "map_model": "cnngraph.mapping.api",
    "MultilayerNetwork": "cnngraph.mapping.network",
    "node_scores": "cnngraph.mapping.reference",
    "degrees": "cnngraph.mapping.reference",
    "load_model": "cnngraph.models",
    "ModelSpec": "cnngraph.models",
    "build_model": "cnngraph.models",
    "load_dataset": "cnngraph.datasets",
    "Neo4jSettings": "cnngraph.settings",
    "NodeScores": "cnngraph.scores",
    "connect": "cnngraph.loader.connection",
    "load_network": "cnngraph.loader.writer",
    "compute_degrees": "cnngraph.queries.scoring",
    "compute_scores": "cnngraph.queries.scoring",
    "fetch_scores": "cnngraph.queries.scoring",
    "select_layers": "cnngraph.pruner.select",
    "select_units": "cnngraph.pruner.select",
    "find_units": "cnngraph.pruner.units",
    "remove_convolutions": "cnngraph.pruner.surgery",
    "load_pruned": "cnngraph.pruner.surgery",
    "prune_model": "cnngraph.pruner.pipeline",
    "plot_delta_maps": "cnngraph.figures",
    "plot_class_degrees": "cnngraph.figures",
    "plot_layer_dag": "cnngraph.figures",
    "plot_unit_deltas": "cnngraph.figures",
    "explain": "cnngraph.explain.api",
    "Explainer": "cnngraph.explain.api",
    "ExplainOptions": "cnngraph.explain.options",
    "evaluate_faithfulness": "cnngraph.explain.faithfulness",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnngraph' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
