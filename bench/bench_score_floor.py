"""Benchmark: how close `cnngraph score` and the first load after a start are to what Neo4j allows.

    .venv/bin/python bench/bench_score_floor.py [--repeat 3]

Two questions the layout benchmark (bench_load.py) leaves open, on the same network (VGG16-BN's
topology at 96x96, 10 classes, random node values: 220,488 arcs, 2,204,880 class-arcs):

1. **Per-class score floor.** On a fresh server the per-class layout is loaded once; then, warm,
   ``--repeat`` rounds of: ``compute_scores`` (what `cnngraph score` runs), the read-only part of
   ``scores.cypher`` (the aggregation, nothing written), and two floors that compute no score at
   all: every node's relationships counted from both ends (the bare traversal), and the same
   traversal reading ``class`` and the weight of each relationship (what any per-node degree
   query must read). A query that reads each relationship once and groups by (node, class) in
   one global aggregation is timed as well.
2. **Where the first load after a start goes.** For each layout a fresh server: the first (cold)
   and a second (warm) load of the network, split into setup (schema, model node, lease), nodes
   and arcs, with the server's CPU seconds (all threads: the JIT compiler threads included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench_load import bench_server, server_cpu, vgg_network
from neo4j import Driver

from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.queries import for_layout
from cnngraph.queries.scoring import compute_scores

FLOORS = {
    "bare traversal (count, both ends)": (
        "MATCH (p:Position {model: $model}) "
        "CALL (p) { OPTIONAL MATCH (p)-[r:ARC]-() RETURN count(r) AS c } RETURN sum(c) AS n"
    ),
    "traversal + class and weight read (both ends)": (
        "MATCH (p:Position {model: $model}) "
        "CALL (p) { OPTIONAL MATCH (p)-[r:ARC]-() RETURN sum(r[$descriptor]) AS w, max(r.class) AS h } "
        "RETURN sum(w) AS w"
    ),
    "each relationship once, global (node, class) groups": (
        "MATCH (p:Position {model: $model})-[r:ARC]->(q) "
        "WITH p, q, r.class AS h, r[$descriptor] AS w UNWIND [p, q] AS n "
        "WITH n, h, sum(w) AS s RETURN count(*) AS groups"
    ),
}


def read_only_scores(layout: str) -> str:
    """``scores.cypher`` up to its write-back: the aggregation alone."""
    query = for_layout("scores", layout)
    return query.split("CALL (p, entropy")[0] + "RETURN count(*) AS rows, collect(entropy) AS delta"


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def score_floor(network: MultilayerNetwork, repeat: int) -> dict[str, list[float]]:
    """Seconds per warm round of ``compute_scores``, its aggregation and the floor queries."""
    out: dict[str, list[float]] = {}
    params = {"descriptor": "mean"}
    with bench_server() as driver:
        model = f"floor-{uuid.uuid4().hex[:8]}"
        load_network(driver, network, model)
        params["model"] = model
        queries = {"aggregation only (scores.cypher, read part)": read_only_scores("per-class"), **FLOORS}
        compute_scores(driver, model, "mean")  # the first score compiles the queries: not timed
        for query in queries.values():
            driver.execute_query(query, params)
        for _ in range(repeat):
            out.setdefault("compute_scores (cnngraph score)", []).append(
                timed(lambda: compute_scores(driver, model, "mean"))
            )
            for name, query in queries.items():
                out.setdefault(name, []).append(timed(lambda q=query: driver.execute_query(q, params)))
        drop_model(driver, model)
    return out


def cold_phases(network: MultilayerNetwork, layout: str) -> list[dict[str, float]]:
    """Setup / nodes / arcs seconds and server CPU of the first and the second load on a fresh server."""
    rounds = []
    with bench_server() as driver:
        for _ in range(2):
            rounds.append(_phased_load(driver, network, layout))
    return rounds


def _phased_load(driver: Driver, network: MultilayerNetwork, layout: str) -> dict[str, float]:
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        marks.setdefault(phase, time.perf_counter() - started)

    cpu = server_cpu(driver)
    load_network(driver, network, f"cold-{uuid.uuid4().hex[:8]}", layout=layout, progress=progress)
    total = time.perf_counter() - started
    nodes, arcs = marks.get("nodes", 0.0), marks.get("arcs", total)
    return {
        "total": total,
        "setup": nodes,
        "nodes": arcs - nodes,
        "arcs": total - arcs,
        "server_cpu": server_cpu(driver) - cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm rounds of each query (median shown)")
    parser.add_argument("--skip-cold", action="store_true", help="only the per-class score floor")
    args = parser.parse_args()
    network = vgg_network(96, 10)
    print(
        f"VGG16-BN 96x96, 10 classes: {network.topology.num_arcs * 10:,} class-arcs; "
        f"load average {os.getloadavg()}",
        flush=True,
    )
    print("\n| per-class layout, warm server | median, s | rounds, s |\n|---|---:|---|")
    for name, seconds in score_floor(network, args.repeat).items():
        rounds = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"| {name} | {statistics.median(seconds):.2f} | {rounds} |", flush=True)
    if not args.skip_cold:
        print(
            "\n| layout | load | total, s | setup, s | nodes, s | arcs, s | server CPU, s |"
            "\n|---|---|---:|---:|---:|---:|---:|"
        )
        for layout in ("per-class", "compact"):
            for which, r in zip(("cold", "warm"), cold_phases(network, layout), strict=True):
                print(
                    f"| {layout} | {which} | {r['total']:.1f} | {r['setup']:.1f} | {r['nodes']:.1f} "
                    f"| {r['arcs']:.1f} | {r['server_cpu']:.1f} |",
                    flush=True,
                )
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
