"""How long ``cnngraph --help`` takes (issue 31: <= 0.3 s), as a user runs it: a new process each time.

Prints the median and the spread of wall and CPU (user + system) seconds over ``--runs`` runs of
``cnngraph --help`` (the console script of the running interpreter's environment), and for
reference a bare ``python -c pass`` and ``import typer.rich_utils`` (the help formatter's own cost).

    .venv/bin/python bench/bench_cli_startup.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], runs: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "100"})
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "wall_median_s": round(statistics.median(walls), 4),
        "wall_min_s": round(min(walls), 4),
        "wall_max_s": round(max(walls), 4),
        "cpu_median_s": round(statistics.median(cpus), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    script = Path(sys.executable).with_name("cnngraph")
    results = {
        "cnngraph --help": timed([str(script), "--help"], args.runs),
        "python -c pass": timed([sys.executable, "-c", "pass"], args.runs),
        "import typer.rich_utils": timed([sys.executable, "-c", "import typer.rich_utils"], args.runs),
        "load average (1 min) at the end": os.getloadavg()[0],
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
