"""One experiment of issue 6: train VGG16-BN, map, load, score, prune at several gamma, compare baselines.

Usage (from the repository root)::

    .venv/bin/python bench/experiments/run.py --dataset mnist [--dry-run] [options]
    .venv/bin/python bench/experiments/run.py --dataset cifar10 [options]

Stages, each timed: baseline training (cached by configuration under ``--work-dir``, outside the
repository), mapping (``map_model``), loading into Neo4j (``load_network``), scoring
(``compute_scores``), the per-layer delta table and the gamma sweep (no training), then one
surgery + fine-tune + evaluation per run:

- ``control``: the unpruned baseline fine-tuned with the same budget (so extra training is not
  mistaken for a pruning gain);
- ``entropy``: the paper's selection at every ``--gammas`` value;
- at every number of removed layers in ``--compare-at``: ``random`` (``--random-seeds`` seeds),
  ``mean`` (class-blind aggregator, gamma set so that it removes exactly as many layers) and
  ``weight-norm`` (smallest mean absolute weight).

Results go to ``<out>/<dataset>.json`` (rewritten after every run, atomically) and PNG plots to
``<out>/<dataset>_*.png``. ``--dry-run`` stops after the sweep.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    CACHE,
    DATASETS,
    ROOT,
    balanced_subset,
    cifar_root,
    log,
    map_load_score,
    outcome,
    write_json,
)
from torch import nn

from cnngraph import __version__
from cnngraph.datasets import ImageDataset, load_dataset, split_indices
from cnngraph.models import ModelSpec, build_model, load_weights, read_checkpoint, save_checkpoint
from cnngraph.pruner.metrics import evaluate, measure
from cnngraph.pruner.select import LayerSelection, random_layers, select_layers, weight_norm_layers
from cnngraph.pruner.surgery import conv_names, remove_convolutions
from cnngraph.pruner.training import train
from cnngraph.scores import NodeScores
from cnngraph.settings import Neo4jSettings


# --------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace) -> tuple[ImageDataset, ImageDataset, dict[str, Any]]:
    """``(train, test, description)`` for the chosen dataset and subset sizes."""
    if args.dataset == "mnist":
        data = load_dataset(DATASETS / "mnist-10k.npz")
        train_idx, test_idx = split_indices(len(data), 0.2, args.seed)
        train_data, test_data = data.subset(train_idx), data.subset(test_idx)
        split = f"mnist-10k.npz, split_indices(10000, test_fraction=0.2, seed={args.seed})"
    else:
        root = cifar_root()
        train_data = load_dataset(root, split="train")
        test_data = load_dataset(root, split="test")
        split = "CIFAR-10 standard train/test folders"
    train_data = balanced_subset(train_data, args.train_size, args.seed)
    test_data = balanced_subset(test_data, args.test_size, args.seed)
    desc = {
        "dataset": args.dataset,
        "split": split,
        "train_images": len(train_data),
        "test_images": len(test_data),
        "subset": "balanced per class, seeded shuffle (select_per_class, seed "
        f"{args.seed}) when a size is given",
    }
    return train_data, test_data, desc


# --------------------------------------------------------------------------- baseline
def baseline(
    args: argparse.Namespace, spec: ModelSpec, train_data: ImageDataset
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained baseline: from the cache when this exact configuration was trained before."""
    key = json.dumps(
        [spec.to_dict(), args.train_size, args.epochs, args.lr, args.batch_size, args.seed], sort_keys=True
    )
    path = Path(args.work_dir) / f"{args.dataset}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    model = build_model(spec)
    if path.is_file():
        state, info = read_checkpoint(path)
        load_weights(model, state, str(path))
        model.eval()
        return model, {**info["training"], "cached": str(path)}
    torch.manual_seed(args.seed)
    model = build_model(spec)
    start = time.perf_counter()
    history = train(model, train_data, args.epochs, args.batch_size, args.lr, args.seed)
    info = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "optimizer": "sgd (momentum 0.9, weight decay 5e-4)",
        "history": history.to_dict(),
        "seconds": time.perf_counter() - start,
    }
    save_checkpoint(path, model, {"spec": spec.to_dict(), "training": info})
    return model, {**info, "cached": None}


# --------------------------------------------------------------------------- graph stages
def graph_scores(
    args: argparse.Namespace, model: nn.Module, spec: ModelSpec, train_data: ImageDataset
) -> tuple[NodeScores, dict[str, Any]]:
    """Map, load into Neo4j and score; the wall time of each stage."""
    settings = Neo4jSettings(uri=args.neo4j_uri)
    scores, graph = map_load_score(
        model, train_data, spec, settings, args.name, args.images_per_class, args.seed
    )
    graph["relationships"] = graph["class_arcs"]
    return scores, graph


def layer_table(scores: NodeScores) -> list[dict[str, Any]]:
    """Per convolution: nodes and mean/min/max delta for the entropy and mean aggregators."""
    rows = []
    for k in range(scores.num_layers):
        mask = scores.layer == k
        row: dict[str, Any] = {"layer": k, "name": scores.layer_names[k], "nodes": int(mask.sum())}
        for agg in ("entropy", "mean"):
            v = scores.get(agg)[mask]
            row[agg] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
        rows.append(row)
    return rows


def breakpoints(scores: NodeScores, aggregator: str, stat: str) -> np.ndarray:
    """Per convolution, the gamma from which rule ``any`` removes it: ``max(delta_k) / stat(delta)``.

    A layer goes when none of its nodes scores above ``gamma * stat``, i.e. when its largest
    score is <= the threshold.
    """
    delta = scores.get(aggregator)
    maxima = np.array([delta[scores.layer == k].max() for k in range(scores.num_layers)])
    centre = float(np.mean(delta)) if stat == "mean" else float(np.median(delta))
    return maxima / centre


def gamma_sweep(scores: NodeScores, stat: str) -> dict[str, dict[str, list[Any]]]:
    """Layers removed over a gamma grid spanning every breakpoint, per aggregator (no training).

    The count at each grid value comes from :func:`select_layers` itself.
    """
    out: dict[str, dict[str, list[Any]]] = {}
    for agg in ("entropy", "mean"):
        bp = breakpoints(scores, agg, stat)
        lo, hi = float(bp.min()), float(bp.max())
        pad = max((hi - lo) * 0.1, 1e-4)
        grid = np.unique(np.concatenate([np.linspace(max(lo - pad, 0.0), hi + pad, 301), [1.0]]))
        removed = [
            len(select_layers(scores, float(g), aggregator=agg, threshold_stat=stat).removed) for g in grid
        ]
        out[agg] = {"gammas": grid.tolist(), "removed": removed, "breakpoints": bp.tolist()}
    return out


def gamma_for(scores: NodeScores, aggregator: str, n_remove: int, stat: str) -> float:
    """A gamma at which rule ``any`` removes exactly ``n_remove`` layers: the midpoint between the
    n-th and (n+1)-th smallest breakpoints (ties can make some counts unreachable)."""
    bp = np.sort(breakpoints(scores, aggregator, stat))
    if n_remove <= 0:
        return float(bp[0] / 2.0)
    upper = bp[n_remove] if n_remove < bp.size else bp[-1] * 1.01
    return float((bp[n_remove - 1] + upper) / 2.0)


def mean_selection(scores: NodeScores, n_remove: int, stat: str) -> LayerSelection:
    """The class-blind aggregator's selection removing ``n_remove`` layers (gamma recorded)."""
    gamma = gamma_for(scores, "mean", n_remove, stat)
    return select_layers(scores, gamma, aggregator="mean", threshold_stat=stat)


# --------------------------------------------------------------------------- one pruning run
def run_one(
    args: argparse.Namespace,
    model: nn.Module,
    ft_data: ImageDataset,
    test_data: ImageDataset,
    method: str,
    removed: tuple[int, ...],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Surgery (unless nothing is removed), fine-tune with the fixed budget, evaluate and measure."""
    shape = test_data.input_shape
    start = time.perf_counter()
    pruned: nn.Module
    if removed:
        pruned = remove_convolutions(model, torch.zeros((1, *shape)), removed, args.strategy).module
    else:
        pruned = copy.deepcopy(model)
    surgery_s = time.perf_counter() - start
    before = evaluate(pruned, test_data)
    history = train(pruned, ft_data, args.ft_epochs, args.batch_size, args.ft_lr, args.seed)
    start = time.perf_counter()
    metrics = evaluate(pruned, test_data)
    eval_s = time.perf_counter() - start
    cost = measure(pruned, shape, args.latency_repeats)
    original_latency = measure(model, shape, args.latency_repeats).latency_ms  # back to back, same load
    return {
        "method": method,
        **extra,
        "layers_removed": len(removed),
        "removed": list(removed),
        "removed_names": [conv_names(model)[k] for k in removed],
        "accuracy_before_finetune": before.accuracy,
        **outcome(metrics, cost, original_latency),
        "epoch_seconds": history.mean_epoch_seconds if history.epochs else None,
        "surgery_s": surgery_s,
        "finetune_s": sum(e.seconds for e in history.epochs),
        "eval_s": eval_s,
        "finetune_history": history.to_dict(),
    }


# --------------------------------------------------------------------------- output
def plot_sweep(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    agg = "entropy"
    sw = result["sweep"][agg]
    ax.step(sw["gammas"], sw["removed"], "-", where="post", label=f"aggregator {agg}")
    for g in result.get("entropy_gammas", []):
        ax.axvline(g, color="grey", lw=0.6, ls=":")
    ax.set_xlabel(f"gamma (threshold = gamma x {result['config']['threshold_stat']} delta)")
    ax.set_ylabel("convolutions removed")
    ax.set_title(f"{result['config']['dataset']}: layers removed vs gamma (of {result['num_layers']})")
    ax.legend()
    ax.ticklabel_format(axis="x", useOffset=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.axhline(100 * result["original"]["accuracy"], color="black", lw=1, label="original")
    control = [r for r in runs if r["method"] == "control"]
    if control:
        ax.axhline(
            100 * control[0]["accuracy"], color="black", ls="--", lw=1, label="original + same fine-tune"
        )
    markers = {"entropy": "o", "mean": "s", "weight-norm": "^"}
    for method, marker in markers.items():
        pts = sorted((r["layers_removed"], 100 * r["accuracy"]) for r in runs if r["method"] == method)
        if pts:
            ax.plot(
                *zip(*pts, strict=True), marker=marker, ls="-" if method == "entropy" else "", label=method
            )
    rand: dict[int, list[float]] = {}
    for r in runs:
        if r["method"] == "random":
            rand.setdefault(r["layers_removed"], []).append(100 * r["accuracy"])
    if rand:
        ns = sorted(rand)
        ax.errorbar(
            ns,
            [np.mean(rand[n]) for n in ns],
            yerr=[np.std(rand[n]) for n in ns],
            fmt="x",
            capsize=4,
            label="random (mean ± std over seeds)",
        )
    ax.set_xlabel("convolutions removed")
    ax.set_ylabel("test accuracy after fine-tune (%)")
    ax.set_title(f"{result['config']['dataset']}: accuracy vs layers removed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("mnist", "cifar10"), required=True)
    p.add_argument("--width", type=float, default=0.25, help="VGG16-BN width multiplier")
    p.add_argument("--train-size", type=int, default=None, help="balanced training subset (default: all)")
    p.add_argument("--test-size", type=int, default=None, help="balanced test subset (default: all)")
    p.add_argument("--epochs", type=int, default=2, help="baseline training epochs")
    p.add_argument("--lr", type=float, default=0.01, help="baseline SGD learning rate")
    p.add_argument("--ft-epochs", type=int, default=1, help="fine-tune epochs of every pruned model")
    p.add_argument("--ft-lr", type=float, default=0.01, help="fine-tune SGD learning rate")
    p.add_argument("--ft-size", type=int, default=None, help="balanced fine-tune subset (default: all train)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-class", type=int, default=64)
    p.add_argument("--threshold-stat", choices=("mean", "median"), default="mean")
    p.add_argument("--strategy", choices=("reinit", "bridge"), default="reinit")
    p.add_argument("--gammas", type=float, nargs="*", default=[], help="explicit gamma values to prune at")
    p.add_argument(
        "--remove-counts",
        type=int,
        nargs="*",
        default=[],
        help="also prune at the gamma (midpoint between breakpoints) that removes each of these counts",
    )
    p.add_argument(
        "--compare-at", type=int, nargs="*", default=None, help="layers removed (default: each gamma's)"
    )
    p.add_argument("--random-seeds", type=int, default=3)
    p.add_argument("--latency-repeats", type=int, default=50)
    p.add_argument("--neo4j-uri", default="bolt://127.0.0.1:7687")
    p.add_argument("--name", default=None, help="graph model name (default exp-<dataset>)")
    p.add_argument(
        "--work-dir", default=str(CACHE / "experiments"), help="baseline checkpoints (outside the repo)"
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs of an earlier invocation with the same budgets (adds comparisons only)",
    )
    p.add_argument("--dry-run", action="store_true", help="stop after the delta table and the gamma sweep")
    args = p.parse_args()
    args.name = args.name or f"exp-{args.dataset}"
    return args


SAME_BUDGET = (
    "dataset", "width", "train_size", "test_size", "epochs", "lr", "ft_epochs", "ft_lr", "ft_size",
    "batch_size", "seed", "images_per_class", "threshold_stat", "strategy",
)  # fmt: skip


def previous_runs(path: Path, config: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Runs of an earlier invocation with the same budgets, keyed by (method, removed, seed)."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if any(old["config"].get(k) != config.get(k) for k in SAME_BUDGET):
        raise SystemExit(f"{path} was made with other budgets; run without --resume")
    return {(r["method"], tuple(r["removed"]), r.get("seed")): r for r in old["runs"]}


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    train_data, test_data, data_desc = load_data(args)
    log(f"data: {len(train_data)} train / {len(test_data)} test")
    c, h, _ = train_data.input_shape
    spec = ModelSpec(
        "vgg16", num_classes=len(train_data.class_names), in_channels=c, input_size=h, width=args.width
    )
    model, training = baseline(args, spec, train_data)
    took = "cached" if training.get("cached") else f"{training['seconds']:.0f} s"
    log(f"baseline ready ({took})")
    original_metrics = evaluate(model, test_data)
    original_cost = measure(model, test_data.input_shape, args.latency_repeats)
    scores, graph = graph_scores(args, model, spec, train_data)
    log(f"graph: {graph['nodes']} nodes, {graph['arcs']} arcs; map {graph['map_s']:.1f}s "
        f"load {graph['load_s']:.1f}s score {graph['score_s']:.1f}s")  # fmt: skip
    result: dict[str, Any] = {
        "cnngraph_version": __version__,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "work_dir")},
        "data": data_desc,
        "spec": spec.to_dict(),
        "num_layers": scores.num_layers,
        "baseline_training": training,
        "original": {
            "accuracy": original_metrics.accuracy,
            "precision": original_metrics.precision,
            "recall": original_metrics.recall,
            **original_cost.to_dict(),
            "epoch_seconds": training["history"]["mean_epoch_seconds"],
        },
        "graph": graph,
        "layers": layer_table(scores),
        "sweep": gamma_sweep(scores, args.threshold_stat),
        "runs": [],
    }
    log(f"original accuracy {100 * original_metrics.accuracy:.2f}%")
    gammas = list(args.gammas) + [
        gamma_for(scores, "entropy", n, args.threshold_stat) for n in args.remove_counts
    ]
    result["entropy_gammas"] = gammas
    for g in [1.0, *gammas]:
        sel = select_layers(scores, g, threshold_stat=args.threshold_stat)
        log(f"gamma {g}: removes {len(sel.removed)} {list(sel.removed)}")
    json_path = out / f"{args.dataset}.json"
    previous = previous_runs(json_path, result["config"]) if args.resume else {}
    write_json(json_path, result)
    plot_sweep(result, out / f"{args.dataset}_sweep.png")
    if args.dry_run:
        for row in result["layers"]:
            print(row)
        return

    ft_data = balanced_subset(train_data, args.ft_size, args.seed + 1)
    result["data"]["finetune_images"] = len(ft_data)

    def record(run: dict[str, Any]) -> None:
        result["runs"].append(run)
        result["wall_s"] = time.perf_counter() - started
        write_json(json_path, result)
        plot_accuracy(result, out / f"{args.dataset}_accuracy.png")
        log(f"{run['method']:<12} removed {run['layers_removed']:>2} acc {100 * run['accuracy']:.2f}% "
            f"params {run['parameters']:,} finetune {run['finetune_s']:.0f}s")  # fmt: skip

    def job(method: str, removed: tuple[int, ...], extra: dict[str, Any]) -> None:
        key = (method, tuple(removed), extra.get("seed"))
        if key in previous:
            result["runs"].append(previous[key])
            log(f"{method:<12} removed {len(removed):>2}: reused from the previous run")
            return
        record(run_one(args, model, ft_data, test_data, method, removed, extra))

    job("control", (), {})
    by_n: dict[int, tuple[int, ...]] = {}
    for g in gammas:
        sel = select_layers(scores, g, threshold_stat=args.threshold_stat)
        if not sel.kept:
            log(f"gamma {g} removes every convolution; skipped")
            continue
        by_n.setdefault(len(sel.removed), sel.removed)
        job("entropy", sel.removed, {"gamma": g})
    names = tuple(conv_names(model))
    for n in args.compare_at if args.compare_at is not None else sorted(by_n):
        if n == 0 or n >= scores.num_layers:
            continue
        for seed in range(args.random_seeds):
            sel = random_layers(scores.num_layers, n, seed, names)
            job("random", sel.removed, {"seed": seed})
        sel = mean_selection(scores, n, args.threshold_stat)
        job("mean", sel.removed, {"gamma": sel.options["gamma"]})
        sel = weight_norm_layers(model, n)
        job("weight-norm", sel.removed, {})
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
