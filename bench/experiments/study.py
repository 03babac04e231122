"""The pruning study of issue 13: one trained baseline, unit pruning against honest baselines.

Usage (from the repository root, with a Neo4j server running, e.g. ``cnngraph server start``)::

    .venv/bin/python bench/experiments/study.py --checkpoint bench/experiments/baselines/resnet20.pt
    .venv/bin/python bench/experiments/study.py --checkpoint bench/experiments/baselines/vgg16.pt

Stages (each cached under ``--out``/<model>/, so an interrupted study resumes where it stopped and
never redoes a finished run):

1. the baseline from its committed checkpoint, evaluated on the CIFAR-10 test set (10,000 images);
2. map (``--images-per-class`` training images per class), load into Neo4j, score in Cypher
   (``compute_scores``); the node scores are kept in ``scores.npz``;
3. selections, no training: for each count in ``--fractions`` of the removable units (residual
   branches for a ResNet, convolutions for a VGG), the entropy selection under three layer rules
   (``any`` as in the paper, ``fraction:q``, and a per-unit mean-delta rule), gamma set so that
   the rule removes that count; the class-blind ``mean`` aggregator; ``random`` (``--random-seeds``
   seeds); ``last`` (deepest units); ``weight-norm``; and the *shuffled-delta* control: the same
   rule and gamma on the entropy scores permuted across all nodes (``--permutations`` times);
4. one run per distinct set of removed units (plus the unpruned ``control``): surgery, test
   accuracy right after it, the same fine-tune for every run (``--ft-*``, fixed in advance),
   accuracy, macro precision and recall, parameters, MACs, paired latency and epoch time.
   Each run is written to ``runs/<key>.json`` as soon as it finishes (atomically); a rerun skips
   it. Methods that pick the same units share one run (the run is deterministic given the units).
5. last, the entropy selection of each count again with ``--repeat-seeds`` other seeds (surgery
   re-initialisation and fine-tune): how far one selection's accuracy moves from seed to seed,
   the margin the report's verdicts use (``runs/<key>-seed<k>.json``).

``study.json`` (everything above) is rewritten after every run; ``study_report.py`` turns it into
docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ROOT, balanced_subset, cifar_root, log, map_load_score, outcome, write_json
from torch import nn

from cnngraph import __version__
from cnngraph.datasets import ImageDataset, load_dataset
from cnngraph.errors import CnnGraphError
from cnngraph.files import partial_path
from cnngraph.models import ModelSpec, build_model, load_weights, read_checkpoint
from cnngraph.pruner.metrics import evaluate, measure
from cnngraph.pruner.select import (
    UnitSelection,
    annotate,
    gamma_for_count,
    last_units,
    random_units,
    select_units,
    weight_norm_units,
)
from cnngraph.pruner.surgery import remove_convolutions
from cnngraph.pruner.training import PRECISIONS, precision_warning, train
from cnngraph.pruner.units import Unit, find_units
from cnngraph.scores import NodeScores
from cnngraph.settings import Neo4jSettings

RULES = ("any", "fraction", "unit-mean")


# --------------------------------------------------------------------------- data and baseline
def load_baseline(path: Path) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    state, info = read_checkpoint(path)
    spec = ModelSpec.from_dict(info["spec"])
    model = build_model(spec)
    load_weights(model, state, str(path))
    model.eval()
    return model, spec, info


# --------------------------------------------------------------------------- scores (cached)
def save_scores(path: Path, scores: NodeScores) -> None:
    arrays = {"layer": scores.layer, "i": scores.i, "j": scores.j}
    arrays.update({f"delta_{k}": v for k, v in scores.values.items()})
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, layer_names=np.array(scores.layer_names), **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_scores(path: Path) -> NodeScores:
    with np.load(path) as z:
        values = {k[len("delta_") :]: z[k] for k in z.files if k.startswith("delta_")}
        return NodeScores(
            layer=z["layer"],
            i=z["i"],
            j=z["j"],
            values=values,
            layer_names=tuple(str(n) for n in z["layer_names"]),
        )


def graph_scores(
    args: argparse.Namespace, model: nn.Module, spec: ModelSpec, train_data: ImageDataset, work: Path
) -> tuple[NodeScores, dict[str, Any]]:
    """Map, load and score once; later invocations read ``scores.npz`` and ``graph.json``."""
    npz, meta = work / "scores.npz", work / "graph.json"
    if npz.is_file() and meta.is_file():
        return read_scores(npz), json.loads(meta.read_text())
    settings = Neo4jSettings.from_env()
    scores, graph = map_load_score(
        model, train_data, spec, settings, args.name, args.images_per_class, args.seed
    )
    save_scores(npz, scores)
    write_json(meta, graph)
    return scores, graph


# --------------------------------------------------------------------------- selections
def rule_option(rule: str, q: float) -> str:
    """The ``layer_rule`` of :func:`select_units` for one of :data:`RULES`."""
    return {"any": "any", "fraction": f"fraction:{q}", "unit-mean": "mean"}[rule]


def selections(
    args: argparse.Namespace, model: nn.Module, scores: NodeScores, units: list[Unit], n: int
) -> tuple[dict[str, UnitSelection], dict[str, Any]]:
    """Every method's selection removing ``n`` units (the shuffled control may remove another
    number: it keeps the entropy rule's gamma), and the shuffled-delta statistics per rule."""
    removable = [u.index for u in units if u.removable]
    out: dict[str, UnitSelection] = {}
    shuffle_stats: dict[str, Any] = {}
    entropy = np.asarray(scores.get("entropy"), dtype=np.float64)
    for rule in RULES:
        option = rule_option(rule, args.fraction_q)
        gamma = gamma_for_count(scores, units, n, layer_rule=option)
        sel = select_units(scores, units, gamma, layer_rule=option)
        out[f"entropy-{rule}"] = sel
        rng = np.random.default_rng(args.seed)
        picks = []
        for _ in range(args.permutations):
            shuffled = dataclasses.replace(scores, values={"entropy": rng.permutation(entropy)})
            picks.append(select_units(shuffled, units, gamma, layer_rule=option).removed_units)
        counts = collections.Counter(picks)
        mode, mode_count = counts.most_common(1)[0]
        freq = collections.Counter(u for p in picks for u in p)
        shuffle_stats[rule] = {
            "gamma": gamma,
            "threshold": sel.threshold,
            "entropy_removed_units": list(sel.removed_units),
            "removed_counts": [len(p) for p in picks],
            "unit_frequency": {str(u): freq.get(u, 0) / len(picks) for u in removable},
            "most_frequent": list(mode),
            "most_frequent_share": mode_count / len(picks),
            "same_as_entropy_share": counts.get(sel.removed_units, 0) / len(picks),
        }
        if rule == "any":
            rows = tuple(dataclasses.replace(r, kept=r.unit not in set(mode)) for r in sel.rows)
            chosen = UnitSelection(rows, "shuffled-delta", sel.threshold, {"gamma": gamma})
            out["shuffled-delta"] = annotate(chosen, scores, "entropy", sel.threshold)
    gamma = gamma_for_count(scores, units, n, aggregator="mean")
    out["mean"] = select_units(scores, units, gamma, aggregator="mean")
    out["last"] = last_units(units, n)
    out["weight-norm"] = weight_norm_units(model, units, n)
    for seed in range(args.random_seeds):
        out[f"random-{seed}"] = random_units(units, n, seed)
    return out, shuffle_stats


def unit_table(scores: NodeScores, units: list[Unit], model: nn.Module) -> list[dict[str, Any]]:
    """Per unit: nodes, delta statistics (entropy and mean aggregators) and weight norm."""
    everything = random_units(units, 0, 0)
    norms = weight_norm_units(model, units, 0).options["l1_per_parameter"]
    removable = [u.index for u in units if u.removable]
    rows = []
    for agg in ("entropy", "mean"):
        for r in annotate(everything, scores, agg).rows:
            if agg == "entropy":
                rows.append(
                    {
                        "unit": r.unit,
                        "name": r.name,
                        "kind": r.kind,
                        "convolutions": list(r.convs),
                        "nodes": r.nodes,
                    }
                )
            rows[r.unit][agg] = {"mean": r.mean, "min": r.min, "max": r.max}
    for u, v in zip(removable, norms, strict=True):
        rows[u]["l1_per_parameter"] = v
    return rows


# --------------------------------------------------------------------------- runs
def run_key(removed_units: tuple[int, ...]) -> str:
    return "control" if not removed_units else "units-" + "-".join(str(u) for u in removed_units)


def repeat_key(removed_units: tuple[int, ...], seed: int) -> str:
    """The run of the same units with another seed (surgery re-initialisation and fine-tune)."""
    return f"{run_key(removed_units)}-seed{seed}"


def budget(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """What every run shares (``seed``: ``--seed``, or a repeat's); a cached run made with another
    budget is refused."""
    return {
        "ft_epochs": args.ft_epochs, "ft_lr": args.ft_lr, "ft_schedule": "cosine", "augment": True,
        "batch_size": args.batch_size, "seed": seed, "strategy": args.strategy,
        "latency_repeats": args.latency_repeats, "ft_precision": args.ft_precision,
    }  # fmt: skip


def run_one(
    args: argparse.Namespace,
    model: nn.Module,
    train_data: ImageDataset,
    test_data: ImageDataset,
    sel: UnitSelection,
    key: str,
    seed: int,
) -> dict[str, Any]:
    """Surgery (unless nothing is removed), the fixed fine-tune, evaluation and cost, as run
    ``key``; ``seed`` seeds the surgery's re-initialisation and the fine-tune."""
    shape = test_data.input_shape
    start = time.perf_counter()
    if sel.removed:
        pruned = remove_convolutions(model, torch.zeros((1, *shape)), sel.removed, args.strategy, seed).module
    else:
        pruned = copy.deepcopy(model)
    surgery_s = time.perf_counter() - start
    before = evaluate(pruned, test_data)
    history = train(
        pruned, train_data, args.ft_epochs, args.batch_size, args.ft_lr, seed,
        augment=True, schedule="cosine", channels_last=True, precision=args.ft_precision,
    )  # fmt: skip
    pruned.to(memory_format=torch.contiguous_format)
    metrics = evaluate(pruned, test_data)
    cost = measure(pruned, shape, args.latency_repeats)
    original_latency = measure(model, shape, args.latency_repeats).latency_ms  # back to back, same load
    return {
        "key": key,
        "budget": budget(args, seed),
        "removed_units": list(sel.removed_units),
        "removed_unit_names": [r.name for r in sel.rows if not r.kept],
        "removed_convolutions": list(sel.removed),
        "accuracy_after_surgery": before.accuracy,
        **outcome(metrics, cost, original_latency),
        "epoch_seconds": history.mean_epoch_seconds,
        "surgery_s": surgery_s,
        "finetune_history": history.to_dict(),
    }


# --------------------------------------------------------------------------- output
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="trained baseline (cnngraph train)")
    p.add_argument(
        "--data", type=Path, default=None,
        help="ImageFolder root with train/ and test/ folders (default: CIFAR-10 from the shared tarball)",
    )  # fmt: skip
    p.add_argument("--fractions", type=float, nargs="+", default=[1 / 3, 1 / 2],
                   help="shares of the removable units to remove (rounded down)")  # fmt: skip
    p.add_argument("--fraction-q", type=float, default=0.5, help="q of the fraction:q layer rule")
    p.add_argument("--ft-epochs", type=int, default=1, help="fine-tune epochs of every run (full train set)")
    p.add_argument("--ft-lr", type=float, default=0.02, help="fine-tune peak SGD learning rate (cosine)")
    p.add_argument("--ft-precision", choices=PRECISIONS, default="bf16",
                   help="fine-tune arithmetic: bf16 (autocast, 2x faster with AMX) or fp32")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-class", type=int, default=64)
    p.add_argument("--strategy", choices=("reinit", "bridge"), default="reinit")
    p.add_argument("--random-seeds", type=int, default=5)
    p.add_argument("--permutations", type=int, default=20)
    p.add_argument(
        "--repeat-seeds", type=int, default=2,
        help="fine-tune the entropy-any selection of each count again with this many other seeds "
        "(run last): the seed-to-seed noise that the report's verdicts use as their margin",
    )  # fmt: skip
    p.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--train-limit", type=int, default=None, help="N training images, balanced (smoke tests)")
    p.add_argument("--test-limit", type=int, default=None, help="N test images, balanced (smoke tests)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    p.add_argument("--name", default=None, help="graph model name (default study-<checkpoint stem>)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "study")
    p.add_argument(
        "--selections-only", action="store_true", help="selections only: reuse finished runs, start none"
    )
    args = p.parse_args()
    args.name = args.name or f"study-{args.checkpoint.stem}"
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(max(1, args.threads))
    warning = precision_warning(args.ft_precision)
    if warning is not None:
        log(f"warning: {warning} (--ft-precision; the committed studies ran in bf16)")
    work = args.out / args.checkpoint.stem
    started = time.perf_counter()
    model, spec, info = load_baseline(args.checkpoint)
    root = args.data or cifar_root()
    train_data, test_data = load_dataset(root, split="train"), load_dataset(root, split="test")
    train_data = balanced_subset(train_data, args.train_limit, args.seed)
    test_data = balanced_subset(test_data, args.test_limit, args.seed)
    log(f"{spec.source}: {len(train_data)} train / {len(test_data)} test images")
    original_path = work / "original.json"
    if original_path.is_file():
        original = json.loads(original_path.read_text())
    else:
        m = evaluate(model, test_data)
        cost = measure(model, test_data.input_shape, args.latency_repeats)
        original = {"accuracy": m.accuracy, "precision": m.precision, "recall": m.recall, **cost.to_dict()}
        write_json(original_path, original)
    log(f"baseline accuracy {100 * original['accuracy']:.2f}%")
    scores, graph = graph_scores(args, model, spec, train_data, work)
    log(f"graph: {graph['nodes']:,} nodes, {graph['arcs']:,} arcs")
    units = find_units(model)
    removable = [u.index for u in units if u.removable]
    counts = sorted({int(f * len(removable)) for f in args.fractions} - {0})
    result: dict[str, Any] = {
        "cnngraph_version": __version__,
        "config": {k: (repo_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "budget": budget(args, args.seed),
        "checkpoint": {
            "path": str(args.checkpoint),
            "sha256": sha256(args.checkpoint),
            "training": info.get("training"),
            "data": info.get("data"),
            "metrics": info.get("metrics"),
            "history": info.get("history"),
        },
        "spec": spec.to_dict(),
        "data": {
            "train_images": len(train_data),
            "test_images": len(test_data),
            "dataset": str(args.data) if args.data else "CIFAR-10",
        },
        "original": original,
        "graph": graph,
        "units": unit_table(scores, units, model),
        "removable_units": len(removable),
        "counts": counts,
        "selections": {},
        "shuffled": {},
        "runs": {},
    }
    all_selections: dict[int, dict[str, UnitSelection]] = {}
    for n in counts:
        sels, shuffle = selections(args, model, scores, units, n)
        all_selections[n] = sels
        result["selections"][str(n)] = {
            k: {
                "removed_units": list(s.removed_units),
                "gamma": s.options.get("gamma"),
                "threshold": s.threshold,
            }
            for k, s in sels.items()
        }
        result["shuffled"][str(n)] = shuffle
        for name, s in sels.items():
            log(f"remove {n}: {name:<18} units {list(s.removed_units)}")
    # The paper's rule and the baselines first, the other layer rules last (distinct sets only).
    plan: dict[str, UnitSelection] = {"control": random_units(units, 0, 0)}
    for late in (False, True):
        for n in counts:
            for name, s in all_selections[n].items():
                if (name in ("entropy-fraction", "entropy-unit-mean")) == late:
                    plan.setdefault(run_key(s.removed_units), s)
    # Last: the entropy selection again with other seeds, to measure the fine-tune noise.
    repeats = [
        (all_selections[n]["entropy-any"], args.seed + k)
        for k in range(1, args.repeat_seeds + 1)
        for n in counts
    ]
    runs_dir = work / "runs"
    write_json(work / "study.json", result)
    todo = [(key, sel, args.seed) for key, sel in plan.items()]
    todo += [(repeat_key(sel.removed_units, seed), sel, seed) for sel, seed in repeats]
    for key, sel, seed in todo:
        path = runs_dir / f"{key}.json"
        if path.is_file():
            run = json.loads(path.read_text())
            if run["budget"] != budget(args, seed):
                raise SystemExit(f"{path} was made with another budget; remove {runs_dir} to start over")
            log(f"{key}: done before, reused")
        elif args.selections_only:
            continue
        else:
            run = run_one(args, model, train_data, test_data, sel, key, seed)
            write_json(path, run)
            before, after = 100 * run["accuracy_after_surgery"], 100 * run["accuracy"]
            log(f"{key}: after surgery {before:.2f}% -> {after:.2f}%, MACs {run['macs']:,}")
        result["runs"][key] = run
        result["wall_s"] = time.perf_counter() - started
        write_json(work / "study.json", result)
    log(f"done in {time.perf_counter() - started:.0f} s")


def repo_path(path: Path) -> str:
    """``path`` from the repository root when it lies inside it (as given otherwise)."""
    full = path.resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    try:
        main()
    except CnnGraphError as e:  # bad data, checkpoint or server: one line, no traceback
        raise SystemExit(f"error: {e}") from None
