"""How much does JPEG compression cost a short ResNet-20 recipe on CIFAR-10? (issue 13)

The shared CIFAR-10 copy is JPEG (quality about 75, 4:2:0), and the lossless arrays are not on
this machine, so the cost of its compression cannot be measured directly. This measures the slope
instead: the same recipe trained and tested on the shipped images (arm ``shipped``) and on every
image decoded and re-encoded at each of ``--qualities`` (arms ``q50``, ``q90``, ...). Declared in
docs/results/study/DECLARED.md before its runs.

Usage (from the repository root)::

    .venv/bin/python bench/experiments/jpeg_cost.py --source ~/.cache/cnngraph-data/cifar10 \\
        --qualities 50 90 --epochs 10 --out docs/results/study/jpeg-cost.json

Re-encoded copies are written beside ``--source`` (``<source>-q50``, ...), outside the repository,
each whole or not at all (built under a temporary name, then renamed). ``--out`` is rewritten after
every arm, atomically, and an arm already in it is not run again, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, log, write_json

SPLITS = ("train", "test")


def reencode(source: Path, quality: int, target: Path) -> Path:
    """``target``: every JPEG under ``source/{train,test}/<class>/`` decoded and saved again with
    Pillow at ``quality`` (4:2:0), the same layout and names. Built under a temporary folder beside
    ``target`` and renamed into place, so a half-written copy is never mistaken for a whole one;
    an existing ``target`` is trusted and kept."""
    if target.is_dir():
        return target
    if not 1 <= quality <= 95:
        raise SystemExit(f"quality {quality} is outside 1..95; give a JPEG quality in that range")
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for split in SPLITS:
            for image in sorted((source / split).glob("*/*.jpg")):
                out = building / split / image.parent.name / image.name
                out.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(image) as im:
                    im.convert("RGB").save(out, "JPEG", quality=quality, subsampling="4:2:0")
        os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target


def train_arm(data: Path, epochs: int, threads: int, seed: int) -> dict[str, Any]:
    """The declared recipe on ``data`` through ``cnngraph train --json``; its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            str(ROOT / ".venv" / "bin" / "cnngraph"), "train", "--model", "resnet20",
            "--data", str(data), "--split", "train", "--test-split", "test",
            "--epochs", str(epochs), "--batch-size", "128", "--lr", "0.2", "--schedule", "onecycle",
            "--weight-decay", "0.0005", "--seed", str(seed), "--augment", "--channels-last",
            "--precision", "fp32", "--out", str(Path(tmp) / "model.pt"), "--json",
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        result = json.loads(done.stdout)
        result["command"] = " ".join(command[1:])
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help="extracted CIFAR-10 (train/ and test/)")
    parser.add_argument("--qualities", type=int, nargs="+", default=[50, 90], help="re-encoding qualities")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="results JSON (resumed when it exists)")
    args = parser.parse_args(argv)
    source = args.source.expanduser().resolve()
    if not all((source / s).is_dir() for s in SPLITS):
        raise SystemExit(f"'{source}' has no train/ and test/ folders; extract cifar10-jpeg.tar.gz there")
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    recipe = {"epochs": args.epochs, "seed": args.seed, "model": "resnet20"}
    if results.setdefault("recipe", recipe) != recipe:
        raise SystemExit(f"'{args.out}' holds another recipe ({results['recipe']}); give another --out")
    arms = results.setdefault("arms", {})
    for name, quality in [("shipped", None)] + [(f"q{q}", q) for q in args.qualities]:
        if name in arms:
            log(f"{name}: done already ({arms[name]['metrics']['accuracy']:.2%})")
            continue
        data = source
        if quality is not None:
            log(f"{name}: re-encoding every image at quality {quality}")
            data = reencode(source, quality, source.with_name(f"{source.name}-{name}"))
        log(f"{name}: training {args.epochs} epochs")
        run = train_arm(data, args.epochs, args.threads, args.seed)
        arms[name] = {
            "data": str(data),
            "metrics": run["metrics"],
            "history": run["history"],
            "command": run["command"],
        }
        write_json(args.out, results)
        log(f"{name}: {run['metrics']['accuracy']:.2%} on its {run['split']['test_images']:,} test images")
    shipped = arms["shipped"]["metrics"]["accuracy"]
    for name in arms:
        accuracy = arms[name]["metrics"]["accuracy"]
        log(f"{name:8s} {accuracy:.2%}  ({accuracy - shipped:+.2%})")


if __name__ == "__main__":
    main()
