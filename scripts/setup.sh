#!/usr/bin/env bash
# Installs everything modeld needs on a fresh Debian 12 machine. Idempotent:
# a second run installs nothing and reuses the verified llama.cpp tree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LLAMA_DIR="$ROOT/third_party/llama.cpp"
LLAMA_NPM_PACKAGE="node-llama-cpp@3.22.1"
LLAMA_COMMIT="de3ff815ea7d559ee917f063901b8986f038abc6"

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. Debian packages. Only calls apt when something is missing.
APT_PACKAGES=(g++ cmake make git ca-certificates libgtest-dev libgmock-dev libssl-dev libutf8proc-dev libxxhash-dev python3 curl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with a nodejs build that is not Debian's (and then ships npm itself).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. llama.cpp at the pinned commit, from the npm package's git bundle.
verify_llama() {
  [ -d "$1/.git" ] && [ "$(git -C "$1" rev-parse HEAD 2>/dev/null)" = "$LLAMA_COMMIT" ] &&
    [ -z "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]
}

if verify_llama "$LLAMA_DIR"; then
  log "llama.cpp $LLAMA_COMMIT present and verified"
else
  if [ -e "$LLAMA_DIR" ]; then
    log "llama.cpp tree at $LLAMA_DIR is not the pinned commit (or modified); replacing it"
    rm -rf "$LLAMA_DIR"
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "fetching $LLAMA_NPM_PACKAGE from the npm registry"
  (cd "$tmp" && npm pack --silent "$LLAMA_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/node-llama-cpp-*.tgz -C "$tmp" package/llama/gitRelease.bundle
  git clone --quiet "$tmp/package/llama/gitRelease.bundle" "$tmp/llama.cpp" 2>/dev/null
  git -C "$tmp/llama.cpp" -c advice.detachedHead=false checkout --quiet "$LLAMA_COMMIT"
  if ! verify_llama "$tmp/llama.cpp"; then
    log "ERROR: the bundle's HEAD is $(git -C "$tmp/llama.cpp" rev-parse HEAD), expected $LLAMA_COMMIT; refusing to build"
    exit 1
  fi
  mkdir -p "$(dirname "$LLAMA_DIR")"
  mv "$tmp/llama.cpp" "$LLAMA_DIR"
  log "llama.cpp $LLAMA_COMMIT verified at $LLAMA_DIR"
fi

# 3. The official openai npm client, for the OpenAI API tests (tests/openai), at the version its
#    package-lock.json pins. Only calls npm when it is missing or another version.
OPENAI_TESTS="$ROOT/tests/openai"
want="$(node -e "console.log(require('$OPENAI_TESTS/package-lock.json').packages['node_modules/openai'].version)")"
have="$(node -e "try{console.log(require('$OPENAI_TESTS/node_modules/openai/package.json').version)}catch(e){}")"
if [ "$want" != "$have" ]; then
  log "installing the openai npm client $want for tests/openai"
  (cd "$OPENAI_TESTS" && npm ci --silent --no-audit --no-fund)
fi
