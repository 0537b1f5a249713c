#!/usr/bin/env bash
# Builds everything and runs every test: the full build (with the llama.cpp
# adapter), the fuzz targets for 30 s each (scripts/fuzz.sh) and the contract
# alone (MODELD_WITH_LLAMA=OFF), as CI does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${MODELD_JOBS:-$(nproc)}"

bash "$ROOT/scripts/build.sh"
(cd "$ROOT/build" && ctest --output-on-failure -j "$JOBS")

# The fuzz targets (fuzz/), briefly: each on its committed seeds for MODELD_FUZZ_SECONDS (30).
bash "$ROOT/scripts/fuzz.sh" "${MODELD_FUZZ_SECONDS:-30}"

# The contract without any backend adapter: builds, and its tests pass.
MODELD_BUILD_DIR="$ROOT/build-noadapter" bash "$ROOT/scripts/build.sh" -DMODELD_WITH_LLAMA=OFF
(cd "$ROOT/build-noadapter" && ctest --output-on-failure -j "$JOBS")
