"""Selection -> surgery -> fine-tune -> evaluate both -> report: one pruning run, for CLI and API.

:func:`prune_model` takes the trained model, its spec, the node scores and the train/test split;
:func:`write_outputs` puts the pruned model, its recipe, the report and the plots in a folder
(atomically). :func:`choose_layers` is the selection step alone, used by ``--dry-run`` and sweeps;
it works on the model's removable units (:mod:`cnngraph.pruner.units`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.errors import ConfigError, PruningError, counted
from cnngraph.models import ModelSpec
from cnngraph.pruner import plots
from cnngraph.pruner.metrics import LATENCY_REPEATS, Summary, evaluate, measure
from cnngraph.pruner.report import build_report, staged_directory, write_json
from cnngraph.pruner.select import (
    SELECT_METHODS,
    THRESHOLD_STATS,
    UnitSelection,
    annotate,
    gamma_for_count,
    last_units,
    parse_layer_rule,
    random_units,
    select_units,
    weight_norm_units,
)
from cnngraph.pruner.surgery import STRATEGIES, PrunedModel, remove_convolutions, save_pruned
from cnngraph.pruner.training import PRECISIONS, SCHEDULES, Progress, TrainHistory, time_epoch, train
from cnngraph.pruner.units import Unit, chain_units, find_units
from cnngraph.scores import NodeScores

AGGREGATORS = ("entropy", "mean", "participation")


@dataclass(frozen=True)
class PruneOptions:
    """Every choice of a pruning run; recorded in the report."""

    gamma: float = 1.0
    remove: int | None = None  # when set: gamma chosen so that the rule removes this many units
    threshold_stat: str = "mean"
    layer_rule: str = "any"
    aggregator: str = "entropy"
    select: str = "entropy"
    strategy: str = "reinit"
    seed: int = 0
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"
    augment: bool = False  # fine-tune with random crops and flips
    schedule: str = "constant"  # fine-tune learning rate: constant, cosine or onecycle
    precision: str = "fp32"  # fine-tune in fp32 or under bfloat16 autocast (bf16)
    latency_repeats: int = LATENCY_REPEATS
    device: str = "cpu"

    def check(self) -> None:
        if self.select not in SELECT_METHODS:
            raise ConfigError(f"unknown selection '{self.select}'; use one of {', '.join(SELECT_METHODS)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy '{self.strategy}'; use one of {', '.join(STRATEGIES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown learning-rate schedule '{self.schedule}'; use {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; use {' or '.join(PRECISIONS)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.aggregator not in AGGREGATORS:
            raise ConfigError(f"unknown aggregator '{self.aggregator}'; use one of {', '.join(AGGREGATORS)}")
        if self.threshold_stat not in THRESHOLD_STATS:
            raise ConfigError(f"unknown threshold statistic '{self.threshold_stat}'; use mean or median")
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ConfigError(f"gamma must be a finite number >= 0, got {self.gamma}")
        parse_layer_rule(self.layer_rule)
        if self.remove is not None and self.remove < 0:
            raise ConfigError(f"the number of units to remove must be >= 0, got {self.remove}")
        if self.latency_repeats < 1:
            raise ConfigError(f"latency repeats must be >= 1, got {self.latency_repeats}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PruneResult:
    """Everything one run produced."""

    selection: UnitSelection
    pruned: PrunedModel
    original: Summary
    result: Summary
    history: TrainHistory
    spec: ModelSpec
    report: dict[str, Any] = field(default_factory=dict)


def choose_layers(
    model: nn.Module | None, scores: NodeScores, options: PruneOptions, units: list[Unit] | None = None
) -> UnitSelection:
    """The units to keep: by score, or a baseline removing as many removable units as the score would.

    ``units`` default to the model's (:func:`find_units`); without a model every layer of
    ``scores`` counts as a chain unit (a VGG-style model).
    """
    options.check()
    if units is None:
        units = find_units(model) if model is not None else chain_units(_layer_names(scores))
    gamma = options.gamma
    if options.remove is not None:
        gamma = gamma_for_count(
            scores,
            units,
            options.remove,
            aggregator=options.aggregator,
            threshold_stat=options.threshold_stat,
            layer_rule=options.layer_rule,
        )
    by_score = select_units(
        scores,
        units,
        gamma,
        aggregator=options.aggregator,
        threshold_stat=options.threshold_stat,
        layer_rule=options.layer_rule,
    )
    if options.select == "entropy":
        return by_score
    n_remove = len(by_score.removed_units)
    if options.select == "random":
        baseline = random_units(units, n_remove, options.seed)
    elif options.select == "last":
        baseline = last_units(units, n_remove)
    else:
        if model is None:
            raise ConfigError("the weight-norm baseline needs the model's weights (--checkpoint)")
        baseline = weight_norm_units(model, units, n_remove)
    annotated = annotate(baseline, scores, options.aggregator, by_score.threshold)
    return UnitSelection(
        rows=annotated.rows,
        method=annotated.method,
        threshold=by_score.threshold,
        options={**by_score.options, **annotated.options},
    )


def _layer_names(scores: NodeScores) -> list[str]:
    names = scores.layer_names
    return [names[k] if k < len(names) else f"conv{k}" for k in range(scores.num_layers)]


def check_layers(model: nn.Module, scores: NodeScores, units: list[Unit] | None = None) -> list[str]:
    """The model's convolutions; a :class:`PruningError` when the scores cover another model."""
    units = find_units(model) if units is None else units
    by_index = {k: name for unit in units for k, name in zip(unit.convs, unit.conv_names, strict=True)}
    names = [by_index[k] for k in sorted(by_index)]
    if scores.num_layers != len(names):
        raise PruningError(
            f"graph model '{scores.model}' has {counted(scores.num_layers, 'layer')} but the checkpoint's "
            f"model has {counted(len(names), 'convolution')}; map and load this checkpoint first"
        )
    return names


def prune_model(
    model: nn.Module,
    spec: ModelSpec,
    scores: NodeScores,
    train_data: ImageDataset,
    test_data: ImageDataset,
    options: PruneOptions,
    progress: Progress | None = None,
) -> PruneResult:
    """Select, remove, fine-tune and evaluate; ``model`` itself is left unchanged."""
    options.check()
    units = find_units(model)
    names = check_layers(model, scores, units)
    selection = choose_layers(model, scores, options, units)
    _check_selection(selection)
    shape = (1, *test_data.input_shape)
    model.eval()
    pruned = remove_convolutions(model, torch.zeros(shape), selection.removed, options.strategy, options.seed)
    original = summarise(model, test_data, train_data, options, epoch_seconds=None)
    history = train(
        pruned.module, train_data, options.epochs, options.batch_size, options.lr, options.seed,
        options.device, progress, options.optimizer, augment=options.augment, schedule=options.schedule,
        precision=options.precision,
    )  # fmt: skip
    result = summarise(pruned.module, test_data, train_data, options, epoch_seconds=_mean(history))
    report = build_report(
        selection,
        pruned,
        original,
        result,
        options.to_dict(),
        extra={
            "model": scores.model,
            "descriptor": scores.descriptor,
            "spec": spec.to_dict(),
            "convolutions": names,
            "units": [u.to_dict() for u in units],
            "fine_tune": history.to_dict(),
            "data": {
                "train_images": len(train_data),
                "test_images": len(test_data),
                "source": test_data.source,
            },
        },
    )
    return PruneResult(selection, pruned, original, result, history, spec, report)


def summarise(
    model: nn.Module,
    test_data: ImageDataset,
    train_data: ImageDataset,
    options: PruneOptions,
    epoch_seconds: float | None,
) -> Summary:
    """Metrics on ``test_data`` and cost; epoch time timed on a copy when not given."""
    metrics = evaluate(model, test_data, device=options.device)
    cost = measure(model, test_data.input_shape, options.latency_repeats)
    if epoch_seconds is None:
        epoch_seconds = time_epoch(
            model, train_data, options.batch_size, options.lr, options.seed, options.device
        )
    return Summary(metrics, cost, epoch_seconds)


def _mean(history: TrainHistory) -> float | None:
    return history.mean_epoch_seconds if history.epochs else None


def _check_selection(selection: UnitSelection) -> None:
    if not selection.kept:
        gamma = selection.options.get("gamma")
        raise PruningError(f"gamma {gamma} selects no node, so every convolution would go; lower --gamma")


def write_outputs(result: PruneResult, scores: NodeScores, out_dir: str | Path) -> dict[str, Path]:
    """``pruned.pt`` + ``pruned.json`` (recipe), ``report.json``, ``delta_heatmap.png``, ``layers.png``.

    Written into a temporary folder that replaces ``out_dir`` only when everything succeeded.
    """
    aggregator = str(result.report.get("options", {}).get("aggregator", "entropy"))
    names = ("pruned.pt", "pruned.json", "report.json", "delta_heatmap.png", "layers.png")
    with staged_directory(out_dir) as tmp:
        save_pruned(tmp / "pruned.pt", result.pruned, result.spec, {"report": "report.json"})
        write_json(tmp / "report.json", result.report)
        plots.plot_delta_heatmaps(scores, result.selection, tmp / "delta_heatmap.png", aggregator)
        plots.plot_layers(result.selection, tmp / "layers.png")
    out = Path(out_dir)
    return {name: out / name for name in names}


def original_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode, for callers that want to keep their model untouched."""
    return copy.deepcopy(model).eval()
