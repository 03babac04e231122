"""What a model is worth and what it costs: the paper's comparison table, original beside pruned.

- :func:`evaluate`: top-1 accuracy and macro precision and recall from the confusion matrix
  (numpy). The macro average runs over every class that occurs in the labels or in the
  predictions; a class never predicted has precision 0 and a predicted class absent from the
  labels has recall 0 (scikit-learn's ``zero_division=0``).
- :func:`measure`: parameters, multiply-accumulates per image (``FlopCounterMode`` FLOPs / 2)
  and CPU latency per image: the median of ``repeats`` single-image forward passes after
  ``warmup`` untimed ones.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnngraph.datasets import ImageDataset
from cnngraph.errors import DataError

LATENCY_REPEATS = 30
LATENCY_WARMUP = 5


@dataclass(frozen=True)
class Metrics:
    """Top-1 accuracy, macro precision and recall, and the confusion matrix (rows: true class)."""

    accuracy: float
    precision: float
    recall: float
    confusion: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "confusion": self.confusion.tolist(),
        }


@dataclass(frozen=True)
class Cost:
    """Parameters, MACs per image, CPU latency per image (median) and how it was measured."""

    parameters: int
    macs: int
    latency_ms: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """One column of the comparison table."""

    metrics: Metrics
    cost: Cost
    epoch_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics.to_dict(), **self.cost.to_dict(), "epoch_seconds": self.epoch_seconds}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``[t, t]`` counts: row = true class, column = predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(confusion: np.ndarray) -> tuple[float, float, float]:
    """``(accuracy, macro precision, macro recall)``; see the module docstring for empty classes."""
    c = np.asarray(confusion, dtype=np.float64)
    total = c.sum()
    if total == 0:
        raise DataError("no images to evaluate")
    tp = np.diag(c)
    predicted = c.sum(axis=0)
    actual = c.sum(axis=1)
    present = (predicted > 0) | (actual > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    return float(tp.sum() / total), float(precision[present].mean()), float(recall[present].mean())


def predict(
    model: nn.Module, data: ImageDataset, batch_size: int = 256, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Predicted class of every image, int64 [N] (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            x = data.images[start : start + batch_size].to(device)
            out.append(model(x).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def evaluate(
    model: nn.Module, data: ImageDataset, batch_size: int = 256, device: str | torch.device = "cpu"
) -> Metrics:
    """Accuracy, macro precision and recall of ``model`` on ``data``."""
    if len(data) == 0:
        raise DataError("the test set is empty")
    predictions = predict(model, data, batch_size, device)
    num_classes = max(len(data.class_names), int(data.labels.max()) + 1, int(predictions.max()) + 1)
    confusion = confusion_matrix(data.labels.numpy(), predictions, num_classes)
    accuracy, precision, recall = scores_from_confusion(confusion)
    return Metrics(accuracy, precision, recall, confusion)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one image: torch's FLOP counter divided by two."""
    x = torch.zeros((1, *input_shape[-3:]), device=_device(model))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops()) // 2


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    repeats: int = LATENCY_REPEATS,
    warmup: int = LATENCY_WARMUP,
) -> float:
    """Median wall-clock milliseconds of a single-image forward pass on the model's device.

    On the CPU it runs on one thread, so the figure does not depend on how many cores happen to
    be free (a single-image pass gains little from more threads, and loses much when they wait).
    """
    x = torch.randn((1, *input_shape[-3:]), generator=torch.Generator().manual_seed(0)).to(_device(model))
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval()
    times = []
    try:
        if x.device.type == "cpu":
            torch.set_num_threads(1)
        with torch.inference_mode():
            for n in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if n >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return 1000.0 * statistics.median(times)


def measure(model: nn.Module, input_shape: tuple[int, ...], repeats: int = LATENCY_REPEATS) -> Cost:
    """Parameters, MACs per image and median latency per image (``repeats`` timed runs)."""
    parameters = sum(p.numel() for p in model.parameters())
    return Cost(parameters, count_macs(model, input_shape), latency_ms(model, input_shape, repeats), repeats)


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


# --------------------------------------------------------------------------- comparison
COMPARISON_ROWS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "Top-1 accuracy", "pct"),
    ("precision", "Macro precision", "pct"),
    ("recall", "Macro recall", "pct"),
    ("parameters", "Parameters", "int"),
    ("macs", "MACs / image", "int"),
    ("latency_ms", "Latency ms / image (1 CPU thread)", "ms"),
    ("epoch_seconds", "Mean epoch time s", "s"),
)


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the table: the quantity, both values, the relative change in percent and, for rates
    (accuracy, precision, recall), the change in percentage points (10.00% -> 10.50%: +0.50 pp, +5%)."""

    key: str
    label: str
    original: float
    pruned: float
    change_pct: float | None
    unit: str
    change_pp: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def change_text(self) -> str:
        """The table's change cell: percentage points for rates, a relative percentage otherwise."""
        if self.unit == "pct":
            return "-" if self.change_pp is None else f"{self.change_pp:+.2f} pp"
        return "-" if self.change_pct is None else f"{self.change_pct:+.2f}%"


def compare(original: Summary, pruned: Summary) -> list[ComparisonRow]:
    """The paper's table: every quantity original vs pruned with ``(pruned - original) / original``
    and, for rates, ``pruned - original`` in percentage points."""
    a, b = original.to_dict(), pruned.to_dict()
    rows = []
    for key, label, unit in COMPARISON_ROWS:
        x, y = float(a[key]), float(b[key])
        finite = bool(np.isfinite(x) and np.isfinite(y))
        change = None if x == 0 or not finite else 100.0 * (y - x) / abs(x)
        points = 100.0 * (y - x) if unit == "pct" and finite else None
        rows.append(ComparisonRow(key, label, x, y, change, unit, points))
    return rows


def format_value(value: float, unit: str) -> str:
    """A table cell: percentages for scores, thousands separators for counts."""
    if not np.isfinite(value):
        return "-"
    if unit == "pct":
        return f"{100.0 * value:.2f}%"
    if unit == "int":
        return f"{int(value):,}"
    if unit == "ms":
        return f"{value:.3f}"
    return f"{value:.2f}"
