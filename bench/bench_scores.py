"""Benchmark: Cypher degrees (degrees.cypher) and delta (scores.cypher, with write-back).

    .venv/bin/python bench/bench_scores.py [--model ID] [--layout per-class|compact]

Without ``--model`` it loads the VGG16-BN 96x96, 10-class network of bench_load.py (2.2M
relationships) first and drops it afterwards. Talks to NEO4J_URI (default bolt://127.0.0.1:7687).
Also checks the Cypher results against the numpy reference.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import numpy as np
from bench_load import server_memory, vgg_network

from cnngraph.loader.catalog import drop_model
from cnngraph.loader.connection import connect
from cnngraph.loader.writer import load_network
from cnngraph.mapping import reference
from cnngraph.queries.scoring import compute_degrees, compute_scores
from cnngraph.settings import Neo4jSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an already loaded bench model (bench_load.py --keep)")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query (first and best shown)")
    parser.add_argument("--layout", default="per-class", help="graph layout of the loaded copy")
    args = parser.parse_args()
    network = vgg_network(args.input_size, args.classes)
    settings = Neo4jSettings(
        uri=os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687"),
        password=os.environ.get("NEO4J_PASSWORD") or None,
    )
    driver = connect(settings)
    model = args.model or f"bench-scores-{uuid.uuid4().hex[:8]}"
    try:
        print(server_memory(driver))
        if args.model is None:
            load_network(driver, network, model, layout=args.layout)
        relationships = network.topology.num_arcs * network.num_classes
        degree_times, score_times = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            degrees = compute_degrees(driver, model, "mean")
            t1 = time.perf_counter()
            scores = compute_scores(driver, model, "mean")
            degree_times.append(t1 - t0)
            score_times.append(time.perf_counter() - t1)
    finally:
        if args.model is None:
            drop_model(driver, model)
        driver.close()
    expected = reference.degrees(network, "mean")
    delta_error = np.max(np.abs(scores.get("entropy") - reference.node_scores(network)))
    degree_error = np.max(np.abs(degrees.total - expected.total) / np.maximum(np.abs(expected.total), 1e-30))
    if args.layout == "compact":
        relationships = network.topology.num_arcs
    print(f"\n{network.topology.num_nodes:,} positions, {relationships:,} relationships ({args.layout})")
    print("| step | first run, seconds | best of the runs, seconds |")
    print("|---|---:|---:|")
    print(
        f"| compute_degrees: degrees.cypher (in/out per class, fetched) | {degree_times[0]:.1f} "
        f"| {min(degree_times):.1f} |"
    )
    print(
        "| compute_scores: scores.cypher (per-class degrees, delta, 3 aggregators, written back, "
        f"fetched) + size_labels.cypher | {score_times[0]:.1f} | {min(score_times):.1f} |"
    )
    print(f"max relative degree error {degree_error:.1e}, max |delta error| {delta_error:.1e}")


if __name__ == "__main__":
    main()
