"""Is an explanation faithful? Deletion, insertion, average drop, increase in confidence.

docs/METHOD.md section 10 (Petsiuk et al. 2018; Chattopadhay et al. 2018), for any saliency map
``[B, H, W]`` (:func:`cnngraph.explain.methods.saliency`), on images before normalisation:

- Pixels are ordered by decreasing saliency; ties are broken by one random permutation of the
  pixels drawn from ``seed``, so a flat map is not ordered by position.
- *Deletion*: in ``K`` equal steps (``n_k = round(k * H * W / K)`` pixels, ``k = 0..K``) the
  first ``n_k`` pixels of the order take the fill value (the dataset's per-channel mean, in every
  channel at once); the curve is the softmax probability of the explained class; its AUC is the
  trapezoid over the deleted fraction ``n_k / (H * W)`` in [0, 1]. Lower is better.
- *Insertion*: the all-fill image with the first ``n_k`` pixels of the original put back.
  Higher is better.
- *Average drop* and *increase in confidence*: the map ``M`` in [0, 1] is a multiplicative mask
  applied around the fill value, ``x' = fill + M * (x - fill)``, before normalisation: a pixel
  with ``M = 0`` becomes the dataset mean, as in deletion. When the model's normalisation
  subtracts the dataset mean this is exactly ``M * normalised(x)``, what public Grad-CAM++
  code does with normalised tensors. Per image, ``drop = max(0, Y - O) / Y`` and ``increase =
  [O > Y]`` (``Y``, ``O``: the class probability on ``x`` and on ``x'``); the reported figures are
  percentages over the images.

Each image's ``2 (K + 1) + 1`` perturbed copies go through the model in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cnngraph.errors import ConfigError

Forward = Callable[[torch.Tensor], torch.Tensor]
"""Images before normalisation ``[B, C, H, W]`` -> logits ``[B, classes]``."""


@dataclass
class Faithfulness:
    """Per image: the curves, their AUCs, and the average-drop terms."""

    fractions: np.ndarray  # float64 [K+1]
    deletion: np.ndarray  # float64 [B, K+1]
    insertion: np.ndarray  # float64 [B, K+1]
    masked: np.ndarray  # float64 [B]: probability on the masked image
    original: np.ndarray  # float64 [B]: probability on the image itself

    @property
    def deletion_auc(self) -> np.ndarray:
        return np.trapezoid(self.deletion, self.fractions, axis=1)

    @property
    def insertion_auc(self) -> np.ndarray:
        return np.trapezoid(self.insertion, self.fractions, axis=1)

    @property
    def drop(self) -> np.ndarray:
        """Per image, ``100 * max(0, Y - O) / Y`` (the average drop's terms)."""
        y = np.maximum(self.original, 1e-12)
        return 100.0 * np.maximum(0.0, self.original - self.masked) / y

    @property
    def increase(self) -> np.ndarray:
        """Per image, 100 when the masked image's probability is higher, else 0."""
        return 100.0 * (self.masked > self.original)


def pixel_order(saliency: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[B, H*W]``: pixel indices by decreasing saliency, ties by a seeded random permutation."""
    b = saliency.shape[0]
    flat = saliency.reshape(b, -1)
    tiebreak = np.random.default_rng(seed).permutation(flat.shape[1])
    return np.stack([np.lexsort((tiebreak, -row)) for row in flat])


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """``n_k = round(k * pixels / steps)``, ``k = 0..steps`` (half up)."""
    if steps < 1:
        raise ConfigError(f"the number of steps must be at least 1, got {steps}")
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * pixels + steps) // (2 * steps)


def evaluate(
    forward: Forward,
    images: torch.Tensor,
    saliency: np.ndarray,
    targets: np.ndarray,
    fill: torch.Tensor,
    *,
    steps: int = 32,
    seed: int = 0,
    images_per_pass: int = 4,
) -> Faithfulness:
    """The faithfulness curves of ``saliency`` ``[B, H, W]`` for ``images`` ``[B, C, H, W]``."""
    b, c, h, w = images.shape
    if saliency.shape != (b, h, w):
        raise ConfigError(f"saliency of shape {saliency.shape} for images of shape {tuple(images.shape)}")
    counts = step_counts(h * w, steps)
    order = pixel_order(saliency, seed)
    rank = np.empty_like(order)
    rank[np.arange(b)[:, None], order] = np.arange(h * w)[None, :]
    fill_img = fill.view(1, c, 1, 1).to(images.dtype)
    deletion = np.zeros((b, steps + 1))
    insertion = np.zeros((b, steps + 1))
    masked = np.zeros(b)
    group = max(1, images_per_pass)
    for start in range(0, b, group):
        chunk = range(start, min(b, start + group))
        batch = []
        for n in chunk:
            gone = torch.from_numpy(rank[n][None, :] < counts[:, None]).view(steps + 1, 1, h, w)
            x = images[n : n + 1]
            batch.append(torch.where(gone, fill_img, x))  # deletion
            batch.append(torch.where(gone, x, fill_img))  # insertion
            mask = torch.from_numpy(saliency[n]).to(images.dtype).view(1, 1, h, w)
            batch.append(fill_img + mask * (x - fill_img))
        with torch.inference_mode():
            probs = torch.softmax(forward(torch.cat(batch)).double(), dim=1).numpy()
        per = 2 * (steps + 1) + 1
        for i, n in enumerate(chunk):
            p = probs[i * per : (i + 1) * per, int(targets[n])]
            deletion[n], insertion[n], masked[n] = p[: steps + 1], p[steps + 1 : -1], p[-1]
    return Faithfulness(
        fractions=counts / float(h * w),
        deletion=deletion,
        insertion=insertion,
        masked=masked,
        original=deletion[:, 0].copy(),
    )


def dataset_mean(images: torch.Tensor) -> torch.Tensor:
    """Per-channel mean of ``[N, C, H, W]`` images (before normalisation): the fill value."""
    return images.double().mean(dim=(0, 2, 3)).float()


evaluate_faithfulness = evaluate
"""The name ``cnngraph.evaluate_faithfulness`` exports."""
