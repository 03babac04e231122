"""The train/test split of a dataset, recorded with a checkpoint so pruning reuses it exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnngraph.datasets import ImageDataset, load_dataset, split_indices
from cnngraph.errors import DataError


@dataclass(frozen=True)
class DataSplit:
    """Either two folders (``split``/``test_split``) or a seeded random ``test_fraction``."""

    source: str
    split: str | None = None
    test_split: str | None = None
    test_fraction: float = 0.2
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "test_split": self.test_split,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSplit:
        return cls(
            source=str(d["source"]),
            split=d.get("split"),
            test_split=d.get("test_split"),
            test_fraction=float(d.get("test_fraction", 0.2)),
            seed=int(d.get("seed", 0)),
        )


def load_split(split: DataSplit) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` for ``split``; a :class:`DataError` naming what is missing."""
    if split.split is not None:
        if split.test_split is None:
            raise DataError(f"--split {split.split} needs --test-split (the folder to evaluate on)")
        return load_dataset(split.source, split.split), load_dataset(split.source, split.test_split)
    data = load_dataset(split.source)
    if len(data) < 2:
        raise DataError(f"dataset '{split.source}' has {len(data)} image(s); it needs at least 2 to split")
    train_idx, test_idx = split_indices(len(data), split.test_fraction, split.seed)
    if train_idx.size == 0 or test_idx.size == 0:
        raise DataError(f"test fraction {split.test_fraction} leaves an empty train or test set; change it")
    return data.subset(train_idx), data.subset(test_idx)
