"""Layer selection (METHOD.md section 5) on a hand example, and the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.errors import ConfigError
from cnngraph.pruner.select import (
    annotate,
    parse_layer_rule,
    random_layers,
    select_layers,
    weight_norm_layers,
)
from cnngraph.scores import NodeScores

# Three layers: 2x2 with delta 1,1,1,1; 2x2 with 0,0,3,0; 1x1 with 0.5.
# All nine values sum to 7.5: mean 0.8333..., median 1.
DELTA = np.array([1, 1, 1, 1, 0, 0, 3, 0, 0.5], dtype=np.float64)


def hand_scores() -> NodeScores:
    layer = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2], dtype=np.int64)
    i = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0], dtype=np.int64)
    j = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=np.int64)
    values = {"entropy": DELTA, "mean": DELTA[::-1].copy()}
    return NodeScores(layer, i, j, values, layer_names=("a", "b", "c"), model="hand")


def test_any_rule_with_mean_threshold() -> None:
    sel = select_layers(hand_scores(), 1.0)
    assert sel.threshold == pytest.approx(7.5 / 9)
    # delta > 0.8333: layer 0 has 4 nodes, layer 1 one (the 3), layer 2 none.
    assert [r.selected for r in sel.rows] == [4, 1, 0]
    assert sel.kept == (0, 1)
    assert sel.removed == (2,)
    row = sel.rows[1]
    assert (row.nodes, row.mean, row.min, row.max, row.name) == (4, 0.75, 0.0, 3.0, "b")


def test_fraction_rule() -> None:
    sel = select_layers(hand_scores(), 1.0, layer_rule="fraction:0.5")
    # layer 1 has 1/4 < 0.5 selected: removed; layer 0 4/4 kept.
    assert sel.kept == (0,)
    assert sel.removed == (1, 2)
    assert select_layers(hand_scores(), 1.0, layer_rule="fraction:0.25").kept == (0, 1)


def test_median_threshold_and_gamma() -> None:
    sel = select_layers(hand_scores(), 1.0, threshold_stat="median")
    assert sel.threshold == 1.0
    assert sel.kept == (1,)  # only the 3 is strictly above 1
    assert select_layers(hand_scores(), 0.0).kept == (0, 1, 2)  # every positive delta selected
    assert select_layers(hand_scores(), 0.5).kept == (0, 1, 2)  # th 0.4167 < 0.5
    assert select_layers(hand_scores(), 10.0).kept == ()


def test_other_aggregator_uses_its_values() -> None:
    sel = select_layers(hand_scores(), 1.0, aggregator="mean")
    # reversed values: layer 0 [0.5,0,3,0], layer 1 [0,1,1,1], layer 2 [1]; th 0.8333
    assert [r.selected for r in sel.rows] == [1, 3, 1]
    with pytest.raises(ConfigError, match="participation"):
        select_layers(hand_scores(), 1.0, aggregator="participation")


@pytest.mark.parametrize("rule", ["all", "fraction:0", "fraction:1.5", "fraction:x", "fraction:"])
def test_bad_rule(rule: str) -> None:
    with pytest.raises(ConfigError, match="layer rule"):
        select_layers(hand_scores(), 1.0, layer_rule=rule)


def test_bad_gamma_and_stat() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        select_layers(hand_scores(), -0.1)
    with pytest.raises(ConfigError, match="gamma"):
        select_layers(hand_scores(), float("nan"))
    with pytest.raises(ConfigError, match="statistic"):
        select_layers(hand_scores(), 1.0, threshold_stat="mode")
    assert parse_layer_rule("fraction:1") == 1.0


def test_random_layers_seeded() -> None:
    a = random_layers(6, 2, seed=3)
    b = random_layers(6, 2, seed=3)
    assert a.removed == b.removed
    assert len(a.removed) == 2 and len(a.kept) == 4
    assert a.method == "random"
    seen = {random_layers(6, 2, seed=s).removed for s in range(10)}
    assert len(seen) > 1
    with pytest.raises(ConfigError):
        random_layers(3, 4, seed=0)


def test_weight_norm_layers_by_mean_abs_weight() -> None:
    convs = [nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 4, 1), nn.Conv2d(4, 2, 1)]
    model = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2])
    with torch.no_grad():
        convs[0].weight.fill_(0.5)  # mean |w| 0.5
        convs[1].weight.fill_(0.1)  # 0.1 (8 elements: L1 0.8)
        convs[2].weight.fill_(0.2)  # 0.2 (8 elements: L1 1.6)
    sel = weight_norm_layers(model, 1)
    assert sel.removed == (1,)
    assert weight_norm_layers(model, 2).removed == (1, 2)
    assert sel.options["l1_per_parameter"] == pytest.approx([0.5, 0.1, 0.2])


def test_annotate_fills_statistics() -> None:
    sel = annotate(random_layers(3, 1, seed=0), hand_scores())
    assert [r.nodes for r in sel.rows] == [4, 4, 1]
    assert sel.rows[0].mean == 1.0
    assert len(sel.removed) == 1
