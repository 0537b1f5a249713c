#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, -fsanitize=fuzzer,address,undefined) into build-fuzz/ and
# runs each for SECONDS_PER_TARGET seconds (default 30), one after the other, on a scratch copy of its
# committed seed corpus fuzz/corpus/<target>/ (the committed corpus is never grown by this script).
# Fails on any crash, sanitizer report, leak, timeout or out-of-memory; the reproducer is kept in
# build-fuzz/artifacts/. Prints the executions of each target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Environment: MODELD_JOBS (build jobs, default: all cores), MODELD_FUZZ_BUILD_DIR (default build-fuzz),
# MODELD_FUZZ_CXXFLAGS (added to the C++ flags).
# Reproduce a finding: build-fuzz/fuzz/<target> <file>; minimize: <target> -minimize_crash=1 <file>.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${MODELD_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
JOBS="${MODELD_JOBS:-$(nproc)}"
SECONDS_PER_TARGET="${1:-30}"
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(gguf_header_fuzzer wire_codec_fuzzer text_format_fuzzer openai_codec_fuzzer snapshot_file_fuzzer)

log() { printf 'fuzz: %s\n' "$*" >&2; }

# Everything the project needs (the vendored JSON header comes with the llama.cpp tree), then clang, its
# runtime (libFuzzer and the sanitizers) and llvm (llvm-symbolizer, for readable stack traces). Clang 16,
# not Debian 12's default 14: the code uses std::expected, and libstdc++ 12's <expected> needs
# conditionally trivial special members (P0848), which clang implements from 16 on.
bash "$ROOT/scripts/setup.sh"
CLANG_VERSION=16
missing=()
for p in "clang-$CLANG_VERSION" "libclang-rt-$CLANG_VERSION-dev" "llvm-$CLANG_VERSION"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# -fsanitize=fuzzer-no-link on everything: the libraries under test get coverage; the targets link libFuzzer.
# clang 16 still reports __cpp_concepts as 201907, which hides libstdc++ 12's <expected> although clang 16
# implements what it needs; the macro is raised for this build only.
FLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
FLAGS+=" -D_GLIBCXX_ASSERTIONS -Wno-unknown-warning-option"
CXX_FLAGS="$FLAGS -U__cpp_concepts -D__cpp_concepts=202002L ${MODELD_FUZZ_CXXFLAGS:-}"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Fuzz \
  -DCMAKE_C_COMPILER="clang-$CLANG_VERSION" -DCMAKE_CXX_COMPILER="clang++-$CLANG_VERSION" \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$CXX_FLAGS" \
  -DMODELD_WITH_LLAMA=OFF -DMODELD_BUILD_BENCH=OFF -DMODELD_FUZZ=ON >/dev/null
cmake --build "$BUILD_DIR" --target "${TARGETS[@]}" -j "$JOBS" 2>&1 |
  grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built target)' || true
test "${PIPESTATUS[0]}" -eq 0

SYM="external_symbolizer_path=/usr/bin/llvm-symbolizer-$CLANG_VERSION"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:$SYM${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:$SYM${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
ARTIFACTS="$BUILD_DIR/artifacts"
mkdir -p "$ARTIFACTS"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  corpus="$scratch/$t"
  mkdir -p "$corpus"
  [ -d "$ROOT/fuzz/corpus/$t" ] && cp -r "$ROOT/fuzz/corpus/$t/." "$corpus/"
  dict=()
  [ -f "$ROOT/fuzz/$t.dict" ] && dict=(-dict="$ROOT/fuzz/$t.dict")
  log "$t: ${SECONDS_PER_TARGET}s on $(find "$corpus" -type f | wc -l) seeds"
  out="$scratch/$t.log"
  rc=0
  "$BUILD_DIR/fuzz/$t" "$corpus" "${dict[@]}" -max_total_time="$SECONDS_PER_TARGET" -timeout=25 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t-" >"$out" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)"
  cov="$(grep -oE 'cov: [0-9]+' "$out" | tail -1 | cut -d' ' -f2)"
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$out" >&2
    failed+=("$t")
    summary+=("$t: FAILED (exit $rc) after ${execs:-?} executions; reproducer: $(ls -t "$ARTIFACTS/$t-"* 2>/dev/null | head -1)")
  else
    summary+=("$t: ok, ${execs:-?} executions in ${SECONDS_PER_TARGET}s, coverage ${cov:-?} edges")
  fi
done

printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
