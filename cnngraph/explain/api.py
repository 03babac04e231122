"""``explain``: one image (or a batch, each its own network) in, its graph explanation out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ConfigError, DataError
from cnngraph.explain.backtrack import scores_of
from cnngraph.explain.image_network import ImageNetworks
from cnngraph.explain.options import ExplainOptions, preset
from cnngraph.explain.pixels import finish_heatmap, pixel_scores
from cnngraph.mapping.network import Topology

ProgressFn = Callable[[int, int], None]
Normalization = tuple[Sequence[float] | None, Sequence[float] | None]


@dataclass
class Explanation:
    """The graph explanation of one image: heatmap, node scores, the class and its probability."""

    image: str
    heatmap: np.ndarray  # float64 [H, W] in [0, 1] (after quantile, blur, division by the max)
    pixels: np.ndarray  # float64 [H, W]: the raw pixel scores, before the quantile
    scores: np.ndarray  # float64 [num_nodes]: the path score (or flow) of every node
    explained: int
    predicted: int
    probability: float  # softmax probability of the explained class
    probabilities: np.ndarray  # float64 [classes]
    class_names: list[str]
    options: dict[str, Any]
    label: int | None = None  # the image's true class, when known
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def explained_name(self) -> str:
        return _name(self.class_names, self.explained)

    @property
    def predicted_name(self) -> str:
        return _name(self.class_names, self.predicted)

    def layer_scores(self, topology: Topology) -> list[dict[str, Any]]:
        """Per layer: its index, name, grid and the path score of each position (rows of lists)."""
        out = []
        for k, layer in enumerate(topology.layers):
            part = self.scores[topology.node_offsets[k] : topology.node_offsets[k + 1]]
            out.append(
                {
                    "index": k,
                    "name": layer.name,
                    "height": layer.height,
                    "width": layer.width,
                    "sum": float(part.sum()),
                    "max": float(part.max()) if part.size else 0.0,
                    "scores": part.reshape(layer.height, layer.width).tolist(),
                }
            )
        return out

    def summary(self) -> dict[str, Any]:
        """What a table or ``--json`` shows of it."""
        return {
            "image": self.image,
            "explained": self.explained_name,
            "explained_index": self.explained,
            "predicted": self.predicted_name,
            "predicted_index": self.predicted,
            "probability": self.probability,
            "label": None if self.label is None else _name(self.class_names, self.label),
            "label_index": self.label,
        }


def _name(names: Sequence[str], index: int) -> str:
    return str(names[index]) if 0 <= index < len(names) else str(index)


def normalizer(normalize: Normalization | None, channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> (x - mean) / std`` per channel (one value applies to every channel); identity for None."""
    mean, std = normalize if normalize is not None else (None, None)
    if mean is None and std is None:
        return lambda x: x
    m = _per_channel(mean or [0.0], channels, "mean")
    s = _per_channel(std or [1.0], channels, "std")
    if (s <= 0).any():
        raise DataError("every std value must be positive")
    return lambda x: (x - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)


def _per_channel(values: Sequence[float], channels: int, what: str) -> torch.Tensor:
    vals = list(values) * channels if len(values) == 1 else list(values)
    if len(vals) != channels:
        raise DataError(f"{what} has {len(vals)} values but the images have {channels} channels")
    return torch.tensor(vals, dtype=torch.float32)


class Explainer:
    """A model prepared once (traced, its topology and input reads built) to explain many images.

    Images are given as the pixels before normalisation (``normalize=(mean, std)`` is applied
    here), as ``[B, C, H, W]`` float tensors.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int],
        options: ExplainOptions | None = None,
        normalize: Normalization | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.model = model
        self.options = options or preset("ours")
        self.networks = ImageNetworks(model, input_shape)
        self.normalize = normalizer(normalize, input_shape[0])
        self.normalization = normalize
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def topology(self) -> Topology:
        return self.networks.topology

    def options_record(self) -> dict[str, Any]:
        """Every option of this explainer, as recorded with each output."""
        mean, std = self.normalization if self.normalization is not None else (None, None)
        return {
            **self.options.to_dict(self.networks.input_shape[1]),
            "start": "every node of the last convolution",
            "ties": "lower (layer, i, j) first",
            "normalization": None
            if mean is None and std is None
            else {"mean": _floats(mean), "std": _floats(std)},
        }

    def explain(
        self,
        images: torch.Tensor,
        *,
        targets: Sequence[int | None] | None = None,
        names: Sequence[str] | None = None,
        labels: Sequence[int | None] | None = None,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> list[Explanation]:
        """One explanation per image; ``targets`` picks the explained class (None: the predicted one)."""
        images = _check_images(images, self.networks.input_shape)
        count = images.shape[0]
        targets = list(targets) if targets is not None else [None] * count
        if len(targets) != count:
            raise ConfigError(f"{len(targets)} target classes for {count} images")
        out: list[Explanation] = []
        for start in range(0, count, max(1, batch_size)):
            batch = images[start : start + batch_size]
            logits, values = self.networks.forward(
                self.normalize(batch), self.options.descriptor, self.options.response
            )
            probs = torch.softmax(logits.double(), dim=1).numpy()
            for b in range(batch.shape[0]):
                n = start + b
                out.append(self._one(values[b], probs[b], targets[n], names, labels, n))
            if progress is not None:
                progress(min(start + batch_size, count), count)
        return out

    def heatmaps(self, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Only the heatmaps, float64 ``[B, H, W]``."""
        return np.stack([e.heatmap for e in self.explain(images, batch_size=batch_size)])

    def _one(
        self,
        values: np.ndarray,
        probs: np.ndarray,
        target: int | None,
        names: Sequence[str] | None,
        labels: Sequence[int | None] | None,
        n: int,
    ) -> Explanation:
        classes = probs.shape[0]
        predicted = int(np.argmax(probs))
        explained = predicted if target is None else int(target)
        if not 0 <= explained < classes:
            raise ConfigError(
                f"class {explained} is out of range; the model has {classes} classes (0..{classes - 1})"
            )
        opts = self.options
        scores = scores_of(self.topology, self.networks.chooser.choose(values, opts.max_per_node), opts.mode)
        first = scores[self.topology.node_offsets[0] : self.topology.node_offsets[1]]
        pixels = pixel_scores(self.networks.reads, first)
        heat = finish_heatmap(pixels, opts.quantile, opts.sigma_for(self.networks.input_shape[1]))
        class_names = self.class_names or [str(h) for h in range(classes)]
        return Explanation(
            image=names[n] if names is not None else f"image {n}",
            heatmap=heat,
            pixels=pixels,
            scores=scores,
            explained=explained,
            predicted=predicted,
            probability=float(probs[explained]),
            probabilities=probs.astype(np.float64),
            class_names=class_names,
            options=self.options_record(),
            label=None if labels is None else labels[n],
        )


def _floats(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _check_images(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a float tensor [B, C, H, W], got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        c, h, w = shape
        raise DataError(
            f"images of shape {list(images.shape)} do not fit the model: it takes {c}x{h}x{w} "
            f"({c} channels, {h}x{w} pixels)"
        )
    if not images.is_floating_point():
        images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise DataError("an image has NaN or infinite values; fix or remove it")
    return images.float()


def explain(
    model: nn.Module,
    images: torch.Tensor,
    *,
    options: ExplainOptions | None = None,
    preset_name: str | None = None,
    targets: Sequence[int | None] | None = None,
    normalize: Normalization | None = None,
    class_names: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> list[Explanation]:
    """Explain ``images`` (``[B, C, H, W]`` or one ``[C, H, W]``, before normalisation) with ``model``.

    ``options`` (or a preset by name: ``ours``, ``authors``) say how; ``targets`` the class to
    explain per image (None: the predicted one). See :class:`Explainer` to explain many batches.
    """
    if options is not None and preset_name is not None:
        raise ConfigError("give options or a preset name, not both")
    opts = options or preset(preset_name or "ours")
    shape = tuple(int(x) for x in (images.shape[1:] if images.ndim == 4 else images.shape))
    if len(shape) != 3:
        raise DataError(f"images must be [B, C, H, W] or [C, H, W], got shape {list(images.shape)}")
    explainer = Explainer(model, shape, opts, normalize, class_names)  # type: ignore[arg-type]
    return explainer.explain(images, targets=targets, names=names, batch_size=batch_size, progress=progress)
