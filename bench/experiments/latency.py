"""Paired CPU latency of every architecture an experiment produced: ``latency.py docs/results/mnist.json``.

Latency depends on the architecture only, so each run's pruned model is rebuilt by the same
surgery (same removed convolutions, same rewiring strategy) on a freshly built model of the
experiment's spec, and timed against the unpruned model *interleaved*: single-image forward
passes alternate between the two, on one intra-op thread (scoped to this measurement and
restored afterwards), and the median of each is kept. On a shared machine this cancels most of
the load drift that separate measurements suffer. The result is written back into the JSON as
``latency_paired`` (keyed by the removed convolutions) and used by ``report.py``.
"""

from __future__ import annotations

import argparse
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


def measure_all(result: dict[str, Any], repeats: int) -> dict[str, Any]:
    """``{"removed": [...], "original_ms", "pruned_ms", "change"}`` for every distinct removed set."""
    spec = ModelSpec.from_dict(result["spec"])
    torch.manual_seed(0)
    original = build_model(spec).eval()
    shape = (1, spec.in_channels, spec.input_size, spec.input_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    strategy = result["config"]["strategy"]
    out: dict[str, Any] = {"threads": 1, "repeats": repeats, "by_removed": {}}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for removed in sorted({tuple(r["removed"]) for r in result["runs"]}, key=lambda t: (len(t), t)):
            pruned = remove_convolutions(original, torch.zeros(shape), removed, strategy).module.eval()
            orig_ms, pruned_ms = paired(original, pruned, x, repeats)
            out["by_removed"][",".join(map(str, removed))] = {
                "removed": list(removed),
                "original_ms": orig_ms,
                "pruned_ms": pruned_ms,
                "change": (pruned_ms - orig_ms) / orig_ms,
            }
            print(
                f"removed {list(removed)}: original {orig_ms:.3f} ms, pruned {pruned_ms:.3f} ms", flush=True
            )
    finally:
        torch.set_num_threads(previous)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by run.py")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    for name in args.results:
        path = Path(name)
        result = json.loads(path.read_text())
        result["latency_paired"] = measure_all(result, args.repeats)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)


if __name__ == "__main__":
    main()
