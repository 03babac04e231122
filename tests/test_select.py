"""Layer selection (docs/METHOD.md section 5) on a hand example, unit selection (section 8) against a
brute-force oracle, and the baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.errors import ConfigError
from cnngraph.pruner.select import (
    annotate,
    critical_thresholds,
    gamma_for_count,
    last_units,
    parse_layer_rule,
    random_layers,
    random_units,
    select_layers,
    select_units,
    weight_norm_layers,
    weight_norm_units,
)
from cnngraph.pruner.units import CHAIN, NOT_REMOVABLE, RESIDUAL, Unit
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


# ---------------------------------------------------------------- units (docs/METHOD.md section 8)
def unit_list() -> list[Unit]:
    """A stem (not removable), a two-convolution residual branch, a chain convolution and a
    projection (not removable): convolutions 0 | 1, 2 | 3 | 4."""
    return [
        Unit(0, NOT_REMOVABLE, (0,), ("stem",), "stem", reason="its output forks"),
        Unit(1, RESIDUAL, (1, 2), ("b.conv1", "b.conv2"), "b", shortcut="identity"),
        Unit(2, CHAIN, (3,), ("c",), "c"),
        Unit(3, NOT_REMOVABLE, (4,), ("p",), "p", reason="projection"),
    ]


def random_scores(seed: int, sizes: tuple[int, ...] = (9, 4, 4, 6, 2)) -> NodeScores:
    rng = np.random.default_rng(seed)
    layer = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    delta = rng.random(layer.size) * 2.3
    delta[rng.random(layer.size) < 0.2] = 0.0
    zeros = np.zeros(layer.size, dtype=np.int64)
    return NodeScores(layer, zeros, zeros, {"entropy": delta}, model="random")


def oracle_kept(scores: NodeScores, units: list[Unit], gamma: float, stat: str, rule: str) -> list[bool]:
    """Brute force over every node: the threshold over all nodes, the rule over each unit's union."""
    delta = [float(v) for v in scores.values["entropy"]]
    layers = [int(k) for k in scores.layer]
    centre = sum(delta) / len(delta) if stat == "mean" else float(np.median(delta))
    th = gamma * centre
    kept = []
    for unit in units:
        mine = [d for d, k in zip(delta, layers, strict=True) if k in unit.convs]
        hits = sum(1 for d in mine if d > th)
        if not unit.removable:
            kept.append(True)
        elif rule == "any":
            kept.append(hits >= 1)
        elif rule == "mean":
            kept.append(sum(mine) / len(mine) > th)
        else:
            kept.append(hits >= float(rule.split(":")[1]) * len(mine))
    return kept


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", ["any", "fraction:0.3", "fraction:0.6", "mean"])
@pytest.mark.parametrize("stat", ["mean", "median"])
def test_select_units_matches_brute_force(seed: int, rule: str, stat: str) -> None:
    units = unit_list()
    scores = random_scores(seed)
    for gamma in (0.0, 0.8, 1.0, 1.3, 1.7):
        sel = select_units(scores, units, gamma, threshold_stat=stat, layer_rule=rule)
        assert [r.kept for r in sel.rows] == oracle_kept(scores, units, gamma, stat, rule)
        assert sel.kept == tuple(sorted(k for r in sel.rows if r.kept for k in r.convs))
        assert sel.removed_units == tuple(r.unit for r in sel.rows if not r.kept)


def chain_of(sizes: tuple[int, ...]) -> list[Unit]:
    """A stem that is not removable, then one chain unit per further convolution."""
    return [Unit(0, NOT_REMOVABLE, (0,), ("stem",), "stem", reason="stem")] + [
        Unit(k, CHAIN, (k,), (f"c{k}",), f"c{k}") for k in range(1, len(sizes))
    ]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rule", ["any", "fraction:0.3", "fraction:0.5", "mean"])
@pytest.mark.parametrize("stat", ["mean", "median"])
def test_gamma_for_count_removes_that_many(seed: int, rule: str, stat: str) -> None:
    """Every count 0..removable is reached, checked by the brute-force oracle; counts that ties
    make unreachable do not occur with continuous random scores."""
    sizes = (5, 7, 3, 9, 1, 4, 6)
    units = chain_of(sizes)
    rng = np.random.default_rng(100 + seed)
    layer = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    zeros = np.zeros(layer.size, dtype=np.int64)
    scores = NodeScores(layer, zeros, zeros, {"entropy": rng.random(layer.size) * 2.3})
    for n in range(len(sizes)):
        gamma = gamma_for_count(scores, units, n, threshold_stat=stat, layer_rule=rule)
        kept = oracle_kept(scores, units, gamma, stat, rule)
        assert kept.count(False) == n, (n, gamma)
        sel = select_units(scores, units, gamma, threshold_stat=stat, layer_rule=rule)
        assert len(sel.removed_units) == n
    with pytest.raises(ConfigError, match="cannot remove 7 of 6"):
        gamma_for_count(scores, units, 7, layer_rule=rule)


def test_critical_thresholds_by_rule() -> None:
    # one unit of nodes 0.1, 0.4, 0.2, 0.9 (mean 0.4)
    layer = np.zeros(4, dtype=np.int64)
    scores = NodeScores(layer, layer, layer, {"entropy": np.array([0.1, 0.4, 0.2, 0.9])})
    units = [Unit(0, CHAIN, (0,), ("a",), "a")]
    assert critical_thresholds(scores, units)[0] == 0.9
    assert critical_thresholds(scores, units, layer_rule="mean")[0] == pytest.approx(0.4)
    assert critical_thresholds(scores, units, layer_rule="fraction:0.5")[0] == 0.4  # 2nd largest
    assert critical_thresholds(scores, units, layer_rule="fraction:0.6")[0] == 0.2  # 3rd: ceil(2.4)
    assert critical_thresholds(scores, units, layer_rule="fraction:1")[0] == 0.1


def test_select_units_statistics_over_the_union() -> None:
    # stem 4 nodes at 1.0; branch: conv1 2 nodes at 0, conv2 2 nodes at 3; chain 2 at 0; projection 1 at 4.
    layer = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4], dtype=np.int64)
    delta = np.array([1, 1, 1, 1, 0, 0, 3, 3, 0, 0, 4], dtype=np.float64)  # mean 14/11
    zeros = np.zeros(layer.size, dtype=np.int64)
    scores = NodeScores(layer, zeros, zeros, {"entropy": delta})
    sel = select_units(scores, unit_list(), 1.0)
    assert sel.threshold == pytest.approx(14 / 11)
    stem, branch, chain, projection = sel.rows
    assert (branch.nodes, branch.selected, branch.mean, branch.min, branch.max) == (4, 2, 1.5, 0.0, 3.0)
    assert branch.kept and branch.convs == (1, 2) and branch.verdict() == "kept"
    assert not chain.kept and chain.verdict() == "removed"
    assert stem.kept and stem.selected == 0 and stem.verdict() == "not removable"  # below th, stays
    assert projection.kept and projection.reason == "projection"
    assert sel.removed == (3,) and sel.removed_units == (2,)
    # fraction 0.6 over the branch's union: 2 of 4 selected is not enough, although conv2 has 2 of 2
    sel = select_units(scores, unit_list(), 1.0, layer_rule="fraction:0.6")
    assert sel.removed == (1, 2, 3) and sel.removed_units == (1, 2)
    assert sel.to_dict()["units"][1]["convolutions"] == [1, 2]
    with pytest.raises(ConfigError, match="cover 5 layers but the model has 4"):
        select_units(scores, unit_list()[:3], 1.0)


def test_unit_baselines_choose_among_removable_units() -> None:
    units = [*unit_list(), Unit(4, CHAIN, (5,), ("d",), "d"), Unit(5, RESIDUAL, (6, 7), ("e1", "e2"), "e")]
    removable = {1, 2, 4, 5}
    seen = set()
    for seed in range(12):
        sel = random_units(units, 2, seed)
        assert set(sel.removed_units) <= removable and len(sel.removed_units) == 2
        assert sel.removed_units == random_units(units, 2, seed).removed_units
        seen.add(sel.removed_units)
    assert len(seen) > 2
    assert last_units(units, 1).removed_units == (5,)
    assert last_units(units, 3).removed_units == (2, 4, 5)
    assert last_units(units, 3).removed == (3, 5, 6, 7)
    with pytest.raises(ConfigError, match="cannot remove 5 of 4 removable units"):
        last_units(units, 5)


def test_weight_norm_units_mean_over_the_union() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 2, 1, bias=False)
            self.b1 = nn.Conv2d(2, 2, 1, bias=False)
            self.b2 = nn.Conv2d(2, 2, 1, bias=False)
            self.c = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return self.c(x + self.b2(self.b1(x)))

    model = Net()
    with torch.no_grad():
        model.stem.weight.fill_(0.01)  # smallest, but not removable
        model.b1.weight.fill_(0.1)
        model.b2.weight.fill_(0.5)  # branch mean |w| 0.3
        model.c.weight.fill_(0.2)
    units = [
        Unit(0, NOT_REMOVABLE, (0,), ("stem",), "stem", reason="forks"),
        Unit(1, RESIDUAL, (1, 2), ("b1", "b2"), "b", shortcut="identity"),
        Unit(2, CHAIN, (3,), ("c",), "c"),
    ]
    sel = weight_norm_units(model, units, 1)
    assert sel.removed_units == (2,)
    assert sel.options["l1_per_parameter"] == pytest.approx([0.3, 0.2])
    assert sel.options["candidates"] == [1, 2]
    with torch.no_grad():
        model.c.weight.fill_(0.4)
    assert weight_norm_units(model, units, 1).removed_units == (1,)


@pytest.mark.parametrize("rule", ["any", "fraction:0.3", "fraction:0.6", "mean"])
def test_layers_plot_shows_what_decided(rule: str, tmp_path: Path) -> None:
    """Under ``any`` the bars are max delta against the threshold, under ``fraction:q`` the share
    of selected nodes against q: a removable unit is kept exactly when its bar reaches the line."""
    from cnngraph.pruner.plots import decision_bars, plot_layers

    for seed in range(3):
        sel = select_units(random_scores(seed), unit_list(), 1.1, layer_rule=rule)
        bars, line, label = decision_bars(sel)
        assert line is not None
        if rule == "any":
            assert label == "max delta" and line == sel.threshold
            reached = bars > line
        elif rule == "mean":
            assert label == "mean delta" and line == sel.threshold
            reached = bars > line
        else:
            assert label == "share of nodes selected" and line == float(rule.split(":")[1])
            reached = bars >= line
        for row, bar, hit in zip(sel.rows, bars, reached, strict=True):
            expected = {"any": row.max, "mean": row.mean}.get(rule, row.selected / row.nodes)
            assert bar == pytest.approx(expected)
            if row.removable:
                assert bool(hit) == row.kept
    path = plot_layers(sel, tmp_path / "layers.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
