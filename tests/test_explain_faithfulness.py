"""Faithfulness metrics (METHOD.md 10): steps, tie-breaking, curve end points, masking, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnngraph.explain.compare import mean_se, paired, verdict
from cnngraph.explain.faithfulness import evaluate, pixel_order, step_counts
from cnngraph.explain.methods import GaussianAttribution, RandomAttribution, centred_gaussian, saliency


def test_step_counts_are_equal_steps_rounded_half_up() -> None:
    assert step_counts(1024, 32).tolist() == list(range(0, 1025, 32))
    assert step_counts(10, 3).tolist() == [0, 3, 7, 10]
    assert step_counts(4, 8).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]  # 0.5 rounds up


def test_ties_follow_a_seeded_permutation_not_the_position() -> None:
    flat = np.zeros((2, 4, 4))
    first, again, other = pixel_order(flat, 0), pixel_order(flat, 0), pixel_order(flat, 1)
    assert np.array_equal(first, again) and not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], np.arange(16))
    ranked = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    assert pixel_order(ranked, 0)[0].tolist() == list(range(15, -1, -1))  # decreasing saliency first


def logits(x: torch.Tensor) -> torch.Tensor:
    """Class 0's logit grows with the top-left pixel's brightness, class 1 with the rest."""
    top = x[:, 0, 0, 0]
    rest = x[:, 0].flatten(1)[:, 1:].mean(dim=1)
    return torch.stack([4 * top, 4 * rest], dim=1)


def test_curves_end_points_and_masks() -> None:
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    fill = torch.tensor([0.25])
    sal = np.random.default_rng(0).random((3, 4, 4))
    targets = np.array([0, 1, 0])
    f = evaluate(logits, x, sal, targets, fill, steps=8)
    probs = torch.softmax(logits(x).double(), 1).numpy()[np.arange(3), targets]
    blank = torch.softmax(logits(torch.full_like(x, 0.25)).double(), 1).numpy()[np.arange(3), targets]
    np.testing.assert_allclose(f.deletion[:, 0], probs)
    np.testing.assert_allclose(f.insertion[:, -1], probs)
    np.testing.assert_allclose(f.deletion[:, -1], blank)
    np.testing.assert_allclose(f.insertion[:, 0], blank)
    np.testing.assert_allclose(f.deletion_auc, np.trapezoid(f.deletion, np.arange(9) / 8, axis=1))
    # the mask around the fill: all ones keeps the image, all zeros is the blank image
    ones = evaluate(logits, x, np.ones((3, 4, 4)), targets, fill, steps=2)
    zeros = evaluate(logits, x, np.zeros((3, 4, 4)), targets, fill, steps=2)
    np.testing.assert_allclose(ones.masked, probs)
    np.testing.assert_allclose(zeros.masked, blank)
    assert (ones.drop == 0).all() and (ones.increase == 0).all()
    expected = 100 * np.maximum(0, probs - blank) / probs
    np.testing.assert_allclose(zeros.drop, expected)


def test_deleting_the_pixel_that_matters_first_gives_the_lowest_auc() -> None:
    x = torch.full((1, 1, 4, 4), 0.5)
    x[0, 0, 0, 0] = 1.0
    right = np.zeros((1, 4, 4))
    right[0, 0, 0] = 1.0
    wrong = 1.0 - right
    fill = torch.tensor([0.0])
    good = evaluate(logits, x, right, np.array([0]), fill, steps=16)
    bad = evaluate(logits, x, wrong, np.array([0]), fill, steps=16)
    assert good.deletion_auc[0] < bad.deletion_auc[0] and good.insertion_auc[0] > bad.insertion_auc[0]


def test_control_maps() -> None:
    x = torch.rand(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    a = RandomAttribution(seed=3).attribute(x, [0, 1])
    assert a.shape == x.shape and torch.equal(a, RandomAttribution(seed=3).attribute(x, [1, 1]))
    assert torch.equal(a[1:], RandomAttribution(seed=3).attribute(x[1:], [0]))  # not the batch: the image
    g = saliency(GaussianAttribution().attribute(x, [0, 0]))
    reference = centred_gaussian(6, 8)
    assert g.shape == (2, 6, 8)
    np.testing.assert_allclose(g[1], reference / reference.max(), rtol=1e-6)
    assert np.unravel_index(np.argmax(centred_gaussian(7, 9)), (7, 9)) == (3, 4)
    assert saliency(torch.zeros(1, 3, 2, 2)).max() == 0.0


def test_statistics_and_verdicts() -> None:
    mean, se = mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1.0 / np.sqrt(3))
    d = paired([2.0, 3.0, 4.0, 5.0], [1.0, 1.5, 2.0, 2.5])
    assert d["mean"] == pytest.approx(1.75) and d["low"] > 0 and d["n"] == 4
    assert verdict("deletion_auc", {"low": 0.1, "high": 0.2}) == "win"  # the other method deletes worse
    assert verdict("insertion_auc", {"low": 0.1, "high": 0.2}) == "loss"
    assert verdict("drop", {"low": -0.2, "high": -0.1}) == "loss"
    assert verdict("increase", {"low": -0.1, "high": 0.1}) == "no difference"
