#!/usr/bin/env bash
# Builds modeld with sanitizers and runs its tests there:
#   asan: AddressSanitizer + UndefinedBehaviorSanitizer, the whole project (llama.cpp adapter and llama.cpp
#         itself included) in build-asan/, then the whole ctest suite;
#   tsan: ThreadSanitizer in build-tsan/, the tests of the concurrent parts (daemon, client, workspace,
#         session manager, llama session, compute gate).
# Any report fails the run (halt_on_error, -fno-sanitize-recover=all). Prints wall-clock times per phase.
#
#   scripts/sanitize.sh [asan|tsan|both]     (default: both)
#
# Environment: MODELD_JOBS (build and test jobs, default: all cores). The compiler is the project's own
# (Debian 12's GCC 12, whose sanitizer runtimes come with it). ggml is built without OpenMP
# (GGML_OPENMP=OFF, as cmake/llama.cmake always does), whose threads TSan cannot see.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${MODELD_JOBS:-$(nproc)}"
WHICH="${1:-both}"
case "$WHICH" in
  asan | tsan | both) ;;
  *)
    echo "usage: $0 [asan|tsan|both]" >&2
    exit 2
    ;;
esac

log() { printf 'sanitize: %s\n' "$*" >&2; }
bash "$ROOT/scripts/setup.sh"

times=()
# build DIR SANITIZER_FLAGS [TARGET...]: configures and builds; no targets = everything.
build() {
  local dir="$1" san="$2"
  shift 2
  local flags="-O1 -g -fno-omit-frame-pointer $san"
  local t0=$SECONDS
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Sanitize \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" \
    -DGGML_OPENMP=OFF -DMODELD_BUILD_BENCH=OFF >/dev/null
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$dir" -j "$JOBS" "${targets[@]}" 2>&1 |
    grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built target)' || true
  test "${PIPESTATUS[0]}" -eq 0
  times+=("$(basename "$dir"): build $((SECONDS - t0)) s")
}

# run_tests DIR [CTEST ARGS...]
run_tests() {
  local dir="$1"
  shift
  local t0=$SECONDS rc=0
  (cd "$dir" && ctest --output-on-failure --no-tests=error -j "$JOBS" "$@") || rc=$?
  times+=("$(basename "$dir"): tests $((SECONDS - t0)) s")
  return "$rc"
}

failed=()
if [ "$WHICH" = asan ] || [ "$WHICH" = both ]; then
  log "AddressSanitizer + UndefinedBehaviorSanitizer: build-asan, every test"
  build "$ROOT/build-asan" "-fsanitize=address,undefined -fno-sanitize-recover=all"
  ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    run_tests "$ROOT/build-asan" || failed+=(asan)
fi

if [ "$WHICH" = tsan ] || [ "$WHICH" = both ]; then
  log "ThreadSanitizer: build-tsan, the daemon, client, workspace, session and compute gate tests"
  # Only the test programs that run (the others would be built for nothing).
  build "$ROOT/build-tsan" "-fsanitize=thread" \
    server_test client_test workspace_test session_manager_test llama_session_test compute_gate_test
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4" \
    run_tests "$ROOT/build-tsan" \
    -R '^(ServerTest|ClientTest|ClientNoDaemon|Workspace|SessionManager|LlamaSession|LlamaService|ComputeGate)\.' ||
    failed+=(tsan)
fi

printf 'sanitize: %s\n' "${times[@]}"
if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "no sanitizer reports"
