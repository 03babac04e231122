"""Class responses and node values (docs/METHOD.md section 2).

One pass over the selected images, in mixed-class batches: forward hooks on the modules whose
outputs are the block responses add each image's response into a per-class running sum
(one matrix product of the batch's one-hot class matrix with its responses: a GEMM, much faster
than ``index_add_`` on the CPU), so ``R_k^h`` (the mean over the images of class ``h``) needs no
second pass and no per-class batching. Node values are the mean and the median of ``R_k^h[:, i, j]`` over the
filters. Hooks are attached in ``try`` and removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ConfigError, ModelError
from cnngraph.mapping.trace import ConvBlock, TracedModel

RESPONSES = ("activation", "conv")
ProgressFn = Callable[[int, int], None]


def pick_device(device: str | torch.device | None) -> torch.device:
    """The requested device, or the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device '{device}' ({e}); use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for but no CUDA GPU is available; use --device cpu")
    return dev


class _Accumulator:
    """Per-class running sums of every layer's response, fed by forward hooks."""

    def __init__(self, convs: Sequence[ConvBlock], num_classes: int, device: torch.device) -> None:
        self.convs = convs
        self.sums = [
            torch.zeros((num_classes, *c.out_shape), dtype=torch.float32, device=device) for c in convs
        ]
        self.num_classes = num_classes
        self.batch_onehot = torch.zeros((num_classes, 0), dtype=torch.float32, device=device)

    def set_batch(self, classes: torch.Tensor) -> None:
        """The classes of the images of the next batch (int64 [B])."""
        onehot = torch.zeros((self.num_classes, classes.shape[0]), dtype=torch.float32, device=classes.device)
        onehot[classes, torch.arange(classes.shape[0], device=classes.device)] = 1.0
        self.batch_onehot = onehot

    def hook(self, k: int, post_ops: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[..., None]:
        conv = self.convs[k]

        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            y = output
            for op in post_ops:  # replayed ops are never in place: the model's tensor is untouched
                y = op(y)
            if tuple(y.shape[1:]) != conv.out_shape:
                raise ModelError(
                    f"'{conv.name}' produced responses of shape {tuple(y.shape[1:])}, expected "
                    f"{conv.out_shape} from tracing; the images do not match the traced input shape"
                )
            flat = self.sums[k].view(self.num_classes, -1)
            flat.addmm_(self.batch_onehot, y.float().reshape(y.shape[0], -1))

        return record


@contextmanager
def _hooks(model: nn.Module, targets: Sequence[tuple[str, Callable[..., None]]]) -> Iterator[None]:
    handles = []
    try:
        for name, fn in targets:
            handles.append(model.get_submodule(name).register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def class_mean_responses(
    model: nn.Module,
    traced: TracedModel,
    images: torch.Tensor,
    class_indices: Sequence[np.ndarray],
    *,
    response: str = "activation",
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
) -> list[torch.Tensor]:
    """``R_k^h`` for every layer ``k``: float32 tensors ``[t, x_k, H_k, W_k]`` on the device used."""
    if response not in RESPONSES:
        raise ConfigError(f"unknown response '{response}'; use one of {', '.join(RESPONSES)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    dev = pick_device(device)
    order = np.concatenate([np.asarray(ix, dtype=np.int64) for ix in class_indices])
    classes = np.repeat(np.arange(len(class_indices)), [len(ix) for ix in class_indices])
    counts = torch.tensor([len(ix) for ix in class_indices], dtype=torch.float32)
    acc = _Accumulator(traced.convs, len(class_indices), dev)
    targets = []
    for k, conv in enumerate(traced.convs):
        if response == "activation":
            targets.append((conv.response_module, acc.hook(k, conv.post_ops)))
        else:
            targets.append((conv.name, acc.hook(k, ())))
    was_training = model.training
    original = _device_of(model)
    model.eval().to(dev)
    try:
        with _hooks(model, targets), torch.inference_mode():
            for start in range(0, order.size, batch_size):
                idx = order[start : start + batch_size]
                acc.set_batch(torch.from_numpy(classes[start : start + batch_size]).to(dev))
                _forward(model, images[torch.from_numpy(idx)].to(dev, non_blocking=True))
                if progress is not None:
                    progress(min(start + batch_size, order.size), order.size)
    finally:
        model.train(was_training).to(original)
    return [s / counts.to(dev).view(-1, 1, 1, 1) for s in acc.sums]


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _forward(model: nn.Module, x: torch.Tensor) -> None:
    try:
        model(x)
    except ModelError:
        raise
    except Exception as e:  # user model code: report, do not crash with a traceback
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(
            f"the forward pass of {type(model).__name__} failed on a batch of shape {tuple(x.shape)} "
            f"({type(e).__name__}: {first})"
        ) from e


FILTER_DESCRIPTORS = ("mean", "median", "max", "sum")
"""Every statistic over the filters a node value can be (docs/METHOD.md sections 2 and 9)."""


def filter_descriptor(r: torch.Tensor, descriptor: str) -> torch.Tensor:
    """One descriptor over dim 1 (the filters) of ``r`` ``[t, x, H, W]``: ``[t, H, W]``."""
    if descriptor == "mean":
        return r.mean(dim=1)
    if descriptor == "median":
        return filter_median(r)
    if descriptor == "max":
        return r.amax(dim=1)
    if descriptor == "sum":
        return r.sum(dim=1)
    raise ConfigError(f"unknown descriptor '{descriptor}'; use one of {', '.join(FILTER_DESCRIPTORS)}")


def node_values(
    means: Sequence[torch.Tensor], descriptors: Sequence[str] = ("mean", "median")
) -> dict[str, np.ndarray]:
    """Node values in global node order, one float32 ``[t, N]`` array per descriptor."""
    return {
        d: torch.cat([filter_descriptor(m, d).flatten(1) for m in means], dim=1)
        .cpu()
        .numpy()
        .astype(np.float32)
        for d in descriptors
    }


def filter_median(r: torch.Tensor) -> torch.Tensor:
    """Median over dim 1, averaging the two middle values for an even count (as numpy does).

    On the CPU numpy's partition-based median is about 4x faster than ``kthvalue``.
    """
    if r.device.type == "cpu":
        return torch.from_numpy(np.median(r.detach().numpy(), axis=1))
    return median_by_kthvalue(r)


def median_by_kthvalue(r: torch.Tensor) -> torch.Tensor:
    """:func:`filter_median` on any device, by one or two ``kthvalue`` selections."""
    n = r.shape[1]
    low = torch.kthvalue(r, (n + 1) // 2, dim=1).values
    if n % 2:
        return low
    return (low + torch.kthvalue(r, n // 2 + 1, dim=1).values) / 2


def class_responses(
    model: nn.Module,
    traced: TracedModel,
    images: torch.Tensor,
    class_indices: Sequence[np.ndarray],
    *,
    response: str = "activation",
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Node values per descriptor (``mean``, ``median``), float32 ``[t, N]`` in global node order.

    ``class_indices[h]`` are the indices into ``images`` of the images of class ``h``.
    """
    means = class_mean_responses(
        model, traced, images, class_indices,
        response=response, batch_size=batch_size, device=device, progress=progress,
    )  # fmt: skip
    return node_values(means, FILTER_DESCRIPTORS)
