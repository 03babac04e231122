#!/usr/bin/env bash
# Every speed benchmark, one after the other (results go in docs/BENCHMARKS.md by hand).
# Uses NEO4J_URI when set, else starts the local Neo4j (heap 2g, page cache 1g) and stops it after.
set -euo pipefail
cd "$(dirname "$0")"
started_here=0
if [[ -z ${NEO4J_URI:-} ]] && ! cnngraph server status >/dev/null 2>&1; then
  cnngraph server start --heap 2g --pagecache 1g
  started_here=1
fi
trap '[[ $started_here == 1 ]] && cnngraph server stop' EXIT
python bench_mapping.py
python bench_load.py --per-arc 20000   # both layouts, own fresh servers (cold + median of 3 warm), probe
python bench_score_floor.py   # per-class score floor, cold-load phases (own fresh servers)
python bench_scores.py
python bench_scores.py --layout compact
python bench_fetch.py
python bench_prune.py
python bench_training.py
python bench_explain.py   # one image's explanation on ResNet-20, one thread (target <= 0.2 s)
