"""Benchmark: batched UNWIND loader vs one query per arc, on a VGG16-BN-sized network.

    .venv/bin/python bench/bench_load.py [--input-size 96] [--classes 10] [--per-arc 20000]

Topology: VGG16-BN (13 convolutions, 3x3 'same', 2x2 pools) traced at the given input size;
node values are random (the load speed does not depend on them). Talks to the server at
NEO4J_URI (default bolt://127.0.0.1:7687) and drops its models afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import uuid

import numpy as np
from neo4j import Driver

from cnngraph.loader.catalog import drop_model
from cnngraph.loader.connection import connect
from cnngraph.loader.writer import DEFAULT_BATCH, load_network
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.mapping.topology import topology_for_model
from cnngraph.models import ModelSpec, build_model
from cnngraph.settings import Neo4jSettings

# The naive loader: one auto-commit query per arc, creating that arc's t class relationships.
PER_ARC = """
MATCH (a:Position {model: $model, nid: $src})
MATCH (b:Position {model: $model, nid: $dst})
UNWIND range(0, size($mean) - 1) AS h
CREATE (a)-[:ARC {class: h, mean: $mean[h], median: $median[h]}]->(b)
"""


def vgg_network(input_size: int, classes: int, seed: int = 0) -> MultilayerNetwork:
    """VGG16-BN's topology at ``input_size`` with random node values."""
    spec = ModelSpec(source="vgg16", num_classes=classes, input_size=input_size)
    topology = topology_for_model(build_model(spec), (3, input_size, input_size))
    rng = np.random.default_rng(seed)
    n = topology.num_nodes
    values = {d: rng.random((classes, n), dtype=np.float32) for d in ("mean", "median")}
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


def per_arc_load(driver: Driver, network: MultilayerNetwork, model: str, arcs: int) -> float:
    """Relationships per second of the naive loader on the first ``arcs`` arcs (positions already there)."""
    topo = network.topology
    mean = network.weights("mean", arcs=slice(0, arcs)).T.astype(np.float64)
    median = network.weights("median", arcs=slice(0, arcs)).T.astype(np.float64)
    src, dst = topo.arc_src[:arcs].tolist(), topo.arc_dst[:arcs].tolist()
    start = time.perf_counter()
    with driver.session() as session:
        for k in range(arcs):
            session.run(
                PER_ARC, model=model, src=src[k], dst=dst[k], mean=mean[k].tolist(), median=median[k].tolist()
            ).consume()
    return arcs * network.num_classes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--per-arc", type=int, default=20_000, help="arcs for the one-query-per-arc loader")
    parser.add_argument("--keep", action="store_true", help="keep the batched model (for bench_scores.py)")
    args = parser.parse_args()

    network = vgg_network(args.input_size, args.classes)
    topo = network.topology
    relationships = topo.num_arcs * network.num_classes
    print(
        f"VGG16-BN {args.input_size}x{args.input_size}, {network.num_classes} classes: "
        f"{topo.num_nodes:,} positions, {topo.num_arcs:,} arcs x {network.num_classes} = {relationships:,}"
    )
    settings = Neo4jSettings(
        uri=os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687"),
        password=os.environ.get("NEO4J_PASSWORD") or None,
    )
    driver = connect(settings)
    batched_model = f"bench-load-{uuid.uuid4().hex[:8]}"
    naive_model = f"bench-naive-{uuid.uuid4().hex[:8]}"
    try:
        print(server_memory(driver))
        report = load_network(driver, network, batched_model, batch_size=args.batch_size)
        batched = report.relationships_per_second
        # The naive loader writes arcs between positions that a batched load created (stopped before arcs).
        subset = min(args.per_arc, topo.num_arcs)
        with contextlib.suppress(_NodesDone):
            load_network(driver, network, naive_model, progress=_stop_after_nodes)
        naive = per_arc_load(driver, network, naive_model, subset)
    finally:
        drop_model(driver, naive_model)
        if not args.keep:
            drop_model(driver, batched_model)
        driver.close()
    print()
    print("| loader | relationships | seconds | arcs/s (relationships/s) |")
    print("|---|---:|---:|---:|")
    print(
        f"| batched UNWIND, {args.batch_size} arcs x {network.num_classes} classes per transaction | "
        f"{relationships:,} | {report.seconds:.1f} | {batched:,.0f} |"
    )
    print(
        f"| one query per arc | {subset * network.num_classes:,} | "
        f"{subset * network.num_classes / naive:.1f} | {naive:,.0f} |"
    )
    print(f"| ratio batched / per arc | | | {batched / naive:.0f}x |")
    if args.keep:
        print(f"kept model '{batched_model}'")


class _NodesDone(Exception):
    pass


def _stop_after_nodes(phase: str, done: int, total: int) -> None:
    if phase == "arcs":
        raise _NodesDone


if __name__ == "__main__":
    main()
