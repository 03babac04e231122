"""Images to explain: files (PNG, JPEG, ...) or entries of a dataset, checked against the model.

A file decodes as one channel when it is grayscale and as RGB otherwise (the rule datasets
follow), to floats in [0, 1]. Every image is checked before anything is explained or written:
a file that is missing or not an image, a size or channel count the model does not take, or a
dataset index out of range is one clear :class:`DataError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnngraph.datasets import GRAYSCALE_MODES, ImageDataset
from cnngraph.errors import DataError


@dataclass
class ImageBatch:
    """Images ``[B, C, H, W]`` in [0, 1] with a unique file stem, an identity and a label each."""

    images: torch.Tensor
    stems: list[str]
    identities: list[str]  # what the image is called in outputs and in Neo4j
    labels: list[int | None]


def read_image_file(path: Path) -> np.ndarray:
    """``[C, H, W]`` float32 in [0, 1]; one channel for a grayscale file, else RGB."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"image '{path}' does not exist")
    try:
        with Image.open(path) as im:
            gray = im.mode in GRAYSCALE_MODES
            array = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"'{path}' is not an image cnngraph can read ({reason}); give a PNG or JPEG file"
        ) from e
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array, dtype=np.float32) / 255.0


def check_shape(image: np.ndarray | torch.Tensor, shape: tuple[int, int, int], what: str) -> None:
    """Refuse an image whose channels or size the model does not take."""
    c, h, w = (int(x) for x in image.shape)
    want_c, want_h, want_w = shape
    if c != want_c:
        raise DataError(
            f"{what} has {c} channel{'s' if c != 1 else ''}, the model takes {want_c}; "
            f"convert it to {'RGB' if want_c == 3 else 'grayscale' if want_c == 1 else f'{want_c} channels'}"
        )
    if (h, w) != (want_h, want_w):
        raise DataError(f"{what} is {w}x{h} pixels, the model takes {want_w}x{want_h}; resize it first")


def parse_indices(items: Sequence[str], total: int) -> list[int]:
    """``['3', '10:13']`` -> ``[3, 10, 11, 12]``; every index must be in ``0..total-1``."""
    out: list[int] = []
    for item in items:
        text = item.strip()
        try:
            if ":" in text:
                lo, hi = (int(p) for p in text.split(":", 1))
                values = list(range(lo, hi))
                if not values:
                    raise DataError(f"--index range '{text}' is empty; write A:B with A < B")
            else:
                values = [int(text)]
        except ValueError:
            raise DataError(f"--index takes a number or a range A:B, got '{text}'") from None
        for v in values:
            if not 0 <= v < total:
                raise DataError(
                    f"--index {v} is out of range; the dataset has {total} images (0..{total - 1})"
                )
        out += values
    return out


def gather(
    files: Sequence[Path],
    dataset: ImageDataset | None,
    indices: Sequence[int],
    shape: tuple[int, int, int],
    dataset_name: str = "data",
) -> ImageBatch:
    """Files then dataset entries, each checked against ``shape``; stems made unique."""
    images: list[torch.Tensor] = []
    stems: list[str] = []
    identities: list[str] = []
    labels: list[int | None] = []
    for path in files:
        array = read_image_file(Path(path))
        check_shape(array, shape, f"image '{path}'")
        images.append(torch.from_numpy(array))
        stems.append(Path(path).stem or "image")
        identities.append(str(Path(path).resolve()))
        labels.append(None)
    if indices and dataset is None:
        raise DataError("--index picks images of a dataset; give --data too")
    if dataset is not None:
        # A file name that any file system and shell takes: 'builtin:digits' -> 'builtin-digits'.
        safe_name = re.sub(r"[^\w.-]+", "-", dataset_name).strip("-.") or "data"
        for i in indices:
            check_shape(dataset.images[i], shape, f"dataset image {i}")
            images.append(dataset.images[i].float())
            stems.append(f"{safe_name}-{i}")
            identities.append(f"{dataset.source}#{i}")
            labels.append(int(dataset.labels[i]))
    if not images:
        raise DataError("no image to explain; give IMAGE files or --data with --index")
    return ImageBatch(torch.stack(images), _unique(stems), identities, labels)


def _unique(stems: list[str]) -> list[str]:
    used: set[str] = set()
    out = []
    for stem in stems:
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        out.append(name)
    return out
