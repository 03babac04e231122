"""The explanation study of issue 29: is the graph explanation faithful, next to the usual methods?

Settings are declared in docs/results/explain/DECLARED.md (written before the first run). On the
500 CIFAR-10 test images drawn by ``STUDY_SEED`` from the shared copy, for one committed
baseline, every method of ``cnngraph.explain.methods.METHODS`` explains the predicted class;
deletion and insertion AUC, average drop and increase in confidence are measured per image
(``cnngraph.explain.faithfulness``). Images go in chunks; each chunk's per-image results are
written atomically to ``<out>/chunks/NNN.json`` as soon as it finishes, so an interrupted run
loses at most one chunk and a rerun skips the finished ones. The saliency maps of the first 8
study images are kept in ``<out>/grid.npz`` for the figure. ``explain_report.py`` turns the
chunks into docs/EXPLAIN.md.

    .venv/bin/python bench/experiments/explain_study.py --checkpoint bench/experiments/baselines/resnet20.pt
    .venv/bin/python bench/experiments/explain_study.py --checkpoint bench/experiments/baselines/vgg16.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

STUDY_SEED = 29
STUDY_IMAGES = 500
GRID_IMAGES = 8


def study_indices(total: int = 10_000, count: int = STUDY_IMAGES) -> np.ndarray:
    """The study's CIFAR-10 test images: ``count`` of ``total`` drawn with ``STUDY_SEED``, sorted."""
    return np.sort(np.random.default_rng(STUDY_SEED).choice(total, size=count, replace=False))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_chunk(
    methods: list[Any], model: torch.nn.Module, images: torch.Tensor, targets: np.ndarray, fill: torch.Tensor,
    steps: int, seed: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    """Every method on one chunk: per-image metrics and timings, and the saliency maps."""
    from cnngraph.explain.faithfulness import evaluate
    from cnngraph.explain.methods import saliency

    out: dict[str, Any] = {}
    maps: dict[str, np.ndarray] = {}
    for method in methods:
        start = time.perf_counter()
        attribution = method.attribute(images, targets)
        attribute_s = time.perf_counter() - start
        sal = saliency(attribution)
        start = time.perf_counter()
        f = evaluate(model, images, sal, targets, fill, steps=steps, seed=seed)
        out[method.name] = {
            "deletion_auc": f.deletion_auc.tolist(),
            "insertion_auc": f.insertion_auc.tolist(),
            "drop": f.drop.tolist(),
            "increase": f.increase.tolist(),
            "original": f.original.tolist(),
            "masked": f.masked.tolist(),
            "deletion_curve": f.deletion.tolist(),
            "insertion_curve": f.insertion.tolist(),
            "attribute_s": attribute_s,
            "faithfulness_s": time.perf_counter() - start,
        }
        maps[method.name] = sal.astype(np.float32)
    return out, maps


def parse_args() -> argparse.Namespace:
    from common import ROOT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="default: docs/results/explain/<model>")
    p.add_argument("--images", type=int, default=STUDY_IMAGES)
    p.add_argument("--chunk", type=int, default=20, help="images per chunk (one atomic result file each)")
    p.add_argument("--steps", type=int, default=32, help="K, deletion/insertion steps")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="tie-break permutation and random maps")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.out is None:
        from cnngraph.models import read_checkpoint

        _, info = read_checkpoint(args.checkpoint)
        args.out = ROOT / "docs" / "results" / "explain" / str(info["spec"]["source"])
    return args


def main() -> None:
    from common import cifar_root, log, write_json

    from cnngraph import __version__
    from cnngraph.datasets import load_dataset
    from cnngraph.explain.faithfulness import dataset_mean
    from cnngraph.explain.methods import METHODS, build_method
    from cnngraph.explain.options import preset
    from cnngraph.models import load_model

    args = parse_args()
    torch.set_num_threads(max(1, args.threads))
    wall = time.perf_counter()
    test = load_dataset(cifar_root(), "test")
    fill = dataset_mean(test.images)
    indices = study_indices(len(test), args.images)
    model, spec = load_model(None, args.checkpoint)
    shape = test.input_shape
    images = test.images[torch.from_numpy(indices)]
    with torch.inference_mode():
        logits = torch.cat([model(images[i : i + 100]) for i in range(0, len(indices), 100)])
    predicted = logits.argmax(1).numpy()
    methods = [build_method(n, model, shape, seed=args.seed, ig_steps=args.ig_steps) for n in METHODS]
    setup = {
        "model": spec.source,
        "spec": spec.to_dict(),
        "checkpoint": str(args.checkpoint),
        "checkpoint_sha256": sha256(args.checkpoint),
        "cnngraph": __version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "images": indices.tolist(),
        "labels": test.labels[torch.from_numpy(indices)].tolist(),
        "predicted": predicted.tolist(),
        "class_names": test.class_names,
        "fill": fill.tolist(),
        "steps": args.steps,
        "ig_steps": args.ig_steps,
        "seed": args.seed,
        "chunk": args.chunk,
        "methods": list(METHODS),
        "graph_options": preset("ours").to_dict(shape[1]),
        "graph_authors_options": preset("authors").to_dict(shape[1]),
    }
    out: Path = args.out
    chunks = out / "chunks"
    settings = out / "setup.json"
    if settings.is_file():
        before = json.loads(settings.read_text())
        keys = ("checkpoint_sha256", "images", "steps", "ig_steps", "seed", "chunk", "graph_options")
        changed = [k for k in keys if before.get(k) != setup.get(k)]
        if changed:
            raise SystemExit(
                f"{out} holds a run with other settings ({', '.join(changed)}); use another --out"
            )
    write_json(settings, setup)
    for c, start in enumerate(range(0, len(indices), args.chunk)):
        path = chunks / f"{c:03d}.json"
        if path.is_file():
            continue
        stop = min(len(indices), start + args.chunk)
        began = time.perf_counter()
        results, maps = run_chunk(
            methods, model, images[start:stop], predicted[start:stop], fill, args.steps, args.seed
        )
        if start < GRID_IMAGES:
            take = min(GRID_IMAGES, stop) - start
            grid = {name: m[:take] for name, m in maps.items()}
            grid["images"] = images[start : start + take].numpy()
            write_npz(out / "grid.npz", grid)
        write_json(
            path,
            {
                "chunk": c,
                "start": start,
                "stop": stop,
                "seconds": time.perf_counter() - began,
                "load_average": round(os.getloadavg()[0], 2),  # 1-minute, at the chunk's end
                "methods": results,
            },
        )
        log(f"{spec.source}: chunk {c} ({stop}/{len(indices)}) in {time.perf_counter() - began:.0f} s")
    done = out / "done.json"
    if not done.is_file():
        write_json(done, {"last_session_seconds": time.perf_counter() - wall})
    log(f"{spec.source}: finished")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``arrays`` as one .npz, atomically."""
    from cnngraph.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
