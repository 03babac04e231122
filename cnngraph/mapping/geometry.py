"""Per-axis geometry between two convolutions (docs/METHOD.md sections 3 and 8).

Everything works on one spatial axis at a time and on whole index arrays. An :class:`AxisMap`
says, for every index of some feature map, which indices of a source convolution's output it
depends on (a sorted set of ``(target, source)`` pairs) and where its window is centred on the
source grid. Maps are built from the source outwards: :func:`identity` at the source
convolution's output, then one step per operation on the way (:func:`through_taps` for
poolings and the target convolution itself, :func:`through_adaptive` for adaptive pooling,
:func:`through_broadcast` for a 1-wide map broadcast over a wider one). Only the positions an
operation actually reads count: with dilation ``d`` the taps of a ``k``-wide kernel are
``x * s - pad + d * m``, ``m = 0 .. k-1``, a tap in zero padding reads nothing and a tap in
reflect/circular/replicate padding reads the position that padding copies. A window is a
product of its two axes, so the arcs are the product of the row and column maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnngraph.errors import ModelError

PADDING_MODES = ("zeros", "reflect", "circular", "replicate")


@dataclass(frozen=True)
class AxisConv:
    """A convolution along one axis: kernel, stride, padding (left/top), dilation, padding mode."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    mode: str = "zeros"


@dataclass(frozen=True)
class AxisPool:
    """A pooling window along one axis (max and average pooling share their geometry)."""

    kernel: int
    stride: int
    padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    def out_size(self, size: int) -> int:
        """Output length for an input of ``size``, with PyTorch's rounding rules."""
        span = size + 2 * self.padding - self.dilation * (self.kernel - 1) - 1
        if span < 0:
            raise ModelError(f"pooling window {self.kernel} does not fit an input of size {size}")
        if self.ceil_mode:
            out = -(-span // self.stride) + 1
            # PyTorch drops a last window that would start inside the right padding only.
            if (out - 1) * self.stride >= size + self.padding:
                out -= 1
            return out
        return span // self.stride + 1

    def as_taps(self) -> AxisConv:
        """The pooling's taps (pooling pads with values that are never selected: zero-like)."""
        return AxisConv(self.kernel, self.stride, self.padding, self.dilation)


@dataclass(frozen=True)
class AxisMap:
    """Which source positions each of ``size`` positions depends on, along one axis.

    ``target``/``source``: the dependency pairs, sorted by target then source, no duplicates.
    ``lo``/``hi``: float64 [size], each position's footprint on the source grid before any
    clipping to it (the first and last source index its window spans); its window centre is
    their midpoint.
    ``broadcast``: the source (a 1-wide map) was broadcast over this axis on the way.
    """

    target: np.ndarray
    source: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    size: int
    source_size: int
    broadcast: bool = False

    @property
    def centre(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    def same_pairs(self, other: AxisMap) -> bool:
        return (
            self.size == other.size
            and self.broadcast == other.broadcast
            and np.array_equal(self.target, other.target)
            and np.array_equal(self.source, other.source)
            and np.array_equal(self.lo, other.lo)
            and np.array_equal(self.hi, other.hi)
        )


def identity(size: int) -> AxisMap:
    """The output of the source convolution itself: every position depends on itself."""
    idx = np.arange(size, dtype=np.int64)
    return AxisMap(idx, idx.copy(), idx.astype(np.float64), idx.astype(np.float64), size, size)


def conv_out_size(conv: AxisConv, size: int, padding_end: int | None = None) -> int:
    """Output length of ``conv`` on an input of ``size`` (PyTorch's floor rule)."""
    end = conv.padding if padding_end is None else padding_end
    span = size + conv.padding + end - conv.dilation * (conv.kernel - 1) - 1
    return span // conv.stride + 1 if span >= 0 else 0


def padded_index(y: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(index, valid)``: the input position a tap at ``y`` reads under padding ``mode``.

    Zero padding reads nothing outside ``[0, size)``; reflect mirrors without repeating the
    border, replicate repeats it, circular wraps around.
    """
    inside = (y >= 0) & (y < size)
    if mode == "zeros":
        return np.where(inside, y, 0), inside
    if mode == "replicate":
        return np.clip(y, 0, size - 1), np.ones_like(inside)
    if mode == "circular":
        return np.mod(y, size), np.ones_like(inside)
    if mode == "reflect":
        if size == 1:
            return np.zeros_like(y), np.ones_like(inside)
        period = 2 * (size - 1)
        r = np.mod(y, period)
        return np.where(r < size, r, period - r), np.ones_like(inside)
    raise ModelError(f"padding mode '{mode}' is unknown; use one of {', '.join(PADDING_MODES)}")


def _compose(x: np.ndarray, y: np.ndarray, inner: AxisMap, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(x, z)`` for every read ``x -> y`` and every dependency ``y -> z`` of ``inner``."""
    lo = np.searchsorted(inner.target, y, side="left")
    hi = np.searchsorted(inner.target, y, side="right")
    counts = hi - lo
    total = int(counts.sum())
    xs = np.repeat(x, counts)
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    zs = inner.source[starts + np.arange(total, dtype=np.int64)]
    key = np.unique(xs * inner.source_size + zs)
    return key // inner.source_size, key % inner.source_size


def _extend(bound: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``bound`` at integer indices ``y``, continued linearly beyond both ends (into the padding).

    Exact for the affine footprints of convolutions and poolings.
    """
    n = bound.shape[0]
    if n == 1:
        return np.full(y.shape, bound[0], dtype=np.float64)
    inside = bound[np.clip(y, 0, n - 1)]
    below = bound[0] + (bound[1] - bound[0]) * y
    above = bound[-1] + (bound[-1] - bound[-2]) * (y - n + 1)
    return np.where(y < 0, below, np.where(y >= n, above, inside))


def through_taps(inner: AxisMap, conv: AxisConv, out_size: int) -> AxisMap:
    """``inner`` seen through a sliding window (a convolution or a pooling) giving ``out_size``."""
    x = np.arange(out_size, dtype=np.int64)
    xs, ys = [], []
    for m in range(conv.kernel):  # one vectorised step per kernel tap
        y, valid = padded_index(x * conv.stride - conv.padding + conv.dilation * m, inner.size, conv.mode)
        xs.append(x[valid])
        ys.append(y[valid])
    target, source = _compose(np.concatenate(xs), np.concatenate(ys), inner, out_size)
    first = x * conv.stride - conv.padding
    lo, hi = _extend(inner.lo, first), _extend(inner.hi, first + conv.dilation * (conv.kernel - 1))
    return AxisMap(target, source, lo, hi, out_size, inner.source_size, inner.broadcast)


def adaptive_window(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive pooling window per output index: ``[floor(o*In/Out), ceil((o+1)*In/Out))``."""
    o = np.arange(out_size, dtype=np.int64)
    return (o * in_size) // out_size, -((-(o + 1) * in_size) // out_size)


def through_adaptive(inner: AxisMap, out_size: int) -> AxisMap:
    """``inner`` seen through adaptive (average or max) pooling to ``out_size``."""
    start, end = adaptive_window(inner.size, out_size)
    x = np.arange(out_size, dtype=np.int64)
    xs, ys = [], []
    for m in range(int((end - start).max())):  # one step per tap of the widest window
        valid = start + m < end
        xs.append(x[valid])
        ys.append((start + m)[valid])
    target, source = _compose(np.concatenate(xs), np.concatenate(ys), inner, out_size)
    return AxisMap(
        target, source, inner.lo[start], inner.hi[end - 1], out_size, inner.source_size, inner.broadcast
    )


def through_broadcast(inner: AxisMap, out_size: int) -> AxisMap:
    """A 1-wide ``inner`` broadcast to ``out_size``: every position reads its one position."""
    if inner.size != 1:
        raise ModelError(f"only a 1-wide map can be broadcast, not one of width {inner.size}")
    x = np.arange(out_size, dtype=np.int64)
    target, source = _compose(x, np.zeros(out_size, dtype=np.int64), inner, out_size)
    lo, hi = np.full(out_size, inner.lo[0]), np.full(out_size, inner.hi[0])
    return AxisMap(target, source, lo, hi, out_size, inner.source_size, broadcast=True)


def nearest_target(m: AxisMap) -> np.ndarray:
    """``pi`` per source index: the target whose window centre is nearest (docs/METHOD.md section 3).

    Ties (two or more centres equally near) go to the candidate nearest ``floor(u * size /
    source_size)``: ``u // r`` under a stride ``r``, ``u`` for an even kernel under 'same'. The
    tied candidates are always a run of consecutive targets (the centres never decrease), so that
    nearest candidate is the rule's index clipped to the run. After a broadcast no window is centred
    anywhere in particular: the centre of the target grid, ``(size - 1) // 2``, is taken (section 8).
    """
    if m.broadcast:
        return np.full(m.source_size, (m.size - 1) // 2, dtype=np.int64)
    u = np.arange(m.source_size, dtype=np.int64)
    c = np.maximum.accumulate(m.centre)  # non-decreasing already; guards the searches
    right = np.searchsorted(c, u, side="left")  # first centre >= u; right - 1: the last one below
    below = np.where(right > 0, u - c[np.maximum(right - 1, 0)], np.inf)
    above = np.where(right < m.size, c[np.minimum(right, m.size - 1)] - u, np.inf)
    first = np.where(below <= above, np.searchsorted(c, c[np.maximum(right - 1, 0)], side="left"), right)
    last = np.where(
        above <= below, np.searchsorted(c, c[np.minimum(right, m.size - 1)], side="right") - 1, right - 1
    )
    return np.clip((u * m.size) // m.source_size, first, last).astype(np.int64)
