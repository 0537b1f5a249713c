#!/usr/bin/env bash
# The main job: build (if needed), start the daemon (`modeld serve`) on a
# private socket, run the scripted coding loop through the wire protocol,
# print the per-turn table and stop the daemon. With no arguments it uses
# the built-in default model (generated on first use); pass `--model PATH`
# for your own GGUF.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/build.sh" >&2
exec "${MODELD_BUILD_DIR:-$ROOT/build}/bin/modeld" demo --daemon "$@"
