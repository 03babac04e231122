"""Atomic writes: two writers of one path at once each use their own temporary file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cnngraph.files import atomic_path, partial_path, write_bytes
from cnngraph.models import save_atomically


def test_partial_paths_are_hidden_beside_the_target_and_never_shared(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    names = {partial_path(target) for _ in range(100)}
    assert len(names) == 100
    assert all(p.parent == tmp_path and p.name.startswith(".model.pt.") for p in names)


def test_concurrent_atomic_saves_leave_one_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "snap.pt"
    payloads = [{"writer": torch.tensor(k), "weights": torch.full((200_000,), float(k))} for k in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda p: save_atomically(target, p), payloads * 3))
    back = torch.load(target, weights_only=True)
    k = int(back["writer"])
    assert torch.equal(back["weights"], torch.full((200_000,), float(k)))  # one writer's whole file
    assert [p.name for p in tmp_path.iterdir()] == ["snap.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
    assert write_bytes(target, b"new") == target and target.read_bytes() == b"new"
