"""Every attribution method on the same images, scored by the same faithfulness loop.

``compare`` runs each method's ``attribute`` on chunks of images, reduces its map with
:func:`~cnngraph.explain.methods.saliency` and scores it with
:func:`~cnngraph.explain.faithfulness.evaluate`; the loop does not care which method made the
map. ``summarise`` gives each metric's mean and standard error, and each method's paired
difference from a reference method with a 95% t interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cnngraph.explain.faithfulness import Forward, evaluate
from cnngraph.explain.methods import Attribution, saliency

METRICS = ("deletion_auc", "insertion_auc", "drop", "increase")
LOWER_IS_BETTER = {"deletion_auc": True, "insertion_auc": False, "drop": True, "increase": False}


@dataclass
class MethodResult:
    """One method's per-image metrics and its time."""

    name: str
    metrics: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    attribute_s: float = 0.0
    faithfulness_s: float = 0.0
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metrics": self.metrics,
            "attribute_s_per_image": self.attribute_s / max(1, self.images),
            "faithfulness_s_per_image": self.faithfulness_s / max(1, self.images),
            "images": self.images,
        }


def compare(
    forward: Forward,
    methods: Sequence[Attribution],
    images: torch.Tensor,
    targets: np.ndarray,
    fill: torch.Tensor,
    *,
    steps: int = 32,
    seed: int = 0,
    chunk: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[MethodResult]:
    """Each method's faithfulness on ``images`` (before normalisation) for the classes ``targets``."""
    results = [MethodResult(m.name) for m in methods]
    total = len(methods) * images.shape[0]
    done = 0
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk]
        t = targets[start : start + chunk]
        for method, result in zip(methods, results, strict=True):
            began = time.perf_counter()
            sal = saliency(method.attribute(x, t))
            result.attribute_s += time.perf_counter() - began
            began = time.perf_counter()
            f = evaluate(forward, x, sal, t, fill, steps=steps, seed=seed)
            result.faithfulness_s += time.perf_counter() - began
            for name in METRICS:
                result.metrics[name] += getattr(f, name).tolist()
            result.images += x.shape[0]
            done += x.shape[0]
            if progress is not None:
                progress(done, total)
    return results


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    return float(x.mean()), se


def paired(values: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Mean of ``values - reference`` per image, with its 95% t interval."""
    from scipy.stats import t as student

    d = np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    mean, se = mean_se(d)
    half = float(student.ppf(0.975, d.size - 1) * se) if d.size > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(d.size)}


def verdict(metric: str, difference: dict[str, float]) -> str:
    """For the reference method: 'win', 'loss' or 'no difference' (the interval holds 0)."""
    low, high = difference["low"], difference["high"]
    if not (low > 0 or high < 0):
        return "no difference"
    other_higher = low > 0
    return "win" if other_higher == LOWER_IS_BETTER[metric] else "loss"


def summarise(results: Sequence[MethodResult], reference: str = "graph") -> dict[str, Any]:
    """Per method and metric: mean, standard error; paired difference from ``reference`` and its verdict."""
    by_name = {r.name: r for r in results}
    out: dict[str, Any] = {}
    for r in results:
        entry: dict[str, Any] = {
            "images": r.images,
            "attribute_s_per_image": r.attribute_s / max(1, r.images),
        }
        for metric in METRICS:
            mean, se = mean_se(r.metrics[metric])
            entry[metric] = {"mean": mean, "se": se}
            if reference in by_name and r.name != reference:
                diff = paired(r.metrics[metric], by_name[reference].metrics[metric])
                entry[metric]["vs_" + reference] = {**diff, "verdict": verdict(metric, diff)}
        out[r.name] = entry
    return out
