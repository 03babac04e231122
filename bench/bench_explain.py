"""Benchmark of one image's graph explanation (issue 29): target <= 0.2 s warm on one CPU thread.

The committed ResNet-20 baseline (and, for comparison, the VGG16-BN one), one 32x32 image,
``torch.set_num_threads(1)``. The model is traced once (``Explainer``, timed apart as *setup*);
then each run is the whole explanation of one image: the forward pass with the response hooks,
the image network's arc weights, choosing the heaviest arcs, the back-tracking, the pixels and
the heatmap. Reported: the median and best of ``--repeat`` warm runs, and the median of each
phase measured the same way.

    .venv/bin/python bench/bench_explain.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from cnngraph.explain.api import Explainer
from cnngraph.explain.backtrack import path_sums
from cnngraph.explain.options import preset
from cnngraph.explain.pixels import finish_heatmap, pixel_scores
from cnngraph.models import load_model

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "bench" / "experiments" / "baselines"
console = Console()


def times(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def image() -> torch.Tensor:
    """A CIFAR-10 test image when the extracted copy is there, else a seeded random one."""
    try:
        import sys

        sys.path.insert(0, str(ROOT / "bench" / "experiments"))
        from common import CACHE

        from cnngraph.datasets import load_dataset

        if (CACHE / "cifar10" / "test").is_dir():
            return load_dataset(CACHE / "cifar10", "test").images[:1].clone()
    except Exception:  # the benchmark does not need the data set
        pass
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def bench(name: str, x: torch.Tensor, repeat: int) -> dict[str, Any]:
    model, _ = load_model(None, BASELINES / f"{name}.pt")
    start = time.perf_counter()
    explainer = Explainer(model, (3, 32, 32), preset("ours"))
    setup = time.perf_counter() - start
    nets, opts = explainer.networks, explainer.options
    total = times(lambda: explainer.explain(x), repeat)
    _, values = nets.forward(x, opts.descriptor)
    chosen = nets.chooser.choose(values[0], opts.max_per_node)
    scores = path_sums(nets.topology, chosen)[1]
    first = scores[nets.topology.node_offsets[0] : nets.topology.node_offsets[1]]
    phases = {
        "forward with responses": times(lambda: nets.forward(x, opts.descriptor), repeat),
        "arc weights + choose m heaviest": times(
            lambda: nets.chooser.choose(values[0], opts.max_per_node), repeat
        ),
        "back-tracking (DP)": times(lambda: path_sums(nets.topology, chosen), repeat),
        "pixels + heatmap": times(
            lambda: finish_heatmap(pixel_scores(nets.reads, first), opts.quantile, opts.sigma_for(32)), repeat
        ),
    }
    return {
        "model": name,
        "nodes": nets.topology.num_nodes,
        "arcs": nets.topology.num_arcs,
        "setup_s": setup,
        "median_s": statistics.median(total),
        "best_s": min(total),
        "phases": {k: statistics.median(v) for k, v in phases.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--models", default="resnet20,vgg16")
    args = p.parse_args()
    torch.set_num_threads(1)
    x = image()
    rows = [bench(name, x, args.repeat) for name in args.models.split(",")]
    table = Table(
        "model", "nodes", "arcs", "setup s", "explain s (median)", "best s", "target", title="1 thread"
    )
    for r in rows:
        verdict = "met" if r["median_s"] <= 0.2 else "NOT met"
        table.add_row(
            r["model"], f"{r['nodes']:,}", f"{r['arcs']:,}", f"{r['setup_s']:.3f}", f"{r['median_s']:.4f}",
            f"{r['best_s']:.4f}", f"<= 0.2 s: {verdict}" if r["model"] == "resnet20" else "",
        )  # fmt: skip
    console.print(table)
    phases = Table("phase", *(r["model"] for r in rows), title="median seconds per phase")
    for phase in rows[0]["phases"]:
        phases.add_row(phase, *(f"{r['phases'][phase]:.4f}" for r in rows))
    console.print(phases)


if __name__ == "__main__":
    main()
