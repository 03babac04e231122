"""Sweep ``gamma``: how many units (and convolutions) each value removes and, optionally, the
accuracy it costs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.errors import ConfigError
from cnngraph.pruner.metrics import evaluate
from cnngraph.pruner.pipeline import PruneOptions, choose_layers
from cnngraph.pruner.surgery import remove_convolutions
from cnngraph.pruner.training import train
from cnngraph.pruner.units import find_units
from cnngraph.scores import NodeScores

MAX_STEPS = 1000


@dataclass(frozen=True)
class SweepRow:
    """One gamma: its threshold, the units and convolutions removed, the accuracy after fine-tuning.

    ``every_layer`` is True when the selection would remove every convolution (prune refuses).
    """

    gamma: float
    threshold: float | None
    removed: tuple[int, ...]  # convolution indices
    accuracy: float | None = None
    removed_units: tuple[int, ...] = ()
    every_layer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "gamma": self.gamma,
            "threshold": self.threshold,
            "units_removed": len(self.removed_units),
            "layers_removed": len(self.removed),
            "removed_units": list(self.removed_units),
            "removed": list(self.removed),
            "every_layer": self.every_layer,
            "accuracy": self.accuracy,
        }


def gamma_values(start: float, stop: float, step: float) -> list[float]:
    """``start, start+step, ..., <= stop`` (rounded to 10 decimals); a :class:`ConfigError` if empty."""
    if not step > 0 or not math.isfinite(step):
        raise ConfigError(f"--gamma-step must be > 0, got {step}")
    if start < 0 or stop < start:
        raise ConfigError(f"need 0 <= --gamma-start <= --gamma-stop, got {start} and {stop}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_STEPS:
        raise ConfigError(f"the sweep has {count} steps (more than {MAX_STEPS}); use a larger --gamma-step")
    return [round(start + n * step, 10) for n in range(count)]


def sweep(
    scores: NodeScores,
    gammas: list[float],
    options: PruneOptions,
    model: nn.Module | None = None,
    train_data: ImageDataset | None = None,
    test_data: ImageDataset | None = None,
    finetune_epochs: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepRow]:
    """One row per gamma; with ``finetune_epochs`` > 0 each distinct removal is pruned,
    fine-tuned and evaluated once (gammas removing the same units share the result).

    Units are the model's (:func:`find_units`); without a model every layer is a chain unit.
    """
    if finetune_epochs > 0 and (model is None or train_data is None or test_data is None):
        raise ConfigError("accuracy in a sweep needs the checkpoint and the data (--checkpoint, --data)")
    rows: list[SweepRow] = []
    cache: dict[tuple[int, ...], float | None] = {}
    units = find_units(model) if model is not None else None
    for n, gamma in enumerate(gammas):
        selection = choose_layers(model, scores, replace(options, gamma=gamma, select="entropy"), units)
        removed = selection.removed
        every = not selection.kept
        accuracy = None
        if finetune_epochs > 0 and not every:
            if removed not in cache:
                assert model is not None and train_data is not None and test_data is not None
                cache[removed] = _accuracy(model, removed, train_data, test_data, options, finetune_epochs)
            accuracy = cache[removed]
        rows.append(SweepRow(gamma, selection.threshold, removed, accuracy, selection.removed_units, every))
        if progress is not None:
            progress(n + 1, len(gammas))
    return rows


def _accuracy(
    model: nn.Module, removed: tuple[int, ...], train_data: ImageDataset, test_data: ImageDataset,
    options: PruneOptions, epochs: int,
) -> float:  # fmt: skip
    if removed:
        example = torch.zeros((1, *test_data.input_shape))
        net: nn.Module = remove_convolutions(model, example, removed, options.strategy, options.seed).module
        train(net, train_data, epochs, options.batch_size, options.lr, options.seed, options.device)
    else:
        net = model
    return evaluate(net, test_data, device=options.device).accuracy


def removed_counts(rows: list[SweepRow]) -> np.ndarray:
    """Units removed per gamma."""
    return np.array([len(r.removed_units) for r in rows], dtype=np.int64)
