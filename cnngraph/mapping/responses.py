"""Class responses and node values (docs/METHOD.md section 2).

One pass over the selected images, class after class: forward hooks on the modules whose
outputs are the block responses add each image's response into its class's running sum (one
matrix product of the pass's one-hot class matrix with its responses: a GEMM, much faster than
``index_add_`` on the CPU), so ``R_k^h`` (the mean over the images of class ``h``) needs no
second pass. :func:`class_responses` streams: once a class's last image is done its means become
node values (a descriptor over the filters of ``R_k^h[:, i, j]``) and its sums are cleared, so
only the classes of one forward pass are held; on the CPU a batch runs in chunks whose largest
feature map stays under :data:`FORWARD_BYTES`. Hooks are attached in ``try``, removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ConfigError, DataError, ModelError
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
def forward_hooks(model: nn.Module, targets: Sequence[tuple[str, Callable[..., None]]]) -> Iterator[None]:
    """Forward hooks on the named submodules for the duration of the block, removed whatever happens."""
    handles = []
    try:
        for name, fn in targets:
            handles.append(model.get_submodule(name).register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


FORWARD_BYTES = 8 * 2**20
"""On the CPU a batch goes through the model in chunks whose largest feature map stays under this
many bytes: the sums are the same, only the peak memory drops (a chunk's feature maps and the
model's temporaries are all that is held). On the quiet 2-core development machine VGG16 at
112x112 ran as fast in chunks of 2 images (this budget) as in chunks of 10 (2% apart) and faster
than whole batches of 128; with the cores shared by other work (load 4) the many small passes
cost up to 1.5x the CPU time (each operation is a barrier for the threads)."""

FinishedFn = Callable[[int, int, "_Accumulator"], None]


def forward_chunk(traced: TracedModel, batch_size: int, device: torch.device) -> int:
    """Images per forward pass: ``batch_size``, or fewer on the CPU (see :data:`FORWARD_BYTES`)."""
    if device.type != "cpu":
        return batch_size
    largest = 1
    for node in traced.graph_module.graph.nodes:
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)
        if shape is not None and len(shape) > 1:
            largest = max(largest, int(np.prod([int(v) for v in shape[1:]])))
    return max(1, min(batch_size, FORWARD_BYTES // (4 * largest)))


def _chunks(count: int, batch_size: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of every forward pass: batches of ``batch_size``, each cut into ``chunk``s."""
    return [
        (part, min(part + chunk, start + batch_size, count))
        for start in range(0, count, batch_size)
        for part in range(start, min(start + batch_size, count), chunk)
    ]


def _accumulate(
    model: nn.Module,
    traced: TracedModel,
    images: torch.Tensor,
    class_indices: Sequence[np.ndarray],
    *,
    response: str,
    batch_size: int,
    device: str | torch.device | None,
    progress: ProgressFn | None,
    finished: FinishedFn | None = None,
    normalize: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> _Accumulator:
    """Run every selected image once, class after class, adding each response into its class's
    running sum. Without ``finished`` every class has its row of the sums; with it, class ``h``
    uses row ``h % rows``, and after each forward pass ``finished(first, stop, acc)`` receives the
    classes ``first .. stop - 1`` whose images are all done, so their rows can be read and
    cleared: only the classes one forward pass touches are ever held."""
    _check(response, batch_size)
    dev = pick_device(device)
    sizes = np.array([len(ix) for ix in class_indices], dtype=np.int64)
    order = np.concatenate([np.asarray(ix, dtype=np.int64) for ix in class_indices])
    classes = np.repeat(np.arange(len(class_indices)), sizes)
    ends = np.cumsum(sizes)
    parts = _chunks(order.size, batch_size, forward_chunk(traced, batch_size, dev))
    rows = len(class_indices) if finished is None else _classes_per_part(ends, parts)
    acc = _Accumulator(traced.convs, rows, dev)
    targets = []
    for k, conv in enumerate(traced.convs):
        if response == "activation":
            targets.append((conv.response_module, acc.hook(k, conv.post_ops)))
        else:
            targets.append((conv.name, acc.hook(k, ())))
    scale = None if normalize is None else tuple(v.to(dev).view(1, -1, 1, 1) for v in normalize)
    was_training = model.training
    original = _device_of(model)
    model.eval().to(dev)
    done = 0
    try:
        with forward_hooks(model, targets), torch.inference_mode():
            for start, stop in parts:
                acc.set_batch(torch.from_numpy(classes[start:stop] % acc.num_classes).to(dev))
                x = images[torch.from_numpy(order[start:stop])].to(dev, non_blocking=True)
                if scale is not None:
                    x = x.sub_(scale[0]).div_(scale[1])
                _forward(model, x)
                del x
                complete = int(np.searchsorted(ends, stop, side="right"))
                if finished is not None and complete > done:
                    finished(done, complete, acc)
                    done = complete
                if progress is not None and (stop == order.size or stop % batch_size == 0):
                    progress(stop, order.size)
        if finished is not None and done < len(class_indices):  # classes without images (NaN, as 0 / 0)
            finished(done, len(class_indices), acc)
    finally:
        model.train(was_training).to(original)
    return acc


def _classes_per_part(ends: np.ndarray, parts: Sequence[tuple[int, int]]) -> int:
    """The most classes one forward pass touches (classes without images between them included):
    rows enough that the classes open at once never share one."""
    if not parts:
        return 1
    bounds = np.array(parts, dtype=np.int64)
    first = np.searchsorted(ends, bounds[:, 0], side="right")
    last = np.searchsorted(ends, bounds[:, 1] - 1, side="right")
    return int((last - first).max()) + 1


def _check(response: str, batch_size: int) -> None:
    if response not in RESPONSES:
        raise ConfigError(f"unknown response '{response}'; use one of {', '.join(RESPONSES)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")


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
    """``R_k^h`` for every layer ``k``: float32 tensors ``[t, x_k, H_k, W_k]`` on the device used.

    All classes are held at once; :func:`class_responses` streams them instead.
    """
    acc = _accumulate(
        model, traced, images, class_indices,
        response=response, batch_size=batch_size, device=device, progress=progress,
    )  # fmt: skip
    counts = torch.tensor([len(ix) for ix in class_indices], dtype=torch.float32, device=acc.sums[0].device)
    return [s.div_(counts.view(-1, 1, 1, 1)) for s in acc.sums]


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
    descriptors: Sequence[str] = FILTER_DESCRIPTORS,
    normalize: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Node values per descriptor, float32 ``[t, N]`` in global node order.

    ``class_indices[h]`` are the indices into ``images`` of the images of class ``h``;
    ``normalize``: per-channel ``(mean, std)`` applied to each batch (the images stay as given).
    The per-class sums are streamed: the images run class after class, and once a class's last
    image is done its mean responses become node values and its sums are dropped, so memory holds
    the sums of the classes of one forward pass rather than of all ``t``.
    """
    _check(response, batch_size)
    total = sum(c.out_shape[1] * c.out_shape[2] for c in traced.convs)
    values = {d: np.full((len(class_indices), total), np.nan, dtype=np.float32) for d in descriptors}
    counts = [len(ix) for ix in class_indices]

    def finished(first: int, stop: int, acc: _Accumulator) -> None:
        for h in range(first, stop):  # one class at a time: one class's means in memory
            if counts[h] == 0:
                continue  # a class without images stays NaN (0 / 0)
            row = h % acc.num_classes
            means = [s[row : row + 1] / counts[h] for s in acc.sums]
            for name, v in node_values(means, descriptors).items():
                values[name][h] = v[0]
            for s in acc.sums:
                s[row] = 0.0

    _accumulate(
        model, traced, images, class_indices,
        response=response, batch_size=batch_size, device=device, progress=progress,
        finished=finished, normalize=normalize,
    )  # fmt: skip
    return values


def per_channel_scale(
    channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean, std)`` per channel for :func:`class_responses` (one value applies to every channel),
    or None without normalisation; the rules of :meth:`ImageDataset.normalized`."""
    if mean is None and std is None:
        return None
    out = []
    for values, what, default in ((mean, "mean", 0.0), (std, "std", 1.0)):
        listed = list(values) if values is not None else [default]
        if len(listed) == 1:
            listed = listed * channels
        if len(listed) != channels:
            raise DataError(f"{what} has {len(listed)} values but the images have {channels} channels")
        out.append(torch.tensor(listed, dtype=torch.float32))
    if (out[1] <= 0).any():
        raise DataError("every std value must be positive")
    return out[0], out[1]
