"""Datasets in the files their publishers ship: CIFAR-10/100 (python version) and IDX (MNIST family).

Read directly from a folder, nothing downloaded:

- CIFAR-10 ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch``
  and ``batches.meta`` (class names);
- CIFAR-100 ``cifar-100-python/``: ``train``, ``test`` and ``meta``; the 100 fine labels, or the
  20 coarse ones with ``?labels=coarse`` after the folder;
- IDX (MNIST, Fashion-MNIST, KMNIST, ...): ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte``
  and ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``, each optionally ``.gz`` (also the
  ``*.idx3-ubyte`` spelling), in the folder or its ``raw/`` subfolder (torchvision's layout).

The CIFAR files are Python pickles. They are read by a restricted unpickler that builds only what
those files hold (dicts, lists, text, numbers and numpy arrays of numbers through numpy's own
reconstruction functions); any other object in the stream stops the read with one line, so a
crafted file cannot run code.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from cnngraph.errors import DataError, counted

SPLITS = ("train", "test")
CIFAR10_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class RawImages:
    """Images ``[N, C, H, W]`` (uint8 or float), int64 labels ``[N]``, class names, a description."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str


# ------------------------------------------------------------------ detection
def cifar10_folder(path: Path) -> Path | None:
    """The ``cifar-10-batches-py`` folder at or directly under ``path``, else None."""
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "batches.meta").is_file() and (folder / "test_batch").is_file():
            return folder
    return None


def cifar100_folder(path: Path) -> Path | None:
    """The ``cifar-100-python`` folder at or directly under ``path``, else None."""
    for folder in (path, path / "cifar-100-python"):
        if all((folder / name).is_file() for name in ("meta", "train", "test")):
            return folder
    return None


def idx_files(path: Path, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` IDX files of ``split`` in ``path`` or ``path/raw``, else None."""
    prefix = "train" if split == "train" else "t10k"
    for folder in (path, path / "raw"):
        images = _first_file(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
        labels = _first_file(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
        if images is not None and labels is not None:
            return images, labels
    return None


def is_idx_folder(path: Path) -> bool:
    return any(idx_files(path, split) is not None for split in SPLITS)


def _first_file(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def check_split(source: str, split: str | None) -> str:
    """``train`` (the default) or ``test``; anything else is refused."""
    if split is None:
        return "train"
    if split not in SPLITS:
        raise DataError(f"dataset '{source}' has the splits train and test, not '{split}'")
    return split


# ------------------------------------------------------------------ CIFAR
class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain data and numpy arrays of numbers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"it refers to '{module}.{name}', which a CIFAR file never holds")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it uses persistent ids, which a CIFAR file never holds")


def _numeric_dtype(*args: Any) -> np.dtype[Any]:
    dtype = np.dtype(*args)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"it holds an array of {dtype}, not of numbers")
    return dtype


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("it builds an array subclass, which a CIFAR file never holds")
    from numpy._core.multiarray import _reconstruct as numpy_reconstruct  # type: ignore[attr-defined]

    return cast(np.ndarray, numpy_reconstruct(subtype, shape, dtype))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("it holds an array that is not of numbers")
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
    return array


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("it holds a number of an unknown kind")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _encode(text: str, encoding: str = "latin1") -> bytes:
    return text.encode(encoding)  # Python 3's protocol-2 pickles spell bytes this way


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _encode,
}


def read_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle, as a dict with text keys; a :class:`DataError` for anything else."""
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"'{path}' is refused as a CIFAR file: {e}") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"'{path}' is not a readable CIFAR file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"'{path}' is not a CIFAR file: it holds a {type(obj).__name__}, not a dict")
    return {_text(k): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype}{list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"'{path}': 'data' is {got}, expected uint8 [N, 3072] (32x32 RGB images)")
    if not isinstance(labels, list | np.ndarray) or len(labels) != data.shape[0]:
        raise DataError(f"'{path}': '{label_key}' is not a list of {counted(data.shape[0], 'label')}")
    try:
        ints = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"'{path}': '{label_key}' holds something else than integers ({e})") from None
    return data.reshape(-1, 3, 32, 32), ints


def _names(meta: dict[str, Any], key: str, path: Path) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or not names:
        raise DataError(f"'{path}' has no list '{key}' of class names")
    return [_text(n) for n in names]


def read_cifar10(folder: Path, split: str) -> RawImages:
    files = CIFAR10_TRAIN if split == "train" else ("test_batch",)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 folder '{folder}' lacks {', '.join(missing)}")
    parts = [_cifar_batch(folder / name, "labels") for name in files]
    names = _names(read_pickle(folder / "batches.meta"), "label_names", folder / "batches.meta")
    return _checked(parts, names, f"{folder} ({split})", folder)


def read_cifar100(folder: Path, split: str, labels: str = "fine") -> RawImages:
    if labels not in ("fine", "coarse"):
        raise DataError(f"CIFAR-100 labels are 'fine' (100 classes) or 'coarse' (20), not '{labels}'")
    part = _cifar_batch(folder / split, f"{labels}_labels")
    names = _names(read_pickle(folder / "meta"), f"{labels}_label_names", folder / "meta")
    suffix = "" if labels == "fine" else ", coarse labels"
    return _checked([part], names, f"{folder} ({split}{suffix})", folder)


def _checked(
    parts: list[tuple[np.ndarray, np.ndarray]], names: list[str], source: str, folder: Path
) -> RawImages:
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(
            f"'{folder}': label {int(labels.max() if labels.max() >= len(names) else labels.min())} has no "
            f"class name ({counted(len(names), 'class')} named)"
        )
    return RawImages(images, labels, names, source)


# ------------------------------------------------------------------ IDX
def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzip-compressed) as a numpy array of its type and shape."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file '{path}' ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"'{path}' is not an IDX file (its first bytes are not an IDX magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DataError(f"'{path}' is not an IDX file (a header of {ndim} dimensions does not fit)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"'{path}' holds {len(raw):,} bytes but its header {list(shape)} of {dtype.name} needs "
            f"{expected:,}; the file is cut or damaged"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_folder(folder: Path, split: str) -> RawImages:
    found = idx_files(folder, split)
    if found is None:
        prefix = "train" if split == "train" else "t10k"
        raise DataError(
            f"IDX folder '{folder}' has no {split} split ({prefix}-images-idx3-ubyte and "
            f"{prefix}-labels-idx1-ubyte, optionally .gz)"
        )
    images_path, labels_path = found
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim == 3:
        images = images[:, None]
    elif not (images.ndim == 4 and images.shape[1] in (1, 3)):
        raise DataError(f"'{images_path}' holds an array of shape {list(images.shape)}, not [N, H, W] images")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"'{labels_path}' holds {labels.dtype}{list(labels.shape)}, not one integer label per image"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"'{images_path}' has {counted(images.shape[0], 'image')} but '{labels_path}' "
            f"{counted(labels.shape[0], 'label')}"
        )
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"'{labels_path}': labels must be non-negative class indices")
    count = int(labels.max()) + 1 if labels.size else 0
    fashion = "fashion" in str(folder.resolve()).lower() and count <= len(FASHION_MNIST_CLASSES)
    names = list(FASHION_MNIST_CLASSES) if fashion else [str(h) for h in range(count)]
    return RawImages(images, labels, names, f"{folder} ({split})")


__all__ = [
    "RawImages",
    "check_split",
    "cifar10_folder",
    "cifar100_folder",
    "idx_files",
    "is_idx_folder",
    "read_cifar10",
    "read_cifar100",
    "read_idx",
    "read_idx_folder",
    "read_pickle",
]
