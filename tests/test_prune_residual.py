"""ResNet-20 end to end without a database: map, score with the numpy reference, select units,
remove branches, fine-tune, save and reload (the Cypher scores equal the reference elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnngraph.datasets import load_dataset
from cnngraph.mapping.api import map_model
from cnngraph.mapping.reference import node_scores
from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.pipeline import PruneOptions, choose_layers, prune_model, write_outputs
from cnngraph.pruner.surgery import load_pruned
from cnngraph.pruner.units import NOT_REMOVABLE, RESIDUAL, find_units
from cnngraph.scores import NodeScores


@pytest.mark.slow
def test_resnet20_map_score_prune_reload(tmp_path: Path) -> None:
    data = load_dataset("builtin:digits")
    g = np.random.default_rng(0).permutation(len(data))
    train_data, test_data = data.subset(np.sort(g[:64])), data.subset(np.sort(g[64:96]))
    spec = ModelSpec("resnet20", num_classes=10, in_channels=1, input_size=16, width=0.25)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    network = map_model(model, train_data, images_per_class=3, spec=spec)
    layer, i, j = network.topology.node_positions()
    delta = node_scores(network)
    scores = NodeScores(layer, i, j, {"entropy": delta}, layer_names=tuple(network.model["layers"]))
    by_conv = {k: n for u in find_units(model) for k, n in zip(u.convs, u.conv_names, strict=True)}
    assert [by_conv[k] for k in range(len(by_conv))] == list(network.model["layers"])  # one numbering
    # rule any: a branch goes when its largest delta (over both convolutions) is at most th; put
    # th between the third and fourth smallest of those maxima, so exactly three branches go
    units = find_units(model)
    branch_max = {u.index: float(delta[np.isin(layer, u.convs)].max()) for u in units if u.kind == RESIDUAL}
    lowest = sorted(branch_max, key=branch_max.__getitem__)
    th = (branch_max[lowest[2]] + branch_max[lowest[3]]) / 2
    options = PruneOptions(gamma=th / float(delta.mean()), epochs=1, batch_size=32, latency_repeats=2)
    selection = choose_layers(model, scores, options)
    assert len(selection.rows) == 12 and selection.num_layers == 21
    assert all(r.kept for r in selection.rows if r.kind == NOT_REMOVABLE)
    assert set(selection.removed_units) == set(lowest[:3])
    result = prune_model(model, spec, scores, train_data, test_data, options)
    removed = list(result.pruned.units)
    assert [u.index for u in removed] == sorted(lowest[:3])
    assert [u.convs for u in removed] == [r.convs for r in result.selection.rows if not r.kept]
    assert all(u.kind == RESIDUAL for u in removed)
    assert result.pruned.rewired == ()
    expected_drop = sum(
        p.numel()
        for u in removed
        for name in u.conv_names
        for p in (*model.get_submodule(name).parameters(), *_bn_after(model, name).parameters())
    )
    assert result.original.cost.parameters - result.result.cost.parameters == expected_drop
    paths = write_outputs(result, scores, tmp_path / "out")
    reloaded = load_pruned(paths["pruned.pt"])
    x = test_data.images[:4]
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.pruned.module.eval()(x))
    assert result.report["units_removed"] == [u.to_dict() for u in removed]


def _bn_after(model: torch.nn.Module, conv_name: str) -> torch.nn.Module:
    """The batch norm of a basic block's convolution: ``layerX.Y.convK`` -> ``layerX.Y.bnK``."""
    prefix, _, conv = conv_name.rpartition(".")
    return model.get_submodule(f"{prefix}.bn{conv[-1]}")
