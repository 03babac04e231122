"""Attribution methods side by side, as captum has them: one class per method, one ``attribute``.

Each ``attribute(inputs, target)`` takes images before normalisation (``[B, C, H, W]``) and the
class to explain per image, and returns a tensor shaped like ``inputs``; a method whose map is
per pixel repeats it over the channels. :func:`saliency` reduces any of them to one map per
image, ``sum over channels of |attribution|`` divided by its maximum (an all-zero map stays
zero), which is what the faithfulness metrics order and mask by.

- ``graph``: the image network's back-tracking (docs/METHOD.md section 10), our defaults.
- ``graph-authors``: the same with the authors' preset.
- ``gradcam``: captum's ``LayerGradCam`` on the last convolution (the last ``Conv2d`` in
  execution order, its output before the batch norm), ReLU on the map, upsampled bilinearly to
  the input by captum's ``LayerAttribution.interpolate``.
- ``ig``: captum's ``IntegratedGradients`` with a zero baseline (all-zero pixels before
  normalisation, i.e. a black image), ``n_steps`` Gauss-Legendre steps.
- ``random``: uniform [0, 1) values, seeded per image by its pixels' CRC32 and the seed, so a map
  depends only on the image and the seed, not on the batch it came in.
- ``gaussian``: a centred Gaussian, ``sigma = min(H, W) / 4``; needs no model (centre bias).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ConfigError
from cnngraph.explain.api import Explainer, Normalization, normalizer
from cnngraph.explain.options import ExplainOptions, preset

Targets = Sequence[int] | torch.Tensor | np.ndarray

METHODS = ("graph", "graph-authors", "gradcam", "ig", "random", "gaussian")


class Attribution(Protocol):
    """What the faithfulness loop needs of a method."""

    name: str

    def attribute(self, inputs: torch.Tensor, target: Targets) -> torch.Tensor: ...


class _Normalized(nn.Module):
    """The model behind its input normalisation, so gradient methods see pixels as the graph does."""

    def __init__(self, model: nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def _targets(target: Targets, count: int) -> list[int]:
    out = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor | np.ndarray) else target)]
    if len(out) != count:
        raise ConfigError(f"{len(out)} target classes for {count} images")
    return out


class GraphAttribution:
    """The graph explanation (METHOD 10) as an attribution; the explained class does not change it."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int],
        options: ExplainOptions | None = None,
        normalize: Normalization | None = None,
        name: str = "graph",
    ) -> None:
        self.name = name
        self.explainer = Explainer(model, input_shape, options or preset("ours"), normalize)

    def attribute(self, inputs: torch.Tensor, target: Targets) -> torch.Tensor:
        _targets(target, inputs.shape[0])
        heat = torch.from_numpy(self.explainer.heatmaps(inputs)).float()
        return heat.unsqueeze(1).expand(-1, inputs.shape[1], -1, -1).clone()


class GradCamAttribution:
    """Grad-CAM (captum ``LayerGradCam``) on the last convolution, upsampled to the input."""

    def __init__(
        self, model: nn.Module, layer: nn.Module, normalize: Normalization | None = None, channels: int = 3
    ) -> None:
        from captum.attr import LayerGradCam

        self.name = "gradcam"
        self.forward = _Normalized(model, normalizer(normalize, channels)).eval()
        self.method = LayerGradCam(self.forward, layer)

    def attribute(self, inputs: torch.Tensor, target: Targets) -> torch.Tensor:
        from captum.attr import LayerAttribution

        classes = _targets(target, inputs.shape[0])
        with torch.enable_grad():
            cam = self.method.attribute(inputs, target=classes, relu_attributions=True)
        up = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[2:]), interpolate_mode="bilinear")
        return up.expand(-1, inputs.shape[1], -1, -1).clone()


class IntegratedGradientsAttribution:
    """Integrated Gradients (captum) from an all-zero (black) image, ``n_steps`` steps."""

    def __init__(
        self, model: nn.Module, normalize: Normalization | None = None, channels: int = 3, n_steps: int = 32
    ) -> None:
        from captum.attr import IntegratedGradients

        self.name = "ig"
        self.n_steps = n_steps
        self.forward = _Normalized(model, normalizer(normalize, channels)).eval()
        self.method = IntegratedGradients(self.forward)

    def attribute(self, inputs: torch.Tensor, target: Targets) -> torch.Tensor:
        classes = _targets(target, inputs.shape[0])
        with torch.enable_grad():
            attr = self.method.attribute(
                inputs, baselines=torch.zeros_like(inputs), target=classes, n_steps=self.n_steps,
                internal_batch_size=max(1, 256 // max(1, inputs.shape[0])) * inputs.shape[0],
            )  # fmt: skip
        return attr.detach()


class RandomAttribution:
    """A uniform random map per image, seeded by the seed and the image's own pixels."""

    def __init__(self, seed: int = 0) -> None:
        self.name = "random"
        self.seed = seed

    def attribute(self, inputs: torch.Tensor, target: Targets) -> torch.Tensor:
        _targets(target, inputs.shape[0])
        b, c, h, w = inputs.shape
        maps = []
        for x in inputs:
            crc = zlib.crc32(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32).tobytes())
            maps.append(np.random.default_rng([self.seed, crc]).random((h, w)))
        heat = torch.from_numpy(np.stack(maps)).float()
        return heat.unsqueeze(1).expand(b, c, h, w).clone()


class GaussianAttribution:
    """A centred Gaussian, ``sigma = min(H, W) / 4``: the centre-bias control."""

    def __init__(self) -> None:
        self.name = "gaussian"

    def attribute(self, inputs: torch.Tensor, target: Targets) -> torch.Tensor:
        _targets(target, inputs.shape[0])
        b, c, h, w = inputs.shape
        heat = torch.from_numpy(centred_gaussian(h, w)).float()
        return heat.view(1, 1, h, w).expand(b, c, h, w).clone()


def centred_gaussian(height: int, width: int) -> np.ndarray:
    """``exp(-d^2 / (2 sigma^2))``, ``d`` the distance to ``((H-1)/2, (W-1)/2)``, ``sigma = min(H, W)/4``."""
    sigma = min(height, width) / 4.0
    y = np.arange(height, dtype=np.float64) - (height - 1) / 2.0
    x = np.arange(width, dtype=np.float64) - (width - 1) / 2.0
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma**2))


def saliency(attribution: torch.Tensor) -> np.ndarray:
    """``[B, H, W]`` float64: ``sum_c |a_c|`` per pixel, divided by its maximum (zero stays zero)."""
    s = attribution.detach().abs().sum(dim=1).double().cpu().numpy()
    peak = s.reshape(s.shape[0], -1).max(axis=1)
    return np.where(peak[:, None, None] > 0, s / np.where(peak > 0, peak, 1.0)[:, None, None], 0.0)


def last_convolution(model: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    """The module of the last ``Conv2d`` in execution order (as the mapping traces it)."""
    from cnngraph.mapping.trace import trace_model

    return trace_model(model, input_shape).convs[-1].module


def build_method(
    name: str,
    model: nn.Module,
    input_shape: tuple[int, int, int],
    normalize: Normalization | None = None,
    *,
    graph_options: ExplainOptions | None = None,
    seed: int = 0,
    ig_steps: int = 32,
) -> Attribution:
    """A method by its name (one of ``METHODS``)."""
    if name == "graph":
        return GraphAttribution(model, input_shape, graph_options or preset("ours"), normalize, "graph")
    if name == "graph-authors":
        return GraphAttribution(model, input_shape, preset("authors"), normalize, "graph-authors")
    if name == "gradcam":
        return GradCamAttribution(model, last_convolution(model, input_shape), normalize, input_shape[0])
    if name == "ig":
        return IntegratedGradientsAttribution(model, normalize, input_shape[0], ig_steps)
    if name == "random":
        return RandomAttribution(seed)
    if name == "gaussian":
        return GaussianAttribution()
    raise ConfigError(f"unknown method '{name}'; use one of {', '.join(METHODS)}")
