"""Seconds per SGD step of the study's networks, fp32 against bf16 autocast, 1 and 2 CPU threads.

.venv/bin/python bench/bench_training.py [--steps 15] [--threads 1 2]

One step is what ``cnngraph train`` does per batch (128 random CIFAR-sized images, channels_last,
forward, cross-entropy, backward, SGD momentum); the median of ``--steps`` steps after 3 warm-ups.
bf16 is ``--precision bf16`` (weights and optimizer stay fp32). Prints one table; whether bf16 pays
depends on the CPU (AMX or AVX512-BF16), so the CPU flags that matter are printed with it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from cnngraph.models import ModelSpec, build_model

NETWORKS = (("resnet20", 1.0), ("vgg16", 0.25), ("vgg16", 0.5))
WARMUP = 3


def step_seconds(source: str, width: float, precision: str, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelSpec(source, width=width)).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for k in range(WARMUP + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if k >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_flags() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return "unknown"
    flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    wanted = ("avx512f", "avx512_bf16", "amx_bf16")
    return ", ".join(f for f in wanted if f in flags.split()) or "none of avx512f, avx512_bf16, amx_bf16"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    print(f"torch {torch.__version__}; CPU flags: {cpu_flags()}; batch {args.batch}")
    print("| network | threads | fp32 s/step | bf16 s/step | speed-up | s/epoch fp32 / bf16 (391 steps) |")
    print("|---|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for source, width in NETWORKS:
            fp32 = step_seconds(source, width, "fp32", args.steps, args.batch)
            bf16 = step_seconds(source, width, "bf16", args.steps, args.batch)
            name = source if width == 1.0 else f"{source} x{width}"
            epochs = f"{391 * fp32:.0f} / {391 * bf16:.0f}"
            print(f"| {name} | {threads} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f}x | {epochs} |")


if __name__ == "__main__":
    main()
