"""The whole pipeline on a tiny model against the real server: train, map, load, score, prune."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cnngraph.datasets import load_dataset
from cnngraph.mapping.reference import node_scores
from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.pipeline import PruneOptions, prune_model, write_outputs
from cnngraph.pruner.surgery import load_pruned
from cnngraph.pruner.training import train

pytestmark = pytest.mark.neo4j


def test_train_map_load_score_prune(neo4j_driver: Any, model_id: str, tmp_path: Path) -> None:
    from cnngraph.loader.writer import load_network
    from cnngraph.mapping.api import map_model
    from cnngraph.queries.scoring import compute_scores, fetch_scores

    data = load_dataset("builtin:digits")
    g = np.random.default_rng(0).permutation(len(data))
    train_data, test_data = data.subset(np.sort(g[:200])), data.subset(np.sort(g[200:280]))
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1, input_size=16, width=0.25)
    torch.manual_seed(0)
    model = build_model(spec)
    train(model, train_data, 1, 32, 0.05, seed=0)

    network = map_model(model, train_data, images_per_class=5, spec=spec)
    load_network(neo4j_driver, network, model_id)
    scores = compute_scores(neo4j_driver, model_id)
    assert scores.num_layers == 5
    np.testing.assert_allclose(scores.get("entropy"), node_scores(network), rtol=1e-6, atol=1e-9)
    stored = fetch_scores(neo4j_driver, model_id)
    np.testing.assert_allclose(stored.get("entropy"), scores.get("entropy"), rtol=1e-9)

    # gamma 1 with the paper's rule: whatever the scores say, at least one layer stays
    options = PruneOptions(gamma=1.0, epochs=1, batch_size=32, lr=0.02, latency_repeats=3)
    result = prune_model(model, spec, stored, train_data, test_data, options)
    assert result.selection.kept  # prune_model refuses otherwise
    assert set(result.pruned.removed) == set(result.selection.removed)
    assert result.result.cost.parameters <= result.original.cost.parameters
    assert 0.0 <= result.result.metrics.accuracy <= 1.0
    paths = write_outputs(result, stored, tmp_path / "out")
    assert all(p.is_file() for p in paths.values())
    pruned = load_pruned(paths["pruned.pt"])
    x = test_data.images[:4]
    with torch.no_grad():
        assert torch.equal(pruned(x), result.pruned.module.eval()(x))
