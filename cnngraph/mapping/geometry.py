"""Per-axis geometry between consecutive convolutions (METHOD.md section 3).

Everything works on one spatial axis at a time and on whole index arrays: the window that a
target position of ``c_{k+1}`` reads, mapped back through the pooling between the two
convolutions onto the grid of ``V_k``, and the position of ``V_{k+1}`` whose window is centred
nearest to each node of ``V_k`` (the arc-weight rule). Windows are rectangles, so the 2-D
geometry is the product of the two axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnngraph.errors import ModelError


@dataclass(frozen=True)
class AxisConv:
    """A convolution along one axis: kernel, stride, padding (left), dilation."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1


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


@dataclass(frozen=True)
class Centre:
    """The affine map ``c(p) = alpha * p + beta`` from a target index to its window centre.

    ``two_beta`` is ``2 * beta``, an integer, so all arithmetic stays exact.
    """

    alpha: int
    two_beta: int

    def then(self, pool: AxisPool) -> Centre:
        """Compose with one more pooling back towards the source grid."""
        return Centre(
            alpha=self.alpha * pool.stride,
            two_beta=pool.stride * self.two_beta - 2 * pool.padding + (pool.kernel - 1) * pool.dilation,
        )


def conv_out_size(conv: AxisConv, size: int) -> int:
    """Output length of ``conv`` on an input of ``size`` (PyTorch's floor rule)."""
    span = size + 2 * conv.padding - conv.dilation * (conv.kernel - 1) - 1
    return span // conv.stride + 1 if span >= 0 else 0


def input_sizes(size: int, pools: Sequence[AxisPool]) -> list[int]:
    """The length seen by each pooling (and, last, by the next convolution), from ``size``."""
    sizes = [size]
    for pool in pools:
        sizes.append(pool.out_size(sizes[-1]))
    return sizes


def windows(
    conv: AxisConv, out_size: int, source_size: int, pools: Sequence[AxisPool]
) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` per target index: the closed interval of source positions each one reads.

    ``pools`` are the poolings between the source layer and ``conv``, in execution order.
    An interval may be empty (``hi < lo``) when a window lies wholly in the padding.
    """
    sizes = input_sizes(source_size, pools)
    p = np.arange(out_size, dtype=np.int64)
    lo = p * conv.stride - conv.padding
    hi = lo + (conv.kernel - 1) * conv.dilation
    lo, hi = np.maximum(lo, 0), np.minimum(hi, sizes[-1] - 1)
    for pool, size_in in zip(reversed(pools), reversed(sizes[:-1]), strict=True):
        lo = lo * pool.stride - pool.padding
        hi = hi * pool.stride - pool.padding + (pool.kernel - 1) * pool.dilation
        lo, hi = np.maximum(lo, 0), np.minimum(hi, size_in - 1)
    return lo, hi


def centre(conv: AxisConv, pools: Sequence[AxisPool]) -> Centre:
    """Window centre of target ``p`` on the source grid, as an affine map of ``p``."""
    c = Centre(alpha=conv.stride, two_beta=-2 * conv.padding + (conv.kernel - 1) * conv.dilation)
    for pool in reversed(pools):
        c = c.then(pool)
    return c


def nearest_target(c: Centre, source_size: int, out_size: int) -> np.ndarray:
    """``pi`` per source index: the target whose window centre is nearest (ties to the lower).

    ``p = ceil((2i - 2beta - alpha) / (2 alpha))``, clipped to ``[0, out_size - 1]``.
    """
    i = np.arange(source_size, dtype=np.int64)
    num = 2 * i - c.two_beta - c.alpha
    p = -((-num) // (2 * c.alpha))
    return np.clip(p, 0, out_size - 1)


def pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ``(target, source)`` index pairs of the windows ``[lo[p], hi[p]]``, target-major."""
    counts = np.maximum(hi - lo + 1, 0)
    total = int(counts.sum())
    target = np.repeat(np.arange(lo.shape[0], dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    source = lo[target] + (np.arange(total, dtype=np.int64) - starts[target])
    return target, source
