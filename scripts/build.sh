#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh) and builds modeld into build/.
# Idempotent and incremental: a second run only rebuilds what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${MODELD_BUILD_DIR:-$ROOT/build}"
JOBS="${MODELD_JOBS:-$(nproc)}"

bash "$ROOT/scripts/setup.sh"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" 2>&1 | grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built target)' || true
test "${PIPESTATUS[0]}" -eq 0
