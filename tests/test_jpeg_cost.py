"""The JPEG-cost measurement's re-encoded copies: same layout, harder compression, whole or absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_module import load_bench_script
from PIL import Image


def jpeg_cost() -> Any:
    return load_bench_script("bench/experiments/jpeg_cost.py")


def folder(root: Path) -> Path:
    """A small ImageFolder with train/ and test/ of detailed 32x32 JPEGs (quality 95)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg", quality=95)
    return root


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def test_a_copy_keeps_every_name_and_loses_detail_with_quality(tmp_path: Path) -> None:
    module = jpeg_cost()
    source = folder(tmp_path / "src")
    low = module.reencode(source, 50, tmp_path / "src-q50")
    high = module.reencode(source, 90, tmp_path / "src-q90")
    names = sorted(p.relative_to(source) for p in source.rglob("*.jpg"))
    assert len(names) == 12
    for copy in (low, high):
        assert sorted(p.relative_to(copy) for p in copy.rglob("*.jpg")) == names
    err_low = np.mean([np.abs(pixels(low / n) - pixels(source / n)).mean() for n in names])
    err_high = np.mean([np.abs(pixels(high / n) - pixels(source / n)).mean() for n in names])
    assert 0 < err_high < err_low
    with Image.open(low / names[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_an_existing_copy_is_kept_and_a_failed_one_leaves_nothing(tmp_path: Path) -> None:
    module = jpeg_cost()
    source = folder(tmp_path / "src")
    target = module.reencode(source, 50, tmp_path / "src-q50")
    stamp = {p: p.stat().st_mtime_ns for p in target.rglob("*.jpg")}
    assert module.reencode(source, 50, target) == target
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.jpg")} == stamp
    (source / "test" / "dog" / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(OSError):
        module.reencode(source, 50, tmp_path / "broken-q50")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "src-q50"]
