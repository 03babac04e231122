"""Benchmark: loading and scoring one network in both graph layouts, beside the kernel's own limit.

    .venv/bin/python bench/bench_load.py [--input-size 96] [--classes 10] [--repeat 3] [--per-arc 0]
        [--descriptors mean,median,max,sum]

Network: VGG16-BN's topology (13 convolutions, 3x3 'same', 2x2 pools) traced at the given input
size, random node values (the speed does not depend on them) for ``--descriptors`` (default all
four, as ``cnngraph map`` writes them; each is one weight property per relationship, or one list per
arc in the compact layout); at 96x96 and 10 classes that is 220,488 arcs, i.e. 2,204,880
class-arcs (one relationship each in the per-class layout).

For each layout the script starts its own Neo4j (the project's launcher, heap 2 GiB, page cache
1 GiB, a fresh store in a temp folder, free ports), so the first load and the first score of each
layout run on a cold server; then it drops and reloads ``--repeat`` more times and reports the
median of those warm runs. With ``NEO4J_URI`` set it uses that server instead (then "cold" only
means the first run of this process). It also times:

- parallel writers: the compact load's arc statement sent by 1 and by 2 threads (disjoint batches,
  each in its own session) on the same positions;
- the kernel probe (``bench/kernel_probe/KernelProbe.java``): the same relationships created
  through Neo4j's core Java API, embedded, no Cypher (compiled with javac against the launcher's
  class path), 1 and 2 threads;
- optionally (``--per-arc N``) the naive loader: one auto-commit query per arc, first N arcs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from neo4j import Driver

from cnngraph.loader import rows, schema
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.connection import connect
from cnngraph.loader.writer import DEFAULT_BATCH, load_network
from cnngraph.mapping import reference
from cnngraph.mapping.network import DESCRIPTORS, MultilayerNetwork
from cnngraph.mapping.topology import topology_for_model
from cnngraph.models import ModelSpec, build_model
from cnngraph.queries.scoring import compute_scores
from cnngraph.server import local
from cnngraph.settings import Neo4jSettings

HERE = Path(__file__).resolve().parent
LAYOUTS = ("per-class", "compact")

# The naive loader: one auto-commit query per arc, creating that arc's t class relationships.
PER_ARC = """
MATCH (a:Position {model: $model, nid: $src})
MATCH (b:Position {model: $model, nid: $dst})
UNWIND range(0, size($mean) - 1) AS h
CREATE (a)-[:ARC {class: h, mean: $mean[h], median: $median[h]}]->(b)
"""


def vgg_network(
    input_size: int, classes: int, seed: int = 0, descriptors: tuple[str, ...] = DESCRIPTORS
) -> MultilayerNetwork:
    """VGG16-BN's topology at ``input_size`` with random node values for ``descriptors``."""
    spec = ModelSpec(source="vgg16", num_classes=classes, input_size=input_size)
    topology = topology_for_model(build_model(spec), (3, input_size, input_size))
    rng = np.random.default_rng(seed)
    n = topology.num_nodes
    values = {d: rng.random((classes, n), dtype=np.float32) for d in descriptors}
    return MultilayerNetwork(
        topology=topology,
        class_names=[f"class{h}" for h in range(classes)],
        node_values=values,
        images_per_class=np.full(classes, 50, dtype=np.int64),
        model={"architecture": "vgg16", "input_shape": [3, input_size, input_size]},
        options={"descriptor": "mean", "response": "activation"},
    )


def server_memory(driver: Driver) -> str:
    records, _, _ = driver.execute_query(
        "CALL dbms.listConfig() YIELD name, value "
        "WHERE name IN ['server.memory.heap.max_size', 'server.memory.pagecache.size'] RETURN name, value"
    )
    runtime, _, _ = driver.execute_query(
        "CALL dbms.queryJmx('java.lang:type=Memory') YIELD attributes "
        "RETURN attributes.HeapMemoryUsage.value.properties.max AS heap"
    )
    settings = {r["name"].split(".")[-2]: r["value"] for r in records}
    heap = runtime[0]["heap"] if runtime else None
    heap_text = f"{heap / 2**30:.2f} GiB (JVM max)" if heap else str(settings.get("heap"))
    return f"heap {heap_text}, page cache {settings.get('pagecache')}"


@contextlib.contextmanager
def bench_server() -> Iterator[Driver]:
    """A driver to NEO4J_URI when set, else to a fresh local server that is stopped afterwards."""
    uri = os.environ.get("NEO4J_URI")  # a server of this script also records its store in STORES
    if uri:
        driver = connect(Neo4jSettings(uri=uri, password=os.environ.get("NEO4J_PASSWORD") or None))
        try:
            yield driver
        finally:
            driver.close()
        return
    with tempfile.TemporaryDirectory(prefix="cnngraph-bench-") as state:
        config = local.ServerConfig(
            state_dir=Path(state),
            bolt_port=local.free_port(),
            http_port=local.free_port(),
            heap="2g",
            pagecache="1g",
            auth=False,
        )
        info = local.start(config, timeout=300)
        try:
            driver = connect(Neo4jSettings(uri=config.bolt_uri))
            STORES[id(driver)] = config.store_dir / "data" / "databases" / "neo4j"
            PIDS[id(driver)] = info.pid
            try:
                yield driver
            finally:
                driver.close()
        finally:
            local.stop(config)


STORES: dict[int, Path] = {}


PIDS: dict[int, int] = {}


def server_cpu(driver: Driver) -> float:
    """CPU seconds (user + system, all threads) the server of this script has used so far, NaN for
    another server. Far less inflated than wall time when other jobs share the cores."""
    pid = PIDS.get(id(driver))
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_bytes(driver: Driver) -> int | None:
    """Bytes of the database's store files (not its transaction logs) of a server this script started."""
    folder = STORES.get(id(driver))
    return None if folder is None else sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def layout_runs(network: MultilayerNetwork, layout: str, repeat: int, batch_size: int) -> dict[str, Any]:
    """Cold load + score on a fresh server, then ``repeat`` warm drop/load/score rounds."""
    loads: list[float] = []
    scores: list[float] = []
    sizes: list[int | None] = []
    cpu: dict[str, list[float]] = {"load": [], "score": []}
    expected = reference.node_scores(network)
    with bench_server() as driver:
        memory = server_memory(driver)
        sizes.append(store_bytes(driver))
        for _ in range(repeat + 1):
            model = f"bench-{layout}-{uuid.uuid4().hex[:8]}"
            before = server_cpu(driver)
            seconds, _ = timed(
                lambda m=model: load_network(driver, network, m, batch_size=batch_size, layout=layout)
            )
            loads.append(seconds)
            cpu["load"].append(server_cpu(driver) - before)
            if len(sizes) == 1:
                sizes.append(store_bytes(driver))
            before = server_cpu(driver)
            seconds, result = timed(lambda m=model: compute_scores(driver, m, "mean"))
            scores.append(seconds)
            cpu["score"].append(server_cpu(driver) - before)
            error = float(np.max(np.abs(result.get("entropy") - expected)))
            assert error < 1e-9, f"{layout}: Cypher delta differs from the numpy reference by {error}"
            drop_model(driver, model)
    grown = None if sizes[0] is None or sizes[1] is None else sizes[1] - sizes[0]
    return {
        "memory": memory, "load": loads, "score": scores, "delta_error": error, "store": grown, "cpu": cpu,
    }  # fmt: skip


def parallel_writers(network: MultilayerNetwork, threads: int, batch_size: int) -> float:
    """Seconds to write every arc with the compact statement from ``threads`` sessions at once."""
    topo = network.topology
    with bench_server() as driver:
        model = f"bench-par-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(_NodesDone):
            load_network(driver, network, model, layout="compact", progress=_stop_after_nodes)
        spans = [(s, min(topo.num_arcs, s + batch_size)) for s in range(0, topo.num_arcs, batch_size)]

        def write(span: tuple[int, int]) -> None:
            batch = rows.compact_arc_batch(network, *span)
            with driver.session() as session:
                session.execute_write(
                    lambda tx: tx.run(schema.CREATE_ARCS_COMPACT, batch, model=model).consume()
                )

        try:
            with ThreadPoolExecutor(threads) as pool:
                seconds, _ = timed(lambda: list(pool.map(write, spans)))
            records, _, _ = driver.execute_query(
                "MATCH (:Position {model: $m})-[r:ARC]->() RETURN count(r) AS n", m=model
            )
            assert records[0]["n"] == topo.num_arcs, records
        finally:
            drop_model(driver, model)
    return seconds


def kernel_probe(network: MultilayerNetwork, threads: int) -> list[dict[str, str]]:
    """Run KernelProbe.java (compiled here) on this network's arcs; one dict per layout."""
    javac = shutil.which("javac")
    if javac is None:
        return []
    classpath = local.launcher_classpath()
    with tempfile.TemporaryDirectory(prefix="cnngraph-probe-") as tmp:
        work = Path(tmp)
        source = HERE / "kernel_probe" / "KernelProbe.java"
        subprocess.run(
            [javac, "-nowarn", "-Xlint:-removal", "-d", str(work), "-cp", classpath, str(source)],
            check=True,
            capture_output=True,
        )
        topo = network.topology
        header = np.array([topo.num_nodes, topo.num_arcs], dtype="<i8")
        arcs = work / "arcs.bin"
        arcs.write_bytes(
            header.tobytes() + topo.arc_src.astype("<i8").tobytes() + topo.arc_dst.astype("<i8").tobytes()
        )
        cmd = [
            "java", "-Xms2g", "-Xmx2g", *local.JVM_FLAGS, "-cp", f"{work}{os.pathsep}{classpath}",
            "KernelProbe", str(arcs), str(network.num_classes), str(work / "store"), str(threads),
        ]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [
        dict(item.split("=", 1) for item in line.split()) for line in out.splitlines() if "layout=" in line
    ]


def per_arc_load(network: MultilayerNetwork, arcs: int) -> float:
    """Relationships per second of the naive loader on the first ``arcs`` arcs (positions already there)."""
    topo = network.topology
    mean = network.weights("mean", arcs=slice(0, arcs)).T.astype(np.float64)
    median = network.weights("median", arcs=slice(0, arcs)).T.astype(np.float64)
    src, dst = topo.arc_src[:arcs].tolist(), topo.arc_dst[:arcs].tolist()
    with bench_server() as driver:
        model = f"bench-naive-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(_NodesDone):
            load_network(driver, network, model, progress=_stop_after_nodes)
        started = time.perf_counter()
        with driver.session() as session:
            for k in range(arcs):
                session.run(
                    PER_ARC,
                    model=model,
                    src=src[k],
                    dst=dst[k],
                    mean=mean[k].tolist(),
                    median=median[k].tolist(),
                ).consume()
        seconds = time.perf_counter() - started
        drop_model(driver, model)
    return arcs * network.num_classes / seconds


def _mib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 2**20:,.0f}"


class _NodesDone(Exception):
    pass


def _stop_after_nodes(phase: str, done: int, total: int) -> None:
    if phase == "arcs":
        raise _NodesDone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per layout (median reported)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument(
        "--per-arc", type=int, default=0, help="arcs for the one-query-per-arc loader (0: skip)"
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the Java kernel probe")
    parser.add_argument(
        "--descriptors", default=",".join(DESCRIPTORS), help="node values stored per arc (comma-separated)"
    )
    parser.add_argument("--no-parallel", action="store_true", help="skip the parallel-writers comparison")
    args = parser.parse_args()

    descriptors = tuple(d for d in DESCRIPTORS if d in args.descriptors.split(","))
    if "mean" not in descriptors:
        parser.error(f"--descriptors must include mean and name only {', '.join(DESCRIPTORS)}")
    network = vgg_network(args.input_size, args.classes, descriptors=descriptors)
    topo = network.topology
    t = network.num_classes
    class_arcs = topo.num_arcs * t
    print(
        f"VGG16-BN {args.input_size}x{args.input_size}, {t} classes: {topo.num_nodes:,} positions, "
        f"{topo.num_arcs:,} arcs x {t} = {class_arcs:,} class-arcs, descriptors {','.join(descriptors)}; "
        f"load average {os.getloadavg()}",
        flush=True,
    )
    results = {}
    for layout in args.layouts.split(","):
        results[layout] = layout_runs(network, layout, args.repeat, args.batch_size)
        r = results[layout]
        print(
            f"{layout}: {r['memory']}; load {r['load']}, score {r['score']}, server CPU {r['cpu']}",
            flush=True,
        )
    print()
    print(
        "| layout | relationships | store growth, MiB | load cold, s | load warm (median), s | "
        "class-arcs/s warm | score cold, s | score warm (median), s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for layout, r in results.items():
        rels = topo.num_arcs if layout == "compact" else class_arcs
        warm_load, warm_score = statistics.median(r["load"][1:]), statistics.median(r["score"][1:])
        print(
            f"| {layout} | {rels:,} | {_mib(r['store'])} | {r['load'][0]:.1f} | {warm_load:.1f} "
            f"| {class_arcs / warm_load:,.0f} "
            f"| {r['score'][0]:.1f} | {warm_score:.1f} |"
        )
    if set(results) == set(LAYOUTS):
        pc, cp = results["per-class"], results["compact"]
        for what in ("load", "score"):
            cold = pc[what][0] / cp[what][0]
            warm = statistics.median(pc[what][1:]) / statistics.median(cp[what][1:])
            print(f"per-class / compact {what} time: cold {cold:.1f}x, warm {warm:.1f}x")
            pc_cpu, cp_cpu = statistics.median(pc["cpu"][what][1:]), statistics.median(cp["cpu"][what][1:])
            print(
                f"server CPU seconds for {what} (warm median): per-class {pc_cpu:.1f}, compact {cp_cpu:.1f} "
                f"({pc_cpu / cp_cpu:.1f}x)"
            )
    if not args.no_parallel:
        one = parallel_writers(network, 1, args.batch_size)
        two = parallel_writers(network, 2, args.batch_size)
        print(f"compact arc statement, 1 writer: {one:.1f} s; 2 writers: {two:.1f} s ({one / two:.2f}x)")
    if not args.no_probe:
        for threads in (1, 2):
            for line in kernel_probe(network, threads):
                print(
                    f"kernel probe (core API, embedded, no Cypher) {line['layout']}, {threads} thread(s): "
                    f"{int(line['relationships']):,} relationships in {float(line['seconds']):.1f} s, "
                    f"{float(line['class_arcs_per_second']):,.0f} class-arcs/s"
                )
    if args.per_arc:
        rate = per_arc_load(network, min(args.per_arc, topo.num_arcs))
        print(f"one auto-commit query per arc (first {args.per_arc:,} arcs): {rate:,.0f} class-arcs/s")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
