"""Brute-force references for the mapping geometry, independent of ``cnngraph.mapping.geometry``.

``autograd_arcs`` finds the arcs of every pair of convolutions by autograd on a *geometry copy*
of the model: every convolution's weights 1 and biases 0, norms and activations neutral, max
pooling replaced by a sum over the same taps (so every tap gets a gradient), all in float64 on
an input of ones. For each source convolution ``a`` its output is made a leaf and every other
convolution's output is detached, so only paths through no other convolution remain; target
``(p, q)`` of ``b`` reads ``u`` of ``a`` iff ``d b[:, p, q].sum() / d a[u] != 0``.

``perturbation_pairs`` is a second, cruder reference for the feeds relation alone: on the model
itself, perturb one convolution's output with every other convolution's output frozen, and see
which convolutions' inputs change. ``brute_pi`` and ``axis_centres`` give the weight nodes.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

Arcs = dict[tuple[int, int], set[tuple[int, int]]]
F_ = TypeVar("F_", bound=Callable[..., Any])


def one_thread(fn: F_) -> F_:
    """Run ``fn`` on one torch thread: its tensors are tiny, and two threads on a busy machine
    spin-wait for each other (a 32x32 ShuffleNet pass took 1.1 s on 2 threads, 15 ms on 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper  # type: ignore[return-value]


class SumPool(nn.Module):
    """The taps of a max pooling, summed: same output size, a gradient for every tap read."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool
        k, s, pad, d = (_pair(v) for v in (p.kernel_size, p.stride or p.kernel_size, p.padding, p.dilation))
        with torch.no_grad():
            out = F.max_pool2d(x, k, s, pad, d, ceil_mode=p.ceil_mode).shape[-2:]
        extra = [
            max(0, (o - 1) * s[a] + d[a] * (k[a] - 1) + 1 - pad[a] - x.shape[2 + a])
            for a, o in enumerate(out)
        ]
        xp = F.pad(x, (pad[1], extra[1], pad[0], extra[0]))
        ones = torch.ones(x.shape[1], 1, *k, dtype=x.dtype)
        y = F.conv2d(xp, ones, stride=s, dilation=d, groups=x.shape[1])
        return y[:, :, : out[0], : out[1]]


class PositionGroupNorm(nn.Module):
    """A group norm at each position on its own: the channels of a group mix, positions do not.

    (A norm's statistics over the whole map are not arcs: METHOD.md counts norms geometry-neutral.)
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.view(n, self.groups, c // self.groups, h, w)
        y = (y - y.mean(2, keepdim=True)) / (y.var(2, keepdim=True, unbiased=False) + 1e-5).sqrt()
        return y.reshape(n, c, h, w)


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v  # type: ignore[misc]
    return int(a), int(b)


def geometry_copy(model: nn.Module, random: bool = False, dtype: torch.dtype = torch.float64) -> nn.Module:
    """The model with weights 1, biases 0, neutral norms/activations, max pooling summed; float64.

    ``random``: convolution weights uniform in [0.5, 1.5] instead of 1, so that a norm over
    channels (whose output sums to a constant over equal channels) passes a gradient on.
    """
    g = copy.deepcopy(model).eval().to(dtype)
    gen = torch.Generator().manual_seed(0)
    for name, module in list(g.named_modules()):
        replacement: nn.Module | None = None
        if isinstance(module, nn.Conv2d):
            with torch.no_grad():
                if random:
                    module.weight.copy_(
                        0.5 + torch.rand(module.weight.shape, generator=gen, dtype=torch.float64)
                    )
                else:
                    nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
        elif isinstance(module, nn.GroupNorm):
            replacement = PositionGroupNorm(module.num_groups)
        elif isinstance(module, nn.InstanceNorm2d):
            replacement = nn.Identity()
        elif isinstance(module, nn.MaxPool2d):
            replacement = SumPool(module)
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            replacement = nn.AdaptiveAvgPool2d(module.output_size)
        elif isinstance(
            module, nn.ReLU | nn.ReLU6 | nn.Sigmoid | nn.Hardsigmoid | nn.SiLU | nn.Hardswish | nn.GELU
        ):
            replacement = nn.Identity()
        if replacement is not None:
            parent, _, attr = name.rpartition(".")
            setattr(g.get_submodule(parent) if parent else g, attr, replacement)
    return g


def _cut(
    k: int, a: int, raw: dict[int, torch.Tensor], leaf: list[torch.Tensor]
) -> Callable[..., torch.Tensor]:
    """Hook of convolution ``k``: the source ``a`` becomes a leaf; any other is kept raw and detached."""

    def fn(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        if k == a:
            leaf.append(output.detach().requires_grad_(True))
            return leaf[0]
        raw[k] = output
        return output.detach()

    return fn


@one_thread
def autograd_arcs(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    conv_names: list[str],
    random: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Arcs:
    """``{(a, b): {(u, v)}}`` with local node ids ``i * width + j``, for every pair with arcs.

    ``random``: random positive convolution weights and input (see :func:`geometry_copy`);
    ``dtype``: float32 is several times faster on the CPU (float64 convolutions have no fast path).
    """
    g = geometry_copy(model, random, dtype)
    gen = torch.Generator().manual_seed(1)
    image = (
        0.5 + torch.rand(1, *input_shape, generator=gen, dtype=dtype)
        if random
        else torch.ones(1, *input_shape, dtype=dtype)
    )
    convs = [g.get_submodule(n) for n in conv_names]
    result: Arcs = {}
    for a in range(len(convs)):
        raw: dict[int, torch.Tensor] = {}
        leaf: list[torch.Tensor] = []
        handles = [c.register_forward_hook(_cut(k, a, raw, leaf)) for k, c in enumerate(convs)]
        try:
            g(image)
        finally:
            for h in handles:
                h.remove()
        for b, out in raw.items():
            if b <= a or not out.requires_grad:
                continue
            (whole,) = torch.autograd.grad(out.sum(), leaf[0], retain_graph=True, allow_unused=True)
            if whole is None:  # no path from a to b avoids every other convolution
                continue
            _, c, h, w = out.shape
            # one backward pass per target position, batched: grad_outputs[v] is 1 at v, all channels
            onehot = torch.eye(h * w, dtype=out.dtype).view(h * w, 1, 1, h, w).expand(h * w, 1, c, h, w)
            (grads,) = torch.autograd.grad(out, leaf[0], onehot, retain_graph=True, is_grads_batched=True)
            read = grads.abs().sum(dim=(1, 2)).flatten(1) != 0  # [target, source]
            arcs = {(u, v) for v, u in torch.nonzero(read).tolist()}
            if arcs:
                result[(a, b)] = arcs
    return result


@one_thread
def perturbation_pairs(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    conv_names: list[str],
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[tuple[int, int], tuple[bool, bool]]:
    """Which convolutions carry data to which, by brute force on the model itself.

    For every source ``a``: one run with ``a``'s output perturbed by large random noise and every
    other convolution's output frozen at its unperturbed value, so the noise travels only along
    paths through no other convolution. Returns ``{(a, b): (input_changed, output_changed)}`` for
    every ``b`` whose input changed: ``output_changed`` says whether ``b``'s windows read a changed
    position (a change lying only where ``b``'s windows never look leaves its output alone).
    """
    g = copy.deepcopy(model).eval().to(dtype)
    convs = [g.get_submodule(n) for n in conv_names]
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, *input_shape, generator=gen, dtype=dtype)
    base_in: dict[int, torch.Tensor] = {}
    base_out: dict[int, torch.Tensor] = {}

    def record(k: int) -> Callable[..., None]:
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            base_in[k], base_out[k] = inputs[0].detach().clone(), output.detach().clone()

        return fn

    handles = [c.register_forward_hook(record(k)) for k, c in enumerate(convs)]
    try:
        with torch.no_grad():
            g(image)
    finally:
        for h in handles:
            h.remove()
    result: dict[tuple[int, int], tuple[bool, bool]] = {}
    for a in range(len(convs)):
        noise = 100.0 * torch.randn(base_out[a].shape, generator=gen, dtype=dtype)
        changed: dict[int, tuple[bool, bool]] = {}

        handles = [
            c.register_forward_hook(_swap(k, a, noise, base_in, base_out, changed))
            for k, c in enumerate(convs)
        ]
        try:
            with torch.no_grad():
                g(image)
        finally:
            for h in handles:
                h.remove()
        for b, flags in changed.items():
            if flags[0]:
                result[(a, b)] = flags
    return result


def _swap(
    k: int,
    a: int,
    noise: torch.Tensor,
    base_in: dict[int, torch.Tensor],
    base_out: dict[int, torch.Tensor],
    changed: dict[int, tuple[bool, bool]],
) -> Callable[..., torch.Tensor]:
    """Hook of convolution ``k`` in the run perturbing ``a``: record what changed, freeze the output."""

    def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if k == a:
            return base_out[k] + noise
        changed[k] = (not torch.equal(inputs[0], base_in[k]), not torch.equal(output, base_out[k]))
        return base_out[k]

    return fn


def axis_centres(ops: list[tuple[str, tuple[int, ...]]], size: int) -> list[float]:
    """Window centre of each target index on the source grid, for one axis, by plain loops.

    ``ops`` run from the source outwards: ``("taps", (k, s, pad, d, out))`` for a pooling or a
    convolution, ``("adaptive", (out,))``. The centre is the midpoint of the target's unclipped
    footprint on the source grid.
    """
    lo = list(range(size))
    hi = list(range(size))
    for kind, args in ops:
        if kind == "taps":
            k, s, pad, d, out = args
            lo = [_at(lo, x * s - pad) for x in range(out)]
            hi = [_at(hi, x * s - pad + d * (k - 1)) for x in range(out)]
        else:
            (out,) = args
            n = len(lo)
            starts = [(o * n) // out for o in range(out)]
            ends = [-((-(o + 1) * n) // out) for o in range(out)]
            lo, hi = [lo[s] for s in starts], [hi[e - 1] for e in ends]
    return [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]


def _at(values: list[int], y: int) -> int:
    """``values`` extended linearly beyond its ends (an affine footprint bound)."""
    if 0 <= y < len(values):
        return values[y]
    step = values[1] - values[0] if len(values) > 1 else 0
    return values[0] + step * y if y < 0 else values[-1] + step * (y - len(values) + 1)


def brute_pi(centres: list[float], source_size: int) -> list[int]:
    """For each source index, the target whose centre is nearest; ties to the target nearest
    ``floor(u * targets / source_size)`` (docs/METHOD.md section 3), then to the lower one."""
    n = len(centres)
    return [
        min(range(n), key=lambda p: (abs(centres[p] - u), abs(p - (u * n) // source_size), p))
        for u in range(source_size)
    ]
