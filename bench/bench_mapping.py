"""Benchmark of the mapping stage (issues 3 and 9); prints result tables.

1. Geometry of VGG16 at 224x224 (137,788 nodes, 1,221,960 arcs per class): time of
   ``build_topology`` (the model is traced once beforehand, timed apart), then the weights of 10
   classes (random node values, ``network.weights`` gather plus the reference degrees), peak
   memory, and a naive baseline that, for every target node, scans the whole node list of the
   source layer. The baseline runs on two layer pairs only (224->112 and 112->112); its time
   per (target, source) check is extrapolated to every pair of the network.
2. Mapping a VGG16-BN (width 1, 32x32 inputs) with 10 classes x 64 images of random data:
   wall time of ``map_model`` against the time of the same forward passes without hooks.
3. Branching geometry: torchvision ``resnet50`` at 224x224 (random weights): the feeds relation
   and ``assemble_topology`` on the traced graph (the trace, whose shapes come from the graph run
   on meta tensors since issue 31, timed apart), nodes, arcs and layer pairs.
4. Mapping torchvision ``resnet18`` at 64x64 with 10 classes x 64 images, as in 2.

    .venv/bin/python bench/bench_mapping.py [--part geometry|mapping|resnet50|resnet18|all]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from cnngraph.datasets import ImageDataset
from cnngraph.mapping import map_model
from cnngraph.mapping.feeds import Feed, find_feeds
from cnngraph.mapping.network import LayerInfo, MultilayerNetwork, Topology
from cnngraph.mapping.reference import degrees
from cnngraph.mapping.topology import assemble_topology
from cnngraph.mapping.trace import trace_model
from cnngraph.models import ModelSpec, build_model

console = Console()


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def naive_pair(source: LayerInfo, target: LayerInfo, feed: Feed) -> int:
    """For each target node, scan every source node and keep those its window reads."""
    (path,) = feed.paths
    read_rows = np.zeros((target.height, source.height), dtype=bool)
    read_rows[path.rows.target, path.rows.source] = True
    read_cols = np.zeros((target.width, source.width), dtype=bool)
    read_cols[path.cols.target, path.cols.source] = True
    src_i, src_j = np.divmod(np.arange(source.nodes), source.width)  # the source node list
    arcs = 0
    for v in range(target.nodes):
        p, q = divmod(v, target.width)
        inside = read_rows[p][src_i] & read_cols[q][src_j]
        arcs += int(np.count_nonzero(inside))
    return arcs


def bench_geometry() -> None:
    model = build_model(ModelSpec("vgg16", input_size=224))
    start = time.perf_counter()
    traced = trace_model(model, (3, 224, 224))
    trace_s = time.perf_counter() - start
    layers, feeds = traced.layers, traced.feeds
    del model

    tracemalloc.start()
    topo_s, topo = timed(lambda: assemble_topology(layers, feeds))
    _, topo_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    assert isinstance(topo, Topology)
    rng = np.random.default_rng(0)
    values = rng.random((10, topo.num_nodes), dtype=np.float32)
    network = MultilayerNetwork(topo, [str(h) for h in range(10)], {"mean": values}, np.full(10, 64))
    weights_s, weights = timed(lambda: network.weights("mean"))
    degrees_s, _ = timed(lambda: degrees(network, "mean"))
    _, weights_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Naive baseline measured on two big pairs (224 -> 112 through a pool, 112 -> 112 'same').
    sample = [k for k in range(len(feeds)) if layers[k + 1].height == 112][:2]
    checks = naive_s = 0.0
    for k in sample:
        start = time.perf_counter()
        count = naive_pair(layers[k], layers[k + 1], feeds[k])
        naive_s += time.perf_counter() - start
        checks += layers[k].nodes * layers[k + 1].nodes
        assert count == int(topo.arc_offsets[k + 1] - topo.arc_offsets[k])
    per_check = naive_s / checks
    all_checks = sum(layers[k].nodes * layers[k + 1].nodes for k in range(len(feeds)))
    naive_total = per_check * all_checks

    table = Table(title="VGG16 geometry at 224x224 (10 classes)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("nodes", f"{topo.num_nodes:,}"),
        ("arcs per class", f"{topo.num_arcs:,}"),
        ("trace (fx + shape propagation, once)", f"{trace_s:.2f} s"),
        ("assemble_topology (best of 3)", f"{topo_s:.3f} s"),
        ("weights [10 x arcs] gather (best of 3)", f"{weights_s:.3f} s ({weights.nbytes / 2**20:.0f} MiB)"),
        ("reference degrees, 10 classes (best of 3)", f"{degrees_s:.3f} s"),
        ("topology + weights + degrees", f"{topo_s + weights_s + degrees_s:.3f} s"),
        ("peak traced memory, topology", f"{topo_peak / 2**20:.0f} MiB"),
        ("peak traced memory, weights + degrees", f"{weights_peak / 2**20:.0f} MiB"),
        ("process max RSS so far", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"),
        (
            f"naive scan, measured on pairs {sample}",
            f"{naive_s:.2f} s for {checks:,.0f} checks ({per_check * 1e9:.1f} ns/check)",
        ),
        ("naive scan, extrapolated to all 12 pairs", f"{naive_total:.0f} s"),
        ("speed-up of assemble_topology over naive", f"{naive_total / topo_s:,.0f}x"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def random_dataset(classes: int, per_class: int, size: int) -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(classes * per_class, 3, size, size, generator=gen)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageDataset(images, labels, [f"c{h}" for h in range(classes)], "random")


def bench_branching_geometry() -> None:
    """torchvision resnet50 at 224x224: the feeds relation plus the topology, the trace apart."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("torchvision:resnet50", num_classes=10, input_size=224))
    start = time.perf_counter()
    traced = trace_model(model, (3, 224, 224))
    trace_s = time.perf_counter() - start
    gm = traced.graph_module
    names = {c.name for c in traced.convs}
    conv_nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target in names]
    modules = {c.name: c.module for c in traced.convs}
    feeds_s, feeds = timed(lambda: find_feeds(gm, conv_nodes, modules))
    topo_s, topo = timed(lambda: assemble_topology(traced.layers, feeds))
    vias = sorted({f.via for f in feeds})
    table = Table(title="torchvision resnet50 geometry at 224x224")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in [
        ("convolutions / layer pairs (feeds)", f"{len(traced.convs)} / {topo.num_edges}"),
        ("nodes / arcs per class", f"{topo.num_nodes:,} / {topo.num_arcs:,}"),
        ("kinds of pairs (via)", ", ".join(vias)),
        ("trace_model (fx, shapes on meta tensors, feeds), first call", f"{trace_s:.2f} s"),
        ("find_feeds on the traced graph (best of 3)", f"{feeds_s:.3f} s"),
        ("assemble_topology (best of 3)", f"{topo_s:.3f} s"),
        ("topology = feeds + assemble", f"{feeds_s + topo_s:.3f} s"),
    ]:
        table.add_row(name, value)
    console.print(table)


def bench_mapping(
    per_class: int, batch_size: int, repeat: int, source: str = "vgg16", size: int = 32
) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(source, num_classes=10, input_size=size)).eval()
    data = random_dataset(10, per_class, size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    def forwards() -> None:
        with torch.inference_mode():
            for start in range(0, len(data), batch_size):
                model(data.images[start : start + batch_size].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()

    def mapping() -> MultilayerNetwork:
        return map_model(model, data, images_per_class=per_class, batch_size=batch_size, device=device)

    forwards()  # warm-up
    forward_s = map_s = float("inf")
    for _ in range(repeat):  # interleaved, so both see the same load on a shared machine
        forward_s = min(forward_s, timed(forwards, repeat=1)[0])
        t, network = timed(mapping, repeat=1)
        map_s = min(map_s, t)
    outside = max(map_s - forward_s, 0.0) / map_s
    title = f"Mapping {source}, {size}x{size}, 10 classes x {per_class} random images, on {device}"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in [
        ("nodes / arcs per class", f"{network.topology.num_nodes:,} / {network.topology.num_arcs:,}"),
        (f"forward passes alone, no hooks (best of {repeat})", f"{forward_s:.2f} s"),
        (f"map_model wall time (best of {repeat})", f"{map_s:.2f} s"),
        ("time outside the forward passes", f"{outside:.1%}"),
    ]:
        table.add_row(name, value)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part", choices=["geometry", "mapping", "resnet50", "resnet18", "all"], default="all"
    )
    parser.add_argument("--images-per-class", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="mapping runs (best is kept)")
    args = parser.parse_args()
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("geometry", "all"):
        bench_geometry()
    if args.part in ("mapping", "all"):
        bench_mapping(args.images_per_class, args.batch_size, args.repeat)
    if args.part in ("resnet50", "all"):
        bench_branching_geometry()
    if args.part in ("resnet18", "all"):
        bench_mapping(args.images_per_class, args.batch_size, args.repeat, "torchvision:resnet18", 64)


if __name__ == "__main__":
    main()
