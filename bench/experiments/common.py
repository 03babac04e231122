"""What the experiment scripts share: where data lives, balanced subsets, atomic JSON, log lines."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph.datasets import ImageDataset, select_per_class

ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("CNNGRAPH_DATASETS", ROOT.parent / "shared" / "datasets"))
CACHE = Path(os.environ.get("CNNGRAPH_CACHE", Path.home() / ".cache" / "cnngraph"))


def cifar_root() -> Path:
    """The extracted CIFAR-10 folder, extracting the tarball once into the cache."""
    root = CACHE / "cifar10"
    if not (root / "train").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(DATASETS / "cifar10-jpeg.tar.gz") as tar:
            tar.extractall(root, filter="data")
    return root


def balanced_subset(data: ImageDataset, size: int | None, seed: int) -> ImageDataset:
    """``size`` images, the same number per class (seeded); everything when ``size`` is None."""
    if size is None or size >= len(data):
        return data
    per_class = size // len(data.class_names)
    chosen, _ = select_per_class(data.labels, len(data.class_names), per_class, seed)
    return data.subset(np.sort(np.concatenate(chosen)))


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON at ``path``, atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
