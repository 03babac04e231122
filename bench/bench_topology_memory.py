"""Benchmark of issue 31 items 4 and 5: topology without a forward pass, and mapping memory.

Every measurement runs in a fresh Python process (``python -c``), so imports, first-call costs
and the peak resident memory (``ru_maxrss`` of that process) are those a user sees; the parent
collects what each child prints as JSON. ``--code DIR`` runs the children against another
checkout (e.g. ``git archive`` of an older commit) to measure "before".

1. ``topology``: torchvision ``resnet50`` at 224x224 (random weights, built normally): the time of
   ``trace_model`` + ``assemble_topology`` (fx trace, shapes, feeds, arcs), first call in the
   process and best of 3; the same through ``model_topology`` (the model built with its weights on
   the meta device, as ``cnngraph inspect MODEL --input-size N`` does); and the peak memory of
   ``model_topology`` of ``regnet_y_128gf`` (2.6 GB of float32 weights) against the floor.
2. ``memory``: ``map_model`` of the reference VGG16 (batch norm, width 1) at 112x112, 10 classes x
   64 uniform random images, batch 128 (``--batch-size``), CPU, 2 threads: peak RSS, wall and CPU
   time, beside the floor (a process that imports torch and cnngraph and builds the same model and
   data, then maps nothing).

    .venv/bin/python bench/bench_topology_memory.py [--part topology|memory|all] [--code DIR]
        [--repeat N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()

TOPOLOGY = """
import json, resource, time
t0 = time.perf_counter()
import torch
from cnngraph.mapping.topology import assemble_topology
from cnngraph.mapping.trace import trace_model
from cnngraph.models import ModelSpec, build_model
torch.set_num_threads(2)
torch.manual_seed(0)
model = build_model(ModelSpec("torchvision:resnet50", num_classes=1000, input_size=224))
imports = time.perf_counter() - t0
times = []
for _ in range(4):
    start = time.perf_counter()
    traced = trace_model(model, (3, 224, 224))
    topo = assemble_topology(traced.layers, traced.feeds)
    times.append(time.perf_counter() - start)
out = {"first": times[0], "best": min(times[1:]), "imports_and_model": imports,
       "nodes": topo.num_nodes, "arcs": topo.num_arcs, "pairs": topo.num_edges}
try:
    from cnngraph.mapping.topology import model_topology
    meta = [model_topology(ModelSpec("torchvision:resnet50", num_classes=1000, input_size=224)).seconds
            for _ in range(3)]
    out["meta_model_best"] = min(meta)
except ImportError:
    pass
print(json.dumps(out))
"""

BIG = """
import json, resource, time
import torch, torchvision
from cnngraph.models import ModelSpec
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from cnngraph.mapping.topology import model_topology
start = time.perf_counter()
found = model_topology(ModelSpec("torchvision:regnet_y_128gf", num_classes=1000, input_size=224))
params = sum(p.numel() for c in found.traced.convs for p in c.module.parameters())
print(json.dumps({"floor_mib": floor, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "conv_params": params,
                  "nodes": found.topology.num_nodes, "arcs": found.topology.num_arcs,
                  "pairs": found.topology.num_edges}))
"""

MAPPING = """
import json, resource, sys, time
import torch
from cnngraph.datasets import ImageDataset
from cnngraph.mapping import map_model
from cnngraph.models import ModelSpec, build_model
torch.set_num_threads(2)
torch.manual_seed(0)
size, per_class, classes = 112, 64, 10
model = build_model(ModelSpec("vgg16", num_classes=classes, input_size=size)).eval()
images = torch.rand(classes * per_class, 3, size, size, generator=torch.Generator().manual_seed(0))
labels = torch.arange(classes).repeat_interleave(per_class)
data = ImageDataset(images, labels, [f"c{h}" for h in range(classes)], "random")
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"floor_mib": floor}
if sys.argv[1] == "map":
    used = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    batch = int(sys.argv[2])
    network = map_model(model, data, images_per_class=per_class, batch_size=batch, device="cpu")
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    out.update(seconds=time.perf_counter() - start, cpu_seconds=cpu, nodes=network.topology.num_nodes)
out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(code: str, args: list[str], root: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = str(root)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, env=env, check=False, cwd=root or Path.cwd(),
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_topology(root: Path | None) -> None:
    r = child(TOPOLOGY, [], root)
    table = Table(title="torchvision resnet50 topology at 224x224 (trace + shapes + feeds + arcs)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("nodes / arcs per class / layer pairs", f"{r['nodes']:,} / {r['arcs']:,} / {r['pairs']}"),
        ("imports + building the model (not counted)", f"{r['imports_and_model']:.2f} s"),
        ("trace_model + assemble_topology, first call in the process", f"{r['first']:.3f} s"),
        ("trace_model + assemble_topology, best of 3 more", f"{r['best']:.3f} s"),
    ]
    if "meta_model_best" in r:
        rows.append(("model_topology (weights on meta), best of 3", f"{r['meta_model_best']:.3f} s"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    try:
        big = child(BIG, [], root)
    except SystemExit as e:
        console.print(f"regnet_y_128gf topology: not available ({str(e).splitlines()[-1]})")
        return
    table = Table(title="a model too big to hold: torchvision regnet_y_128gf at 224x224, topology only")
    table.add_column("measure")
    table.add_column("value", justify="right")
    weights = big["conv_params"]
    for name, value in [
        ("convolution weights (float32)", f"{weights:,} ({weights * 4 / 2**30:.1f} GiB)"),
        ("nodes / arcs per class / layer pairs", f"{big['nodes']:,} / {big['arcs']:,} / {big['pairs']}"),
        ("model_topology (build on meta + trace + topology)", f"{big['seconds']:.2f} s"),
        ("peak RSS: after importing torch + torchvision", f"{big['floor_mib']:.0f} MiB"),
        ("peak RSS: after the topology", f"{big['peak_mib']:.0f} MiB"),
    ]:
        table.add_row(name, value)
    console.print(table)


def bench_memory(root: Path | None, repeat: int, batch: int) -> None:
    floor = child(MAPPING, ["floor"], root)
    runs = [child(MAPPING, ["map", str(batch)], root) for _ in range(repeat)]
    title = f"map_model of VGG16 (BN) at 112x112, 10 classes x 64 random images, batch {batch}, CPU"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    peaks = [r["peak_mib"] for r in runs]
    for name, value in [
        (
            "floor: peak RSS importing torch + cnngraph, building model and data",
            f"{floor['peak_mib']:.0f} MiB",
        ),
        ("peak RSS of the same process mapping (each run)", ", ".join(f"{p:.0f}" for p in peaks) + " MiB"),
        ("mapping's own share (lowest peak - floor)", f"{min(peaks) - floor['peak_mib']:.0f} MiB"),
        ("map_model wall time (each run)", ", ".join(f"{r['seconds']:.1f}" for r in runs) + " s"),
        (
            "map_model CPU time, user + system (each run)",
            ", ".join(f"{r['cpu_seconds']:.1f}" for r in runs) + " s",
        ),
    ]:
        table.add_row(name, value)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["topology", "memory", "all"], default="all")
    parser.add_argument("--code", type=Path, default=None, help="run against this checkout (PYTHONPATH)")
    parser.add_argument("--repeat", type=int, default=2, help="mapping runs")
    parser.add_argument("--batch-size", type=int, default=128, help="map_model's batch size")
    args = parser.parse_args()
    root = args.code.resolve() if args.code is not None else None
    console.print(f"code: {root or 'this checkout'}; load average {os.getloadavg()[0]:.1f}")
    if args.part in ("topology", "all"):
        bench_topology(root)
    if args.part in ("memory", "all"):
        bench_memory(root, args.repeat, args.batch_size)
    console.print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
