"""bench/experiments/study.py end to end on a tiny ResNet-20: map, load into the real Neo4j, score in
Cypher, select, prune and fine-tune every run. Killed with SIGKILL once runs have finished, it
resumes without redoing any of them; study_report.py then turns its JSON into the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "bench" / "experiments" / "study.py"
REPORT = ROOT / "bench" / "experiments" / "study_report.py"


def image_folder(root: Path, per_class: dict[str, int], seed: int) -> None:
    """Three classes of 16x16 RGB PNGs, each class bright in its own quadrant over noise."""
    rng = np.random.default_rng(seed)
    quadrants = {"left": (slice(0, 8), slice(0, 8)), "right": (slice(0, 8), slice(8, 16)),
                 "low": (slice(8, 16), slice(4, 12))}  # fmt: skip
    for split, count in per_class.items():
        for name, (rows, cols) in quadrants.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = (rng.random((16, 16, 3)) * 90).astype(np.uint8)
                pixels[rows, cols] += 150
                Image.fromarray(pixels).save(folder / f"{k}.png")


def run(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.neo4j
@pytest.mark.slow
def test_study_resumes_after_kill_and_reports(
    neo4j_env: dict[str, str], model_id: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    image_folder(data, {"train": 24, "test": 10}, seed=0)
    env = {**os.environ, **neo4j_env, "CNNGRAPH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    checkpoint = tmp_path / "tiny.pt"
    train = [sys.executable, "-m", "cnngraph", "train", "--model", "resnet20", "--width", "0.25"]
    train += ["--data", str(data), "--split", "train", "--test-split", "test", "--epochs", "2"]
    run([*train, "--batch-size", "12", "--seed", "0", "--out", str(checkpoint)], env)

    out = tmp_path / "study"
    study = [sys.executable, str(STUDY), "--checkpoint", str(checkpoint), "--data", str(data)]
    study += ["--out", str(out), "--name", model_id, "--random-seeds", "2", "--permutations", "4"]
    study += ["--repeat-seeds", "1", "--latency-repeats", "2", "--threads", "1", "--images-per-class", "4"]
    study += ["--batch-size", "12"]
    runs = out / "tiny" / "runs"

    # First attempt: kill -9 as soon as two runs are on disk.
    proc = subprocess.Popen(study, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(runs.glob("*.json")) if runs.is_dir() else []) < 2:
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert len(finished) >= 2, "the study never finished two runs"
    assert not [p for p in runs.iterdir() if not p.name.endswith(".json")], "a half-written run was left"

    # Second attempt: the same command finishes the study and reuses every finished run as is.
    log = run(study, env).stdout
    for name, content in finished.items():
        assert (runs / name).read_bytes() == content, f"{name} was redone"
        assert f"{name[: -len('.json')]}: done before, reused" in log
    result: dict[str, Any] = json.loads((out / "tiny" / "study.json").read_text())
    assert len(result["runs"]) > len(finished), "the kill came after the last run; nothing was resumed"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{k}.json" for k in result["runs"])

    # Every selection has its run, every run its budget, and pruning removed what it says.
    assert result["counts"] == [3, 4] and result["removable_units"] == 9
    original = result["original"]
    for n in result["counts"]:
        for method, sel in result["selections"][str(n)].items():
            key = "units-" + "-".join(map(str, sel["removed_units"])) if sel["removed_units"] else "control"
            assert key in result["runs"], (n, method, key)
            if method != "shuffled-delta":
                assert len(sel["removed_units"]) == n, (method, sel)
    for key, r in result["runs"].items():
        seed = int(key.rsplit("-seed", 1)[1]) if "-seed" in key else 0
        assert r["budget"] == {**result["budget"], "seed": seed}, key
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["accuracy_after_surgery"] <= 1.0
        if key == "control":
            assert r["removed_units"] == [] and r["macs"] == original["macs"]
        else:
            assert r["macs"] < original["macs"] and r["parameters"] < original["parameters"], key
    entropy_any = result["selections"]["3"]["entropy-any"]["removed_units"]
    assert "units-" + "-".join(map(str, entropy_any)) + "-seed1" in result["runs"]
    assert result["graph"]["name"] == model_id and result["graph"]["nodes"] > 0

    # The report: every count's table and verdicts, and the plot beside the JSON.
    report = run([sys.executable, str(REPORT), str(out / "tiny" / "study.json")], env).stdout
    for n in (3, 4):
        assert f"### {n} of 9 units removed" in report
    assert "### Verdicts (computed)" in report and f"--data {data}" in report
    png = out / "tiny" / "tiny_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
