"""Seeded training and fine-tuning on an :class:`ImageDataset`, with each epoch's time recorded."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.errors import ConfigError, DataError

OPTIMIZERS = ("sgd", "adam")
Progress = Callable[[int, int], None]  # (batches done, batches in all) after every batch


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss, training accuracy and wall-clock seconds."""

    epoch: int
    loss: float
    accuracy: float
    seconds: float


@dataclass
class TrainHistory:
    """Every epoch of one training run."""

    epochs: list[EpochRecord] = field(default_factory=list)

    @property
    def mean_epoch_seconds(self) -> float:
        return sum(e.seconds for e in self.epochs) / len(self.epochs) if self.epochs else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "epochs": [e.__dict__ for e in self.epochs],
            "mean_epoch_seconds": self.mean_epoch_seconds if self.epochs else None,
        }


def train(
    model: nn.Module,
    train_data: ImageDataset,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    optimizer: str = "sgd",
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy; SGD (momentum 0.9, weight decay 5e-4) or Adam.

    Shuffling, initialisation of dropout masks and everything random is seeded by ``seed`` without
    disturbing the caller's global random state.
    """
    _check(train_data, epochs, batch_size, lr, optimizer)
    model.to(device)
    opt = _optimizer(model, optimizer, lr)
    loss_fn = nn.CrossEntropyLoss()
    n = len(train_data)
    per_epoch = (n + batch_size - 1) // batch_size
    history = TrainHistory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order_rng = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            model.train()
            start = time.perf_counter()
            total_loss, correct = 0.0, 0
            order = torch.randperm(n, generator=order_rng)
            for b in range(per_epoch):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x = train_data.images[idx].to(device)
                y = train_data.labels[idx].to(device)
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                opt.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((out.detach().argmax(1) == y).sum())
                if progress is not None:
                    progress(epoch * per_epoch + b + 1, epochs * per_epoch)
            seconds = time.perf_counter() - start
            history.epochs.append(EpochRecord(epoch + 1, total_loss / n, correct / n, seconds))
    model.eval()
    return history


def time_epoch(
    model: nn.Module,
    train_data: ImageDataset,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Seconds one training epoch of ``model`` takes, measured on a copy (``model`` is untouched)."""
    return train(copy.deepcopy(model), train_data, 1, batch_size, lr, seed, device).mean_epoch_seconds


def _check(data: ImageDataset, epochs: int, batch_size: int, lr: float, optimizer: str) -> None:
    if len(data) == 0:
        raise DataError("the training set is empty")
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{optimizer}'; use sgd or adam")


def _optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
