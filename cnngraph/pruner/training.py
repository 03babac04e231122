"""Seeded training and fine-tuning on an :class:`ImageDataset`, with each epoch's time recorded."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.errors import ConfigError, DataError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast mixed precision (weights, optimizer and gradients stay fp32)
CROP_PADDING = 4  # pixels of zero padding before the random crop (the standard CIFAR recipe)
Progress = Callable[[int, int], None]  # (batches done, batches in all) after every batch
Snapshot = dict[str, Any]  # everything a training run needs to go on after an epoch (see train)


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
    *,
    augment: bool = False,
    schedule: str = "constant",
    weight_decay: float | None = None,
    channels_last: bool = False,
    precision: str = "fp32",
    on_epoch: Callable[[Snapshot], None] | None = None,
    resume: Snapshot | None = None,
    average_from: int | None = None,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy; SGD (momentum 0.9, weight decay 5e-4) or Adam.

    Options for longer runs (defaults keep the plain recipe): ``augment`` (random crop after
    4-pixel zero padding and horizontal flip, per image, the standard CIFAR augmentation),
    ``schedule`` (``constant``; ``cosine`` annealing or ``onecycle`` per batch, peaking at
    ``lr``), ``weight_decay`` (default 5e-4 for SGD, 0 for Adam), ``channels_last`` memory format,
    ``precision`` (``fp32``, or ``bf16``: forward and loss under bfloat16 autocast, with the
    weights, gradients and optimizer state kept in fp32; about 2x faster on CPUs with AMX or
    AVX512-BF16 and on recent GPUs; evaluation is always fp32).
    Shuffling, augmentation, dropout masks and everything random are seeded by ``seed`` without
    disturbing the caller's global random state.

    ``on_epoch`` receives a snapshot after every epoch (weights, optimizer, schedule, random
    states, history: tensors and plain values, loadable with ``weights_only=True``); passing one
    back as ``resume`` (same model, data and options) goes on from there and ends with exactly the
    weights an uninterrupted run gives.

    ``average_from`` (an epoch, 1-based) turns on stochastic weight averaging (Izmailov et al.,
    2018): the parameters at the end of that epoch and of every later one are averaged with equal
    weights, the model ends with that average, and its batch-norm running statistics are then
    recomputed from one more shuffled pass over the training images (augmented when training is,
    no gradients), since the statistics gathered for the last weights do not fit the average.
    """
    _check(train_data, epochs, batch_size, lr, optimizer, schedule, weight_decay, precision)
    if average_from is not None and not 1 <= average_from <= epochs:
        raise ConfigError(f"weight averaging must start at an epoch in 1..{epochs}, got {average_from}")
    model.to(device)
    device_type = torch.device(device).type
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, optimizer, lr, weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(train_data)
    per_epoch = (n + batch_size - 1) // batch_size
    scheduler = _scheduler(opt, schedule, lr, epochs * per_epoch)
    history = TrainHistory()
    average = WeightAverage(model, average_from) if average_from is not None else None
    first = 0
    if resume is not None:
        first = _restore(resume, model, opt, scheduler, history, epochs, average)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order_rng = torch.Generator().manual_seed(seed)
        augment_rng = torch.Generator().manual_seed(seed + 1)
        if resume is not None:
            torch.set_rng_state(resume["rng"]["torch"])
            order_rng.set_state(resume["rng"]["order"])
            augment_rng.set_state(resume["rng"]["augment"])
        for epoch in range(first, epochs):
            model.train()
            start = time.perf_counter()
            total_loss, correct = 0.0, 0
            order = torch.randperm(n, generator=order_rng)
            for b in range(per_epoch):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x = train_data.images[idx]
                if augment:
                    x = augment_batch(x, augment_rng)
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = train_data.labels[idx].to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    out = model(x)
                    loss = loss_fn(out, y)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((out.detach().argmax(1) == y).sum())
                if progress is not None:
                    progress(epoch * per_epoch + b + 1, epochs * per_epoch)
            seconds = time.perf_counter() - start
            history.epochs.append(EpochRecord(epoch + 1, total_loss / n, correct / n, seconds))
            if average is not None and epoch + 1 >= average.start:
                average.add(model)
            if on_epoch is not None:
                on_epoch(
                    {
                        "epoch": epoch + 1,
                        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                        "optimizer": _to_cpu(opt.state_dict()),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "rng": {
                            "torch": torch.get_rng_state(),
                            "order": order_rng.get_state(),
                            "augment": augment_rng.get_state(),
                        },
                        "history": [dict(e.__dict__) for e in history.epochs],
                        **({"average": average.state()} if average is not None else {}),
                    }
                )
        if average is not None:
            average.copy_to(model)
            recompute_batch_norm(
                model, _batches(train_data, batch_size, order_rng, augment_rng if augment else None),
                device, channels_last,
            )  # fmt: skip
    model.eval()
    return history


def _batches(
    data: ImageDataset, batch_size: int, order_rng: torch.Generator, augment_rng: torch.Generator | None
) -> Iterator[torch.Tensor]:
    """One shuffled pass over ``data``'s images in batches, augmented when ``augment_rng`` is given."""
    order = torch.randperm(len(data), generator=order_rng)
    for start in range(0, len(data), batch_size):
        x = data.images[order[start : start + batch_size]]
        yield x if augment_rng is None else augment_batch(x, augment_rng)


class WeightAverage:
    """The running equal-weight mean of a model's parameters (fp32 copies on the CPU), taken from
    the end of epoch ``start`` (1-based) on."""

    def __init__(self, model: nn.Module, start: int) -> None:
        self.start = start
        self.count = 0
        self.mean = {k: torch.zeros_like(p, device="cpu") for k, p in model.named_parameters()}

    def add(self, model: nn.Module) -> None:
        self.count += 1
        with torch.no_grad():
            for k, p in model.named_parameters():
                self.mean[k] += (p.detach().to("cpu", torch.float32) - self.mean[k]) / self.count

    def copy_to(self, model: nn.Module) -> None:
        if self.count == 0:
            raise ConfigError("no weights were averaged")
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(self.mean[k].to(p.device, p.dtype))

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": {k: v.clone() for k, v in self.mean.items()}}

    def load(self, state: dict[str, Any]) -> None:
        mean = state["mean"]
        if set(mean) != set(self.mean) or any(mean[k].shape != v.shape for k, v in self.mean.items()):
            raise ValueError("averaged weights differ")
        self.count = int(state["count"])
        self.mean = {k: mean[k].to(torch.float32).clone() for k in self.mean}


def recompute_batch_norm(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    device: str | torch.device = "cpu",
    channels_last: bool = False,
) -> None:
    """Reset every batch norm's running mean and variance and recompute them as the plain average
    over ``batches`` (image tensors), in training mode without gradients; other layers are not
    changed and the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                model(x)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()


def _restore(
    snap: Snapshot,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    history: TrainHistory,
    epochs: int,
    average: WeightAverage | None = None,
) -> int:
    """Load a snapshot of :func:`train` into the fresh run; the epoch to go on from."""
    done = int(snap.get("epoch", 0))
    if not 0 < done <= epochs:
        raise ConfigError(f"the training snapshot is at epoch {done}, outside 1..{epochs}")
    try:
        model.load_state_dict(snap["model"])
        opt.load_state_dict(snap["optimizer"])
        if (scheduler is None) != (snap["scheduler"] is None):
            raise ValueError("schedule differs")
        if scheduler is not None:
            scheduler.load_state_dict(snap["scheduler"])
        history.epochs = [EpochRecord(**e) for e in snap["history"]]
        if (average is None) != ("average" not in snap):
            raise ValueError("weight averaging differs")
        if average is not None:
            average.load(snap["average"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"the training snapshot does not fit this model and these options ({detail})"
        ) from e
    return done


def _to_cpu(obj: Any) -> Any:
    """A copy of a (nested) optimizer state dict with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING
) -> torch.Tensor:
    """Random crop of each image after ``padding`` pixels of zeros, then a horizontal flip of
    half of them (chosen at random): a new tensor, ``images`` is left as it is."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [B, 1, 1, W]
    batch = torch.arange(b)[:, None, None, None]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    out = padded[batch, channels, rows, cols]
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


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


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this machine has; a :class:`ConfigError` naming what is wrong otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device '{name}'; use cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} GPU(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{name}' asked for but MPS is not available here; use --device cpu")
    return device


def native_bf16(device: str | torch.device) -> bool:
    """Whether bfloat16 arithmetic runs natively on ``device``: on a CPU, whether oneDNN has bf16
    kernels for it (AVX512 or AMX; on an AVX2-only CPU bf16 is emulated, and a ResNet-20 training
    step takes about 15x longer than in fp32); on CUDA, whether the GPU supports bf16. True when
    it cannot be told, so that nothing is claimed without evidence."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return True
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is None:
        return True
    try:
        return bool(probe())
    except RuntimeError:
        return True


def precision_warning(precision: str, device: str | torch.device = "cpu") -> str | None:
    """A one-line warning when ``precision`` will be slow on ``device`` (bf16 without native
    support), else None; training still runs as asked."""
    if precision != "bf16" or native_bf16(device):
        return None
    on_cpu = torch.device(device).type == "cpu"
    where = "this CPU has neither AVX512 nor AMX" if on_cpu else "this GPU lacks it"
    return (
        f"bf16 is emulated here ({where}), so training is much slower than in fp32 "
        "(about 15x for ResNet-20 on an AVX2 CPU); --precision fp32 is faster"
    )


def _check(
    data: ImageDataset,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    schedule: str = "constant",
    weight_decay: float | None = None,
    precision: str = "fp32",
) -> None:
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
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule '{schedule}'; use {', '.join(SCHEDULES)}")
    if weight_decay is not None and not weight_decay >= 0:
        raise ConfigError(f"weight decay must be >= 0, got {weight_decay}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; use {' or '.join(PRECISIONS)}")


def _optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay or 0.0)
    decay = 5e-4 if weight_decay is None else weight_decay
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)


def _scheduler(
    opt: torch.optim.Optimizer, schedule: str, lr: float, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch learning-rate schedule over ``steps`` batches (None: constant)."""
    if schedule == "constant" or steps < 1:
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
