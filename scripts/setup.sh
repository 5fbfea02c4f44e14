#!/usr/bin/env bash
# Installs everything hypura needs on a Debian 12 machine and builds it.
#  - Debian packages (only when missing; needs root for apt-get)
#  - the pinned llama.cpp (commit de3ff815, as carried by the npm package
#    node-llama-cpp@3.22.1 in llama/gitRelease.bundle), built once and cached
#    under ${XDG_CACHE_HOME:-~/.cache}/hypura/deps; LLAMA_CPP_DIR=/path uses an
#    existing checkout instead
#  - hypura itself into ./build
# Idempotent: a second run only checks and rebuilds what changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIN_COMMIT=de3ff815
NPM_PKG=node-llama-cpp@3.22.1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hypura/deps"
JOBS="${JOBS:-$(nproc)}"

log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
check_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$1"); }
for p in build-essential cmake git pkg-config liburing-dev libjansson-dev libmicrohttpd-dev \
         gnuplot-nox nodejs npm curl ca-certificates clang libclang-rt-14-dev; do
  check_pkg "$p"
done
# nodejs/npm may come from outside Debian (the base image ships its own): accept any working npm
if command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${need_pkgs[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done
  need_pkgs=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  if [[ $(id -u) -ne 0 ]]; then log "not root: install them by hand: apt-get install ${need_pkgs[*]}"; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- the pinned llama.cpp -------------------------------------------------
if [[ -n "${LLAMA_CPP_DIR:-}" ]]; then
  SRC="$LLAMA_CPP_DIR"
  [[ -f "$SRC/include/llama.h" ]] || { log "LLAMA_CPP_DIR=$SRC has no include/llama.h"; exit 1; }
else
  SRC="$CACHE/llama.cpp-$PIN_COMMIT"
  if [[ ! -f "$SRC/.hypura-verified" ]]; then
    log "fetching $NPM_PKG (carries llama.cpp $PIN_COMMIT)"
    mkdir -p "$CACHE"
    work="$(mktemp -d)"
    (cd "$work" && npm pack --silent "$NPM_PKG" >/dev/null && tar xzf node-llama-cpp-*.tgz)
    bundle="$work/package/llama/gitRelease.bundle"
    [[ -f "$bundle" ]] || { log "$NPM_PKG has no llama/gitRelease.bundle"; exit 1; }
    git bundle verify "$bundle" >/dev/null 2>&1 || { log "bundle failed verification"; exit 1; }
    rm -rf "$SRC.tmp"
    git clone -q "$bundle" "$SRC.tmp"
    got="$(git -C "$SRC.tmp" rev-parse HEAD)"
    [[ "$got" == "$PIN_COMMIT"* ]] || { log "bundle is at $got, expected $PIN_COMMIT"; exit 1; }
    rm -rf "$SRC"; mv "$SRC.tmp" "$SRC"; rm -rf "$work"
    touch "$SRC/.hypura-verified"
  fi
fi

LLAMA_BUILD="${LLAMA_BUILD_DIR:-$SRC/build-cpu}"
# The configuration is recorded in the marker: a build made with other flags (an older
# set-up without ggml's RPC backend, say) is reconfigured and rebuilt in place, once.
# GGML_RPC=ON gives libggml the RPC backend (--rpc) and builds ggml-rpc-server (the
# remote side of the tests, the demo and the benchmark).
llama_flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON
             -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
             -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=ON -DGGML_RPC=ON)
if [[ "${HYPURA_CUDA:-0}" == 1 ]]; then llama_flags+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90}"); fi
llama_targets=(llama llama-bench llama-completion ggml-rpc-server)
llama_config="flags: ${llama_flags[*]} targets: ${llama_targets[*]}"
llama_built() { [[ -f "$LLAMA_BUILD/.hypura-built" && "$(cat "$LLAMA_BUILD/.hypura-built")" == "$llama_config" ]]; }
if ! llama_built && command -v flock >/dev/null 2>&1; then
  # two set-ups at once (several build trees on one cache) must not build one tree together
  mkdir -p "$(dirname "$LLAMA_BUILD")"
  exec 9>"$LLAMA_BUILD.lock"
  flock -n 9 || { log "waiting for another set-up building llama.cpp in $LLAMA_BUILD"; flock 9; }
fi
if ! llama_built; then
  if [[ -f "$LLAMA_BUILD/.hypura-built" ]]; then
    log "llama.cpp in $LLAMA_BUILD was built with another configuration: rebuilding it ($llama_config)"
  fi
  log "building llama.cpp (CPU) in $LLAMA_BUILD with $JOBS jobs; this takes a while once"
  mkdir -p "$LLAMA_BUILD"
  blog="$LLAMA_BUILD/hypura-build.log"
  if ! { cmake -S "$SRC" -B "$LLAMA_BUILD" "${llama_flags[@]}" &&
         cmake --build "$LLAMA_BUILD" -j "$JOBS" --target "${llama_targets[@]}"; } >"$blog" 2>&1; then
    tail -30 "$blog" >&2; log "building llama.cpp failed: see $blog"; exit 1
  fi
  printf '%s' "$llama_config" >"$LLAMA_BUILD/.hypura-built"
fi

# --- the npm clients the server tests drive (ollama, openai; exact versions in tests/node) ---
NODE_DIR="$ROOT/tests/node"
if [[ -f "$NODE_DIR/package-lock.json" ]] &&
   [[ ! -d "$NODE_DIR/node_modules" || "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]]; then
  log "installing the server tests' npm clients (npm ci in tests/node)"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund >/dev/null
fi

# --- hypura -----------------------------------------------------------------
BUILD="${HYPURA_BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE="${HYPURA_BUILD_TYPE:-RelWithDebInfo}" \
  -DLLAMA_CPP_DIR="$SRC" -DLLAMA_BUILD_DIR="$LLAMA_BUILD" ${HYPURA_CMAKE_ARGS:-} >/dev/null
if ! cmake --build "$BUILD" -j "$JOBS" >"$BUILD/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD/build.log" | head -40 >&2; log "build failed: see $BUILD/build.log"; exit 1
fi
log "ready: $BUILD/bin/hypura (llama.cpp $PIN_COMMIT at $SRC)"
