#!/usr/bin/env bash
# The main job: build (if needed) and run `modeld demo`, a scripted coding
# loop on a live session. With no arguments it uses the built-in default
# model (generated on first use); pass `--model PATH` for your own GGUF.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/build.sh" >&2
exec "${MODELD_BUILD_DIR:-$ROOT/build}/bin/modeld" demo "$@"
