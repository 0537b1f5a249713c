#!/usr/bin/env bash
# The coding-loop benchmark in one command (docs/BENCHMARKS.md):
#   1. builds modeld and modeld-bench (scripts/build.sh: setup + build, idempotent);
#   2. builds llama-server and llama-bench from the same verified tree third_party/llama.cpp
#      into build-bench/llama.cpp (configured once; later runs are incremental no-ops);
#   3. generates the coder-0.5b model (random weights, real shape) if missing;
#   4. runs modeld-bench; the table goes to stdout and build-bench/modeld-bench.txt, the JSON to
#      build-bench/modeld-bench.json (or --out FILE).
# Arguments go to modeld-bench, e.g. `scripts/bench.sh --ctx 8192 --turns 4`; with no --model the
# coder-0.5b model is used (MODELD_BENCH_PRESET picks another preset).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${MODELD_BUILD_DIR:-$ROOT/build}"
BENCH_DIR="${MODELD_BENCH_DIR:-$ROOT/build-bench}"
JOBS="${MODELD_JOBS:-$(nproc)}"
PRESET="${MODELD_BENCH_PRESET:-coder-0.5b}"

log() { printf 'bench: %s\n' "$*" >&2; }
mkdir -p "$BENCH_DIR"

# 1. modeld (+ modeld-bench, built with it).
bash "$ROOT/scripts/build.sh" >&2
if [ ! -x "$BUILD_DIR/bin/modeld-bench" ]; then
  log "ERROR: $BUILD_DIR/bin/modeld-bench was not built (configure with -DMODELD_BUILD_BENCH=ON)"
  exit 1
fi

has_arg() {
  local want="$1"; shift
  for a in "$@"; do [ "$a" = "$want" ] && return 0; done
  return 1
}

# 2. llama-server and llama-bench from the verified tree, unless the run skips both.
LLAMA_BUILD="$BENCH_DIR/llama.cpp"
if ! { has_arg --skip-llama-server "$@" && has_arg --skip-llama-bench "$@"; }; then
  if [ ! -f "$LLAMA_BUILD/CMakeCache.txt" ]; then
    log "configuring llama.cpp tools in $LLAMA_BUILD (one-time; the first build takes several minutes)"
    # No UI assets: the build would otherwise try to fetch or npm-build the web UI.
    cmake -S "$ROOT/third_party/llama.cpp" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release \
      -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
  fi
  # Incremental: a no-op once built. The output (including the UI-assets warning on every run)
  # goes to a log, shown only on failure.
  if ! cmake --build "$LLAMA_BUILD" -j "$JOBS" --target llama-server llama-bench >"$BENCH_DIR/llama-build.log" 2>&1; then
    tail -40 "$BENCH_DIR/llama-build.log" >&2
    log "ERROR: building llama-server/llama-bench failed (log: $BENCH_DIR/llama-build.log)"
    exit 1
  fi
fi

# 3. The model, generated once ($MODELD_HOME/models, as modeld's own default model).
args=("$@")
if ! has_arg --model "$@"; then
  if [ -n "${MODELD_HOME:-}" ]; then home="$MODELD_HOME"
  elif [ -n "${XDG_CACHE_HOME:-}" ]; then home="$XDG_CACHE_HOME/modeld"
  elif [ -n "${HOME:-}" ]; then home="$HOME/.cache/modeld"
  else home=/tmp/modeld; fi
  model="$home/models/bench-$PRESET.gguf"
  if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    log "generating $model (preset $PRESET)"
    "$BUILD_DIR/bin/modeld" make-model --preset "$PRESET" --out "$model.tmp" >&2
    mv "$model.tmp" "$model"
  fi
  args+=(--model "$model")
fi

# 4. The run.
has_arg --out "$@" || args+=(--out "$BENCH_DIR/modeld-bench.json")
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD_DIR/bin/modeld-bench" --modeld "$BUILD_DIR/bin/modeld" \
  --llama-server "$LLAMA_BUILD/bin/llama-server" --llama-bench "$LLAMA_BUILD/bin/llama-bench" \
  "${args[@]}" | tee "$BENCH_DIR/modeld-bench.txt"
exit "${PIPESTATUS[0]}"
