"""Surgery and cost measurement on VGG16 (32x32, 10 classes): prints one result table.

.venv/bin/python bench/bench_prune.py
"""

from __future__ import annotations

import time

import torch

from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.metrics import measure
from cnngraph.pruner.surgery import remove_convolutions


def main() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("vgg16")).eval()
    x = torch.zeros(1, 3, 32, 32)
    rows: list[tuple[str, str]] = []
    for strategy in ("reinit", "bridge"):
        start = time.perf_counter()
        pruned = remove_convolutions(model, x, [1, 4, 12], strategy)
        rows.append((f"remove 3 of 13 convolutions ({strategy})", f"{time.perf_counter() - start:.2f} s"))
    for name, net in (("original", model), ("pruned (bridge)", pruned.module)):
        start = time.perf_counter()
        cost = measure(net, (3, 32, 32), repeats=30)
        rows.append(
            (
                f"measure {name}",
                f"{time.perf_counter() - start:.2f} s; {cost.parameters:,} params, {cost.macs:,} MACs, "
                f"{cost.latency_ms:.2f} ms/image (median of {cost.repeats})",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  result")
    for step, result in rows:
        print(f"{step:<{width}}  {result}")


if __name__ == "__main__":
    main()
