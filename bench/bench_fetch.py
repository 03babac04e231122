"""What one Bolt record per node costs the Python driver, against the same values as column lists.

    .venv/bin/python bench/bench_fetch.py [--rows 25308] [--repeat 3]

Talks to NEO4J_URI (default: the local server). The query builds its rows in Cypher (no store
access), so the difference is the per-record cost of Bolt and the driver that
``scoring.columnar`` avoids.
"""

from __future__ import annotations

import argparse
import time

from cnngraph.loader.connection import connect
from cnngraph.settings import Neo4jSettings

COLUMNS = ("nid", "layer", "i", "j", "entropy", "mean", "participation")
PER_ROW = (
    "UNWIND range(1, $n) AS x\n"
    "RETURN x AS nid, x AS layer, x AS i, x AS j, 1.5 AS entropy, 2.5 AS mean, 0.5 AS participation"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=25_308, help="rows (the benchmark network's node count)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from cnngraph.queries.scoring import columnar

    driver = connect(Neo4jSettings.from_env())
    try:
        print(f"| round | {args.rows:,} records, s | {len(COLUMNS)} column lists, s |")
        print("|---:|---:|---:|")
        for k in range(args.repeat):
            with driver.session() as session:
                start = time.perf_counter()
                rows = list(session.run(PER_ROW, n=args.rows))
                per_row = time.perf_counter() - start
                start = time.perf_counter()
                record = session.run(columnar(PER_ROW, COLUMNS), n=args.rows).single(strict=True)
                as_lists = time.perf_counter() - start
            assert len(rows) == record["rows"] == len(record["nid"]) == args.rows
            print(f"| {k + 1} | {per_row:.2f} | {as_lists:.3f} |")
    finally:
        driver.close()


if __name__ == "__main__":
    main()
