"""Benchmark: what the read guard and the checked score write-back cost (issue 33).

    .venv/bin/python bench/bench_read_guard.py [--input-size 64] [--repeat 3]

Loads the VGG16-BN network of bench_load.py (10 classes) and times, per warm round,
``compute_degrees`` and ``compute_scores`` split into their parts: the guard's own queries (the
``:Model`` node read before and after, ``get_model``), the graph read (``_run_columns``), the score
write-back in batches that lock and check the model (``_write_scores``), the start and finish of
scoring and the size labels. Drops its copy afterwards. Talks to NEO4J_URI / NEO4J_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench_load import vgg_network

from cnngraph.loader import catalog
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.connection import connect
from cnngraph.loader.writer import load_network
from cnngraph.queries import scoring
from cnngraph.settings import Neo4jSettings

PARTS = (
    ("guard (model read before and after)", catalog, "get_model"),
    ("graph read (the query)", scoring, "_run_columns"),
    ("checked write-back", scoring, "_write_scores"),
    ("start + finish of scoring", scoring, "_start_scoring"),
    ("start + finish of scoring", scoring, "_finish_scoring"),
)


def timed(spent: dict[str, float], name: str, work: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return work(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    network = vgg_network(args.input_size, 10)
    settings = Neo4jSettings(
        uri=os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687"),
        password=os.environ.get("NEO4J_PASSWORD") or None,
    )
    driver = connect(settings)
    model = f"bench-guard-{uuid.uuid4().hex[:8]}"
    spent: dict[str, float] = defaultdict(float)
    for name, module, attr in PARTS:
        setattr(module, attr, timed(spent, name, getattr(module, attr)))
    try:
        load_network(driver, network, model)
        print(f"{network.topology.num_nodes:,} positions, {network.topology.num_arcs * 10:,} relationships")
        for label, work in (
            ("compute_degrees", lambda: scoring.compute_degrees(driver, model)),
            ("compute_scores", lambda: scoring.compute_scores(driver, model)),
        ):
            work()  # compiles the queries: not timed
            rounds: list[dict[str, float]] = []
            for _ in range(args.repeat):
                spent.clear()
                started = time.perf_counter()
                work()
                total = time.perf_counter() - started
                rounds.append({"total": total, **spent})
            print(f"\n{label}, median of {args.repeat} warm rounds (s):")
            for key in ["total", *[k for k in rounds[0] if k != "total"]]:
                values = [r.get(key, 0.0) for r in rounds]
                print(f"  {key}: {statistics.median(values):.3f}  ({', '.join(f'{v:.3f}' for v in values)})")
    finally:
        drop_model(driver, model)
        driver.close()


if __name__ == "__main__":
    main()
