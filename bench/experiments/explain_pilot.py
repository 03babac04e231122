"""Pilot that chose the graph explanation's defaults, on images the study never uses (issue 29).

A small grid of graph options (arcs per node, mode, quantile, blur) scored by deletion minus
insertion AUC (lower is better) with K = 16 steps, on ``--images`` CIFAR-10 test images drawn
from those *outside* the study's 500 (``explain_study.study_indices``). Run once, before the
study; its JSON is committed beside DECLARED.md and the defaults it picked are declared there.

    .venv/bin/python bench/experiments/explain_pilot.py --checkpoint bench/experiments/baselines/resnet20.pt
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ROOT, cifar_root, log, write_json
from explain_study import STUDY_SEED, study_indices

from cnngraph.datasets import load_dataset
from cnngraph.explain.faithfulness import dataset_mean, evaluate
from cnngraph.explain.methods import GraphAttribution, saliency
from cnngraph.explain.options import ExplainOptions
from cnngraph.models import load_model

PILOT_SEED = 1


def pilot_indices(total: int, count: int) -> np.ndarray:
    """``count`` test images not in the study, by a seeded draw."""
    rest = np.setdiff1d(np.arange(total), study_indices(total))
    return np.sort(np.random.default_rng(PILOT_SEED).choice(rest, size=count, replace=False))


def grid() -> list[ExplainOptions]:
    out = []
    for m, mode, q, sigma in itertools.product((1, 3, 9), ("paths", "flow"), (0.0, 0.75), (0.0, 1.0)):
        out.append(ExplainOptions(max_per_node=m, mode=mode, quantile=q, sigma=sigma))
    # second round, added after the first showed 9 best: more arcs per node, no quantile cut
    for m, mode, sigma in itertools.product((18, 27), ("paths", "flow"), (0.0, 1.0)):
        out.append(ExplainOptions(max_per_node=m, mode=mode, quantile=0.0, sigma=sigma))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "explain" / "pilot")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    test = load_dataset(cifar_root(), "test")
    fill = dataset_mean(test.images)
    idx = pilot_indices(len(test), args.images)
    images = test.images[torch.from_numpy(idx)]
    model, spec = load_model(None, args.checkpoint)
    with torch.inference_mode():
        targets = model(images).argmax(1).numpy()
    target = args.out / f"{spec.source}.json"
    before = json.loads(target.read_text())["rows"] if target.is_file() else []
    rows: list[dict[str, Any]] = list(before)
    done = [r["options"] for r in before]
    for opts in grid():
        if opts.to_dict(32) in done:
            continue
        start = time.perf_counter()
        method = GraphAttribution(model, (3, 32, 32), opts)
        sal = saliency(method.attribute(images, targets))
        f = evaluate(model, images, sal, targets, fill, steps=args.steps, seed=STUDY_SEED)
        row = {
            "options": opts.to_dict(32),
            "deletion_auc": float(f.deletion_auc.mean()),
            "insertion_auc": float(f.insertion_auc.mean()),
            "score": float((f.deletion_auc - f.insertion_auc).mean()),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        log(f"{opts.max_per_node} {opts.mode} q{opts.quantile} s{opts.sigma}: {row['score']:.4f}")
    rows.sort(key=lambda r: r["score"])
    write_json(
        target,
        {"checkpoint": str(args.checkpoint), "images": idx.tolist(), "steps": args.steps, "rows": rows},
    )


if __name__ == "__main__":
    main()
