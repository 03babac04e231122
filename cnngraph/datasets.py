"""Labelled image data: ImageFolder directories, ``.npz`` files, CIFAR and IDX folders, a demo set.

Sources:

- a directory in ImageFolder layout (``root/<class>/<image>``); when it has ``train/`` and
  ``test/`` subfolders, ``split`` picks one;
- an ``.npz`` with ``images`` ([N,H,W], [N,H,W,C] or [N,C,H,W] with C of 1 to 4 channels; uint8 is
  scaled to [0,1], floats are used as they are), integer ``labels`` and optional ``classes``;
- ``builtin:digits``: the 1,797 8x8 handwritten digits that scikit-learn ships inside its wheel
  (UCI ML digits), upscaled to 16x16; no download at run time;
- a CIFAR-10 or CIFAR-100 folder as its publishers ship it (``cifar-10-batches-py/``,
  ``cifar-100-python/``, or a folder holding one) and an IDX folder (MNIST, Fashion-MNIST:
  ``train-images-idx3-ubyte`` ..., optionally ``.gz``): ``split`` is ``train`` (the default) or
  ``test``; ``FOLDER?labels=coarse`` takes CIFAR-100's 20 coarse classes. Read by
  :mod:`cnngraph.dataset_formats` (CIFAR's pickles through a restricted unpickler).

Images are kept as one float32 tensor [N, C, H, W]; decoded ImageFolder trees are cached as
``.npz`` under ``~/.cache/cnngraph`` (``CNNGRAPH_CACHE``) so the JPEGs are decoded only once.
An ImageFolder whose images are all grayscale decodes to one channel, any other to RGB; hidden
folders and files (``.ipynb_checkpoints``) are skipped. Images with NaN or infinite values are
refused, naming the first one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnngraph.errors import DataError, counted
from cnngraph.files import atomic_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
MAX_CHANNELS = 4


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
        raise DataError(f"{what} has {len(values)} values but the images have {counted(channels, 'channel')}")
    return torch.tensor(list(values), dtype=torch.float32)


def load_dataset(source: str | Path, split: str | None = None) -> ImageDataset:
    """Read a dataset from ``source`` (see the module docstring); refuse non-finite images."""
    dataset = _read(source, split)
    check_finite(dataset)
    return dataset


def _read(source: str | Path, split: str | None) -> ImageDataset:
    text = str(source)
    if text.startswith("builtin:"):
        _no_split(text, split)
        return _builtin(text.split(":", 1)[1])
    folder = _published_format(text, split)
    if folder is not None:
        return folder
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"dataset '{path}' does not exist; give an ImageFolder directory, an .npz, a CIFAR or IDX "
            "folder, or builtin:digits"
        )
    if path.is_dir():
        if split is not None:
            if not (path / split).is_dir():
                raise DataError(f"dataset '{path}' has no '{split}' folder")
            path = path / split
        return _image_folder(path)
    if path.suffix == ".npz":
        _no_split(text, split)
        return _npz(path)
    raise DataError(f"cannot read dataset '{path}': give an ImageFolder directory or an .npz file")


def _published_format(text: str, split: str | None) -> ImageDataset | None:
    """A CIFAR or IDX folder (see the module docstring), else None."""
    from cnngraph import dataset_formats as fmt

    path, options = Path(text), ""
    if not path.exists() and "?" in text:
        base, _, options = text.partition("?")
        path = Path(base)
    if not path.is_dir():
        return None
    cifar10, cifar100 = fmt.cifar10_folder(path), fmt.cifar100_folder(path)
    idx = cifar10 is None and cifar100 is None and fmt.is_idx_folder(path)
    if cifar10 is None and cifar100 is None and not idx:
        return None
    labels = "fine"
    for item in filter(None, options.split("&")):
        key, _, value = item.partition("=")
        if cifar100 is None or key != "labels":
            raise DataError(
                f"dataset option '{item}' is unknown; the one option is labels=coarse (or fine) of a "
                "CIFAR-100 folder"
            )
        labels = value
    chosen = fmt.check_split(text, split)
    if cifar10 is not None:
        raw = fmt.read_cifar10(cifar10, chosen)
    elif cifar100 is not None:
        raw = fmt.read_cifar100(cifar100, chosen, labels)
    else:
        raw = fmt.read_idx_folder(path, chosen)
    tensor = _to_float(raw.images)
    return ImageDataset(tensor, torch.from_numpy(raw.labels), raw.class_names, raw.source)


def _no_split(source: str, split: str | None) -> None:
    if split is not None:
        raise DataError(
            f"split '{split}' picks a subfolder of an ImageFolder directory, and '{source}' is not one; "
            "drop the split option (or make one file per split)"
        )


def absolute_source(source: str) -> str:
    """``source`` with a local path made absolute, as 'cnngraph train' records it in a checkpoint so that
    later commands find the data from any folder; ``builtin:`` names and missing paths stay as given."""
    if source.startswith("builtin:"):
        return source
    base, sep, options = (source, "", "") if Path(source).exists() else source.partition("?")
    path = Path(base).expanduser()
    return f"{path.resolve()}{sep}{options}" if path.exists() else source


def check_recorded_source(source: str, checkpoint: str | Path) -> None:
    """Refuse, naming the checkpoint and --data, a dataset that a checkpoint records but that is not here."""
    if source.startswith("builtin:") or Path(source).exists() or Path(source.partition("?")[0]).exists():
        return
    relative = "" if Path(source).is_absolute() else " (relative to the folder where 'cnngraph train' ran)"
    raise DataError(
        f"checkpoint '{checkpoint}' records the dataset '{source}'{relative}, which does not exist here; "
        "give the dataset with --data PATH"
    )


def check_finite(dataset: ImageDataset) -> None:
    """Refuse NaN or infinite pixel values, naming the first image that has one."""
    if dataset.images.numel() == 0 or not dataset.images.is_floating_point():
        return
    finite = torch.isfinite(dataset.images).flatten(1).all(dim=1)
    if bool(finite.all()):
        return
    first = int(torch.nonzero(~finite)[0, 0])
    bad = int((~finite).sum())
    raise DataError(
        f"dataset '{dataset.source}': image {first} (label {int(dataset.labels[first])}) has NaN or "
        f"infinite values ({bad} such images); fix or remove them"
    )


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
            raw_labels = np.asarray(data["labels"]).reshape(-1)
            classes = [str(c) for c in data["classes"]] if "classes" in data.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read '{path}' as .npz ({e})") from e
    labels = _integer_labels(raw_labels, path)
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
        raise DataError(f"'{path}': images must be numbers, got dtype {images.dtype}")
    images = _channels_first(images, path)
    if images.shape[0] != labels.shape[0]:
        n, m = counted(images.shape[0], "image"), counted(labels.shape[0], "label")
        raise DataError(f"'{path}': {n} but {m}")
    if labels.size and labels.min() < 0:
        raise DataError(f"'{path}': labels must be non-negative class indices")
    tensor = _to_float(images)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    if labels.size and labels.max() >= len(classes):
        raise DataError(f"'{path}': label {int(labels.max())} has no entry in 'classes'")
    return ImageDataset(tensor, torch.from_numpy(labels), classes, str(path))


def _integer_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """Labels as int64; floats only when every one is a whole number, anything else refused."""
    if labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating):
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if whole.all():
            return labels.astype(np.int64)
        first = int(np.flatnonzero(~whole)[0])
        raise DataError(
            f"'{path}': labels must be integer class indices; label {first} is {float(labels[first]):g}"
        )
    raise DataError(f"'{path}': labels must be integer class indices, got dtype {labels.dtype}")


def _channels_first(images: np.ndarray, path: Path) -> np.ndarray:
    """[N,H,W], [N,H,W,C] or [N,C,H,W] (C of 1..4) -> [N,C,H,W]; refuse what cannot be told apart."""
    if images.ndim == 3:
        return images[:, None, :, :]
    if images.ndim != 4:
        raise DataError(
            f"'{path}': images must be [N,H,W], [N,H,W,C] or [N,C,H,W], got shape {list(images.shape)}"
        )
    first_is_channels = images.shape[1] <= MAX_CHANNELS
    last_is_channels = images.shape[3] <= MAX_CHANNELS
    if last_is_channels and not first_is_channels:
        return images.transpose(0, 3, 1, 2)
    if first_is_channels and not last_is_channels:
        return images
    raise DataError(
        f"'{path}': cannot tell the channel axis of images of shape {list(images.shape)}; "
        f"save them as [N,H,W,C] or [N,C,H,W] with 1 to {MAX_CHANNELS} channels and images larger "
        f"than {MAX_CHANNELS} pixels a side"
    )


def _to_float(images: np.ndarray) -> torch.Tensor:
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


def _cache_dir() -> Path:
    return Path(os.environ.get("CNNGRAPH_CACHE", Path.home() / ".cache" / "cnngraph"))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _image_folder(root: Path) -> ImageDataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise DataError(f"'{root}' has no class folders; ImageFolder layout is root/<class>/<image>")
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = sorted(
            p
            for p in (root / name).iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p) and p.is_file()
        )
        files += found
        labels += [index] * len(found)
    if not files:
        splits = [name for name in classes if _holds_class_folders(root / name)]
        if splits:
            example = "train" if "train" in splits else splits[0]
            raise DataError(
                f"'{root}' holds split folders ({', '.join(splits)}), each with class folders, not images: "
                f"pick one with --split (e.g. --split {example}; 'cnngraph train' takes "
                "--split and --test-split)"
            )
        raise DataError(f"'{root}' has class folders but no images in them")
    key = hashlib.sha256(b"decode-v2\n")
    for f in files:
        st = f.stat()
        key.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    cache = _cache_dir() / f"imagefolder-{key.hexdigest()[:20]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            array = data["images"]
    else:
        array = _decode(files)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=array)
    tensor = _to_float(array.transpose(0, 3, 1, 2))
    return ImageDataset(tensor, torch.tensor(labels, dtype=torch.int64), classes, str(root))


def _holds_class_folders(folder: Path) -> bool:
    """Whether ``folder`` is a split of an ImageFolder tree: a folder of class folders with images."""
    return any(
        sub.is_dir() and _visible(sub) and any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.iterdir())
        for sub in folder.iterdir()
    )


def _decode(files: list[Path]) -> np.ndarray:
    """[N,H,W,C] uint8: one channel when every image is grayscale, else RGB (gray ones repeated).

    A first pass reads only the headers (mode and size), so the pixels are decoded once, straight
    into the one array.
    """
    from PIL import Image

    gray = True
    size: tuple[int, int] | None = None
    for f in files:
        with _opened(f) as im:
            gray = gray and im.mode in GRAYSCALE_MODES
            if size is None:
                size = im.size
            elif im.size != size:
                raise DataError(
                    f"image '{f}' is {im.size[0]}x{im.size[1]}, '{files[0]}' is {size[0]}x{size[1]}; "
                    "resize them to one size"
                )
    assert size is not None
    out = np.empty((len(files), size[1], size[0], 1 if gray else 3), dtype=np.uint8)
    for n, f in enumerate(files):
        with _opened(f) as im:
            try:
                arr = np.asarray(im.convert("L" if gray else "RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise DataError(f"cannot decode image '{f}' ({e}); fix or remove it") from e
        out[n] = arr[:, :, None] if arr.ndim == 2 else arr
    return out


@contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """``PIL.Image.open`` with a one-line error naming the file."""
    from PIL import Image

    try:
        im = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image '{path}' ({e}); fix or remove it") from e
    with im:
        yield im


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
    if seed is not None and seed < 0:
        raise DataError(f"the shuffle seed must be 0 or more, got {seed}")
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


def resolve_classes(
    class_names: Sequence[str],
    wanted: Sequence[str | int] | None = None,
    max_classes: int | None = None,
) -> list[int] | None:
    """Dataset indices of the classes to map, in the order given; ``None`` means every class.

    ``wanted`` holds class names or indices (a string that is a class name is that name, even
    when it looks like a number; otherwise a whole number is an index); ``max_classes`` takes the
    first N classes in the dataset's order (all of them when it has fewer). Unknown names, indices
    out of range and repeats are refused, so a mapping never silently covers other classes than the
    ones asked for.
    """
    total = len(class_names)
    if wanted is not None and max_classes is not None:
        raise DataError("pass either --classes or --max-classes, not both")
    if max_classes is not None:
        if max_classes < 1:
            raise DataError(f"--max-classes must be at least 1, got {max_classes}")
        return list(range(min(max_classes, total)))  # more than the dataset has: all of them
    if wanted is None:
        return None
    if len(wanted) == 0:
        raise DataError("--classes is empty; give class names or indices, e.g. --classes cat,dog or 0,3")
    by_name = {str(name): h for h, name in enumerate(class_names)}
    chosen: list[int] = []
    for item in wanted:
        h = _class_index(item, by_name, total)
        if h in chosen:
            raise DataError(f"class '{class_names[h]}' (index {h}) is listed twice in --classes")
        chosen.append(h)
    return chosen


def _class_index(item: str | int, by_name: dict[str, int], total: int) -> int:
    text = str(item).strip()
    if text in by_name:
        return by_name[text]
    try:
        h = int(text)
    except ValueError:
        examples = ", ".join(repr(name) for name in list(by_name)[:5])
        raise DataError(
            f"unknown class '{text}'; use a class name of the dataset ({examples}"
            f"{', ...' if total > 5 else ''}) or an index 0..{total - 1}"
        ) from None
    if not 0 <= h < total:
        raise DataError(
            f"class index {h} is out of range; the dataset has {counted(total, 'class')} (0..{total - 1})"
        )
    return h


def restrict_classes(dataset: ImageDataset, indices: Sequence[int]) -> ImageDataset:
    """Only the images of the classes ``indices`` (dataset indices), relabelled 0..k-1 in that order."""
    relabel = np.full(len(dataset.class_names), -1, dtype=np.int64)
    relabel[np.asarray(indices, dtype=np.int64)] = np.arange(len(indices), dtype=np.int64)
    labels = relabel[np.asarray(dataset.labels, dtype=np.int64)]
    keep = np.flatnonzero(labels >= 0)
    return ImageDataset(
        images=dataset.images[torch.as_tensor(keep, dtype=torch.long)],
        labels=torch.from_numpy(labels[keep]),
        class_names=[dataset.class_names[h] for h in indices],
        source=dataset.source,
    )


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and test indices."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
    if seed < 0:
        raise DataError(f"the split seed must be 0 or more, got {seed}")
    perm = np.random.default_rng(seed).permutation(n)
    cut = round(n * (1.0 - test_fraction))
    return np.sort(perm[:cut]), np.sort(perm[cut:])
