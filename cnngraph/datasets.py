"""Labelled image data: ImageFolder directories, ``.npz`` files and the built-in demo set.

Sources:

- a directory in ImageFolder layout (``root/<class>/<image>``); when it has ``train/`` and
  ``test/`` subfolders, ``split`` picks one;
- an ``.npz`` with ``images`` ([N,H,W] or [N,H,W,C]; uint8 is scaled to [0,1], floats are used as
  they are), ``labels`` and optional ``classes``;
- ``builtin:digits``: the 1,797 8x8 handwritten digits that scikit-learn ships inside its wheel
  (UCI ML digits), upscaled to 16x16; no download at run time.

Images are kept as one float32 tensor [N, C, H, W]; decoded ImageFolder trees are cached as
``.npz`` under ``~/.cache/cnngraph`` (``CNNGRAPH_CACHE``) so the JPEGs are decoded only once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnngraph.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageDataset:
    """Images [N, C, H, W] float32, labels [N] int64, and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def normalized(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> ImageDataset:
        """A copy with ``(x - mean) / std`` per channel (one value applies to every channel)."""
        if mean is None and std is None:
            return self
        c = self.images.shape[1]
        m = _per_channel(mean or [0.0], c, "mean")
        s = _per_channel(std or [1.0], c, "std")
        if (s <= 0).any():
            raise DataError("every std value must be positive")
        images = (self.images - m.view(1, c, 1, 1)) / s.view(1, c, 1, 1)
        return ImageDataset(images, self.labels, self.class_names, self.source)

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names, self.source)


def _per_channel(values: Sequence[float], channels: int, what: str) -> torch.Tensor:
    if len(values) == 1:
        values = list(values) * channels
    if len(values) != channels:
        raise DataError(f"{what} has {len(values)} values but the images have {channels} channels")
    return torch.tensor(list(values), dtype=torch.float32)


def load_dataset(source: str | Path, split: str | None = None) -> ImageDataset:
    """Read a dataset from ``source`` (see the module docstring)."""
    text = str(source)
    if text.startswith("builtin:"):
        return _builtin(text.split(":", 1)[1])
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"dataset '{path}' does not exist; give an ImageFolder directory, an .npz or builtin:digits"
        )
    if path.is_dir():
        if split is not None:
            if not (path / split).is_dir():
                raise DataError(f"dataset '{path}' has no '{split}' folder")
            path = path / split
        return _image_folder(path)
    if path.suffix == ".npz":
        return _npz(path)
    raise DataError(f"cannot read dataset '{path}': give an ImageFolder directory or an .npz file")


def _builtin(name: str) -> ImageDataset:
    if name != "digits":
        raise DataError(f"unknown built-in dataset '{name}'; the one built in is builtin:digits")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return ImageDataset(images.contiguous(), labels, [str(c) for c in bunch.target_names], "builtin:digits")


def _npz(path: Path) -> ImageDataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data.files or "labels" not in data.files:
                raise DataError(
                    f"'{path}' needs arrays 'images' and 'labels'; it has {', '.join(data.files)}"
                )
            images = np.asarray(data["images"])
            labels = np.asarray(data["labels"]).astype(np.int64).reshape(-1)
            classes = [str(c) for c in data["classes"]] if "classes" in data.files else None
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{path}' as .npz ({e})") from e
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"'{path}': images must be [N,H,W] or [N,H,W,C], got shape {list(images.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"'{path}': {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.min() < 0:
        raise DataError(f"'{path}': labels must be non-negative class indices")
    tensor = _to_float(images)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    if labels.size and labels.max() >= len(classes):
        raise DataError(f"'{path}': label {int(labels.max())} has no entry in 'classes'")
    return ImageDataset(tensor, torch.from_numpy(labels), classes, str(path))


def _to_float(images: np.ndarray) -> torch.Tensor:
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


def _cache_dir() -> Path:
    return Path(os.environ.get("CNNGRAPH_CACHE", Path.home() / ".cache" / "cnngraph"))


def _image_folder(root: Path) -> ImageDataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"'{root}' has no class folders; ImageFolder layout is root/<class>/<image>")
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataError(f"'{root}' has class folders but no images in them")
    key = hashlib.sha256()
    for f in files:
        st = f.stat()
        key.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    cache = _cache_dir() / f"imagefolder-{key.hexdigest()[:20]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            array = data["images"]
    else:
        array = _decode(files)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".partial")
        with open(tmp, "wb") as fh:
            np.savez(fh, images=array)
        tmp.replace(cache)
    tensor = _to_float(array.transpose(0, 3, 1, 2))
    return ImageDataset(tensor, torch.tensor(labels, dtype=torch.int64), classes, str(root))


def _decode(files: list[Path]) -> np.ndarray:
    from PIL import Image

    first = np.asarray(Image.open(files[0]).convert("RGB"))
    out = np.empty((len(files), *first.shape), dtype=np.uint8)
    for n, f in enumerate(files):
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise DataError(f"cannot decode image '{f}' ({e})") from e
        if arr.shape != first.shape:
            raise DataError(
                f"image '{f}' is {arr.shape[1]}x{arr.shape[0]}, others are "
                f"{first.shape[1]}x{first.shape[0]}; resize them to one size"
            )
        out[n] = arr
    return out


def select_per_class(
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    per_class: int | None,
    seed: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Indices of the images used for each class, and how many each got.

    ``per_class=None`` takes all; otherwise the first ``per_class`` in file order, or a seeded
    shuffle when ``seed`` is given. A class with no image at all is an error.
    """
    y = np.asarray(labels)
    rng = np.random.default_rng(seed) if seed is not None else None
    chosen: list[np.ndarray] = []
    for h in range(num_classes):
        idx = np.flatnonzero(y == h)
        if idx.size == 0:
            raise DataError(f"class {h} has no images in the dataset; every class needs at least one")
        if rng is not None:
            idx = rng.permutation(idx)
        chosen.append(idx if per_class is None else idx[:per_class])
    return chosen, np.array([c.size for c in chosen], dtype=np.int64)


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and test indices."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    cut = round(n * (1.0 - test_fraction))
    return np.sort(perm[:cut]), np.sort(perm[cut:])
