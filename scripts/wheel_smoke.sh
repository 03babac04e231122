#!/usr/bin/env bash
# cnngraph as a pip user gets it: build the sdist and the wheel (from the sdist), install the wheel
# into a fresh virtual environment outside the checkout, and run the whole pipeline from an empty
# temporary folder, with the checkout nowhere on sys.path and the Neo4j launcher built from the
# sources inside the wheel into the per-user cache that XDG_CACHE_HOME names. Fails on the first
# error. That cache is .cnngraph/smoke-cache, kept between runs: the launcher is built again
# whenever its sources (or the version) change, and SMOKE_FRESH_CACHE=1 builds it every time
# (about 20 s more). The server starts in the background while the model trains and is mapped.
#
# The fresh environment does not download PyTorch again (3 GB): the wheel goes in with
# 'pip install --no-deps', and the third-party packages come from the main virtual environment
# through a .pth file naming a folder of links to them (every entry of its site-packages except
# cnngraph's own, its editable-install hooks and other .pth files), then 'pip check' proves that
# they satisfy the wheel's pinned requirements. The trade-off: this checks the pins against the
# versions the main environment installed from them, not pip's resolution of the pins from PyPI.
#
# Environment: MAIN_VENV (default .venv), SMOKE_KEEP=1 keeps the work folder, SMOKE_EXPLAIN_ARGS
# replaces the arguments of the explain step (it runs only when 'cnngraph explain' exists).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAIN_VENV=$(cd "${MAIN_VENV:-$ROOT/.venv}" && pwd)
MAIN_PY=$MAIN_VENV/bin/python
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnngraph-smoke.XXXXXX")
VENV=$WORK/venv
RUN=$WORK/run
began=$SECONDS
server_started=0

step() { printf '\n== smoke (%ss): %s\n' "$((SECONDS - began))" "$*"; }
fail() { echo "wheel smoke FAILED: $*" >&2; exit 1; }
cleanup() {
  local rc=$?
  if [[ $server_started == 1 ]]; then
    (cd "$RUN" && "$VENV/bin/cnngraph" server stop "${PORTS[@]}") || true
  fi
  if [[ ${SMOKE_KEEP:-0} == 1 || $rc != 0 ]]; then
    echo "wheel smoke: work folder kept: $WORK (server log: $WORK/state/neo4j.log)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

step "build the sdist and the wheel (from the sdist) with python -m build"
"$MAIN_PY" -m build --no-isolation --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
  || { tail -20 "$WORK/build.log" >&2; fail "python -m build"; }
WHEEL=$(ls "$WORK"/dist/cnngraph-*.whl)
SDIST=$(ls "$WORK"/dist/cnngraph-*.tar.gz)
VERSION=$(basename "$WHEEL" | cut -d- -f2)
for inside in cnngraph/_bundled/server/pom.xml cnngraph/_bundled/docs/METHOD.md \
    cnngraph/_bundled/server/src/main/java/org/cnngraph/server/Launcher.java; do
  "$MAIN_PY" -c "import sys, zipfile; sys.exit(sys.argv[2] not in zipfile.ZipFile(sys.argv[1]).namelist())" \
    "$WHEEL" "$inside" || fail "the wheel lacks $inside"
done
"$MAIN_PY" -c "import sys, tarfile; n = tarfile.open(sys.argv[1]).getnames(); \
sys.exit(not any(x.endswith('/server/pom.xml') for x in n) or any('/server/target/' in x for x in n))" "$SDIST" \
  || fail "the sdist lacks server/pom.xml, or carries server/target"

step "a fresh virtual environment outside the checkout, the wheel installed with --no-deps"
BASE_PY=$("$MAIN_PY" -c "import sys; print(sys._base_executable)")
"$BASE_PY" -m venv --without-pip "$VENV"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
MAIN_SITE=$("$MAIN_PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$WORK/deps"
for entry in "$MAIN_SITE"/*; do
  case $(basename "$entry") in
    cnngraph | cnngraph-* | __editable__* | *.pth | __pycache__ | pip | pip-*) ;;
    *) ln -s "$entry" "$WORK/deps/" ;;
  esac
done
echo "$WORK/deps" >"$SITE/_cnngraph_smoke_deps.pth"
"$MAIN_PY" -m pip --python "$VENV/bin/python" install -q --no-deps --no-index "$WHEEL"
"$MAIN_PY" -m pip --python "$VENV/bin/python" check >"$WORK/pip-check.log" 2>&1 \
  || { cat "$WORK/pip-check.log" >&2; fail "pip check: the wheel's pinned requirements are not met"; }

mkdir -p "$RUN"
cd "$RUN"
# Nothing of the checkout's setup leaks in: its state dir, launcher folder and Python path.
unset PYTHONPATH CNNGRAPH_SERVER_DIR NEO4J_URI NEO4J_PASSWORD NEO4J_USER NEO4J_DATABASE VIRTUAL_ENV
CACHE=$ROOT/.cnngraph/smoke-cache
if [[ ${SMOKE_FRESH_CACHE:-0} == 1 ]]; then CACHE=$WORK/cache; fi
export CNNGRAPH_STATE_DIR=$WORK/state XDG_CACHE_HOME=$CACHE CNNGRAPH_PROGRESS=0 OMP_NUM_THREADS=2
export PATH="$VENV/bin:$PATH"
CG=$VENV/bin/cnngraph

step "the installed package is the one that runs (not the checkout)"
"$VENV/bin/python" - "$VENV" "$ROOT" "$VERSION" <<'EOF'
import os, sys
import cnngraph
venv, root = (os.path.realpath(p) for p in sys.argv[1:3])
version = sys.argv[3]
where = os.path.realpath(cnngraph.__file__)
assert where.startswith(venv + os.sep), f"cnngraph imported from {where}, not from the fresh venv {venv}"
inside = [p for p in sys.path if p and os.path.realpath(p).startswith(root + os.sep)]
assert not inside and os.path.realpath(os.getcwd()) != root, f"the checkout is on sys.path: {inside}"
assert cnngraph.__version__ == version, (cnngraph.__version__, version)
print(f"cnngraph {cnngraph.__version__} from {where}")
EOF
[[ $("$CG" --version) == "cnngraph $VERSION" ]] || fail "cnngraph --version says '$("$CG" --version)'"
"$CG" method 3 | grep -q "^## 3\. Arcs" || fail "'cnngraph method 3' does not print section 3"

step "server start in the background (the launcher from the wheel's sources, cached in \$XDG_CACHE_HOME)"
read -r BOLT HTTP < <("$VENV/bin/python" -c \
  "from cnngraph.server.local import free_port as f; print(f(), f())")
PORTS=(--bolt-port "$BOLT" --http-port "$HTTP")
server_started=1
"$CG" server start "${PORTS[@]}" --heap 512m --pagecache 128m >"$WORK/server-start.log" 2>&1 &
starting=$!

step "train 1 epoch on builtin:digits"
"$CG" train --model small_cnn --data builtin:digits --epochs 1 --seed 0 --out model.pt >/dev/null

step "map, inspect (the mapping records the version)"
"$CG" map --checkpoint model.pt builtin:digits --images-per-class 8 --out digits.npz >/dev/null
"$CG" inspect digits.npz | grep -q "cnngraph_version=$VERSION" || fail "inspect shows no cnngraph_version"

step "wait for the server"
wait "$starting" || { cat "$WORK/server-start.log" >&2; fail "cnngraph server start"; }
cat "$WORK/server-start.log"
ls "$XDG_CACHE_HOME"/cnngraph/launcher/"$VERSION"-*/target/classpath.txt >/dev/null \
  || fail "no launcher was built in $XDG_CACHE_HOME/cnngraph/launcher"
grep -qa -- "$XDG_CACHE_HOME/cnngraph/launcher" "/proc/$(cat "$CNNGRAPH_STATE_DIR/neo4j.pid")/cmdline" \
  || fail "the server does not run the launcher built in the cache"
export NEO4J_URI=bolt://127.0.0.1:$BOLT

step "load, score"
"$CG" load digits.npz --name smoke-digits >/dev/null
"$CG" score --model smoke-digits --out scores.csv >/dev/null
[[ $(wc -l <scores.csv) -gt 100 ]] || fail "scores.csv has $(wc -l <scores.csv) lines"

step "prune --dry-run"
"$CG" prune --model smoke-digits --checkpoint model.pt --dry-run --json >dry-run.json
grep -q '"removed"\|"kept"' dry-run.json || fail "prune --dry-run printed no selection"

if "$CG" explain --help >/dev/null 2>&1; then
  step "explain one image"
  read -r -a EXPLAIN_ARGS <<<"${SMOKE_EXPLAIN_ARGS:---checkpoint model.pt --index 0 --out explain}"
  "$CG" explain "${EXPLAIN_ARGS[@]}" >/dev/null
  compgen -G "explain/*.png" >/dev/null || fail "cnngraph explain wrote no heatmap (explain/*.png)"
else
  step "explain: skipped ('cnngraph explain' does not exist in this version)"
fi

step "server stop"
"$CG" server stop "${PORTS[@]}"
server_started=0
step "passed: wheel $(basename "$WHEEL") installed in a fresh venv, the whole pipeline from $RUN"
