#!/usr/bin/env bash
# The whole cnngraph job on a real dataset shipped inside a registry package (scikit-learn's
# 8x8 handwritten digits, upscaled to 16x16): train a small VGG-style CNN, map it into its
# multilayer network, load it into Neo4j, score every node by entropy, prune, fine-tune, compare.
# Starts a local Neo4j when NEO4J_URI is not set, and stops it at the end unless
# DEMO_KEEP_SERVER=1 (the store persists; `cnngraph server start` brings the graph back). That
# server has auth on with a password generated at its first start and kept (owner-only) in
# $CNNGRAPH_STATE_DIR/neo4j.password, where every cnngraph command below finds it by itself.
# Its figures (dataset, graph, what it removed, accuracy, parameters and MACs before and after)
# go to $OUT/figures.json (scripts/demo_figures.py). DEMO_EPOCHS and DEMO_FT_EPOCHS set the
# training and fine-tuning epochs.
set -euo pipefail

OUT=${DEMO_OUT:-out/demo}
NAME=${DEMO_MODEL_NAME:-demo-digits}
EPOCHS=${DEMO_EPOCHS:-12}
FT_EPOCHS=${DEMO_FT_EPOCHS:-4}
GAMMA=${DEMO_GAMMA:-1.0}
# The paper's layer rule 'any' keeps a layer when one of its nodes scores above the threshold. On
# this small model every node's entropy lies within a few per cent of ln 10, so 'any' keeps every
# layer at gamma 1; the demo keeps a layer when half its nodes score above it instead.
RULE=${DEMO_RULE:-fraction:0.5}
mkdir -p "$OUT"
export CNNGRAPH_PROGRESS=${CNNGRAPH_PROGRESS:-1}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started_here=0
local_server=0
cleanup() {
  if [[ $started_here == 1 && ${DEMO_KEEP_SERVER:-0} != 1 ]]; then
    step "stopping the local Neo4j this demo started (DEMO_KEEP_SERVER=1 keeps it)"
    cnngraph server stop || true
  fi
}
trap cleanup EXIT

if [[ -z ${NEO4J_URI:-} ]]; then
  local_server=1
  if cnngraph server status >/dev/null 2>&1; then
    # That server may listen on other ports than the default: use the Bolt URI its state records.
    NEO4J_URI=$(python3 -c 'import json
from cnngraph.settings import STATE_FILE, default_state_dir
print(json.loads((default_state_dir() / STATE_FILE).read_text())["bolt_uri"])')
    export NEO4J_URI
    step "using the local Neo4j that is already running at $NEO4J_URI (state in ${CNNGRAPH_STATE_DIR:-$HOME/.local/state/cnngraph})"
  else
    step "starting a local Neo4j 5.26 (state in $CNNGRAPH_STATE_DIR)"
    cnngraph server start
    started_here=1
  fi
fi

step "1/6 train a small VGG-style CNN on builtin:digits (1,797 real handwritten digits)"
cnngraph train --model small_cnn --data builtin:digits --test-fraction 0.2 --epochs "$EPOCHS" \
  --lr 0.05 --seed 0 --out "$OUT/model.pt"

step "2/6 map it into its multilayer network (one class network per digit)"
cnngraph map --checkpoint "$OUT/model.pt" builtin:digits --images-per-class 64 --out "$OUT/$NAME.npz"
cnngraph inspect "$OUT/$NAME.npz"

step "3/6 load it into Neo4j"
cnngraph load "$OUT/$NAME.npz" --name "$NAME" --replace

step "4/6 degrees and entropy in Cypher"
cnngraph score --model "$NAME" --out "$OUT/scores.csv"

step "5/6 prune: layers removed against gamma (rule any, no fine-tuning), then prune and fine-tune"
cnngraph sweep --model "$NAME" --checkpoint "$OUT/model.pt" --gamma-start 0.99 --gamma-stop 1.01 \
  --gamma-step 0.0025 --out "$OUT/sweep"
cnngraph prune --model "$NAME" --checkpoint "$OUT/model.pt" --gamma "$GAMMA" --rule "$RULE" \
  --epochs "$FT_EPOCHS" --out "$OUT/pruned"

step "6/6 explore the graph"
cnngraph browse --model "$NAME"
if [[ $local_server == 1 ]]; then
  echo "Browser login: user neo4j, password in ${CNNGRAPH_STATE_DIR:-$HOME/.local/state/cnngraph}/neo4j.password"
fi
# The run's figures (what the README does not quote, since they depend on the training run).
python3 "$(dirname "$0")/demo_figures.py" "$OUT" "$NAME" "$SECONDS"
echo "Outputs: $OUT (model.pt, $NAME.npz, scores.csv, pruned/report.json, pruned/*.png, figures.json)"
