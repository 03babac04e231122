"""Brute-force references for the mapping geometry, independent of ``cnngraph.mapping.geometry``.

``autograd_arcs`` finds the arcs of every pair of convolutions by autograd on a *geometry copy*
of the model: every convolution's weights 1 and biases 0, norms and activations neutral, max
pooling replaced by a sum over the same taps (so every tap gets a gradient), all in float64 on
an input of ones. For each source convolution ``a`` its output is made a leaf and every other
convolution's output is detached, so only paths through no other convolution remain; target
``(p, q)`` of ``b`` reads ``u`` of ``a`` iff ``d b[:, p, q].sum() / d a[u] != 0``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Arcs = dict[tuple[int, int], set[tuple[int, int]]]


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


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v  # type: ignore[misc]
    return int(a), int(b)


def geometry_copy(model: nn.Module) -> nn.Module:
    """The model with weights 1, biases 0, neutral norms/activations, max pooling summed; float64."""
    g = copy.deepcopy(model).eval().double()
    for name, module in list(g.named_modules()):
        replacement: nn.Module | None = None
        if isinstance(module, nn.Conv2d):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
        elif isinstance(module, nn.MaxPool2d):
            replacement = SumPool(module)
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            replacement = nn.AdaptiveAvgPool2d(module.output_size)
        elif isinstance(module, nn.ReLU | nn.ReLU6 | nn.Sigmoid | nn.Hardsigmoid | nn.SiLU | nn.Hardswish):
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


def autograd_arcs(model: nn.Module, input_shape: tuple[int, int, int], conv_names: list[str]) -> Arcs:
    """``{(a, b): {(u, v)}}`` with local node ids ``i * width + j``, for every pair with arcs."""
    g = geometry_copy(model)
    convs = [g.get_submodule(n) for n in conv_names]
    result: Arcs = {}
    for a in range(len(convs)):
        raw: dict[int, torch.Tensor] = {}
        leaf: list[torch.Tensor] = []
        handles = [c.register_forward_hook(_cut(k, a, raw, leaf)) for k, c in enumerate(convs)]
        try:
            g(torch.ones(1, *input_shape, dtype=torch.float64))
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
