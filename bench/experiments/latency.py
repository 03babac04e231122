"""Paired CPU latency of every architecture an experiment produced: ``latency.py docs/results/mnist.json``.

Latency depends on the architecture only, so each run's pruned model is rebuilt by the same
surgery (same removed convolutions, same rewiring strategy) on a freshly built model of the
experiment's spec, and timed against the unpruned model *interleaved*: single-image forward
passes alternate between the two, on one intra-op thread (scoped to this measurement and
restored afterwards), and the median of each is kept. On a shared machine this cancels most of
the load drift that separate measurements suffer. The result is written back into the JSON as
``latency_paired`` (keyed by the removed convolutions) and used by ``report.py``. The same is
done for one SGD training step on a batch (the cost of an epoch is that times the number of
batches), since epoch times measured run after run on a shared machine drift with its load.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.surgery import remove_convolutions


def paired(
    a: nn.Module, b: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 10
) -> tuple[float, float]:
    """Median milliseconds of ``a(x)`` and ``b(x)``, timed alternately."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for n in range(warmup + repeats):
            for model, out in ((a, times[0]), (b, times[1])):
                start = time.perf_counter()
                model(x)
                if n >= warmup:
                    out.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times[0]), statistics.median(times[1])


def paired_steps(
    a: nn.Module, b: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int
) -> tuple[float, float]:
    """Median seconds of one SGD training step (forward, backward, update) of ``a`` and ``b``, alternately."""
    times: tuple[list[float], list[float]] = ([], [])
    pairs = []
    for model in (copy.deepcopy(a), copy.deepcopy(b)):
        model.train()
        pairs.append((model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)))
    for n in range(steps + 2):
        for (model, opt), out in zip(pairs, times, strict=True):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if n >= 2:
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def measure_all(result: dict[str, Any], repeats: int, steps: int) -> dict[str, Any]:
    """``{"removed": [...], "original_ms", "pruned_ms", "change"}`` for every distinct removed set."""
    spec = ModelSpec.from_dict(result["spec"])
    torch.manual_seed(0)
    original = build_model(spec).eval()
    shape = (1, spec.in_channels, spec.input_size, spec.input_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    strategy = result["config"]["strategy"]
    batch = int(result["config"]["batch_size"])
    xb = torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(1))
    yb = torch.randint(0, spec.num_classes, (batch,), generator=torch.Generator().manual_seed(2))
    epoch_batches = -(-int(result["data"].get("finetune_images", result["data"]["train_images"])) // batch)
    out: dict[str, Any] = {
        "threads": 1,
        "repeats": repeats,
        "train_steps": steps,
        "batch_size": batch,
        "epoch_batches": epoch_batches,
        "by_removed": {},
    }
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for removed in sorted({tuple(r["removed"]) for r in result["runs"]}, key=lambda t: (len(t), t)):
            pruned = remove_convolutions(original, torch.zeros(shape), removed, strategy).module.eval()
            orig_ms, pruned_ms = paired(original, pruned, x, repeats)
            orig_step, pruned_step = paired_steps(original, pruned, xb, yb, steps)
            out["by_removed"][",".join(map(str, removed))] = {
                "removed": list(removed),
                "original_ms": orig_ms,
                "pruned_ms": pruned_ms,
                "change": (pruned_ms - orig_ms) / orig_ms,
                "original_step_s": orig_step,
                "pruned_step_s": pruned_step,
                "step_change": (pruned_step - orig_step) / orig_step,
            }
            print(
                f"removed {list(removed)}: latency {orig_ms:.3f} -> {pruned_ms:.3f} ms, "
                f"train step {orig_step:.3f} -> {pruned_step:.3f} s",
                flush=True,
            )
    finally:
        torch.set_num_threads(previous)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by run.py")
    p.add_argument("--repeats", type=int, default=200, help="single-image forward passes per model")
    p.add_argument("--steps", type=int, default=8, help="training steps (one batch each) per model")
    args = p.parse_args()
    for name in args.results:
        path = Path(name)
        result = json.loads(path.read_text())
        result["latency_paired"] = measure_all(result, args.repeats, args.steps)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)


if __name__ == "__main__":
    main()
