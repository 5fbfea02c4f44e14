#!/usr/bin/env bash
# Packs what bench/gpu/device_setup.sh needs on a machine that cannot fetch
# anything into .device/ (gitignored; carry it with the `device` tool): a trimmed
# source tree of the pinned llama.cpp (no docs, models, tests, other GPU backends),
# the tokenizer hypura-mkmodel uses, and Debian 12 .debs of jansson, liburing and
# pkgconf. Run here, after scripts/setup.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="${LLAMA_CPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hypura/deps/llama.cpp-de3ff815}"
OUT="$ROOT/.device"
mkdir -p "$OUT"
grep -qx "/.device/" "$ROOT/.git/info/exclude" 2>/dev/null || echo "/.device/" >>"$ROOT/.git/info/exclude"
ex=(); for d in build-cpu .git docs models tools/ui benches media gguf-py tests skills conversion \
                ggml/src/ggml-vulkan ggml/src/ggml-sycl ggml/src/ggml-opencl ggml/src/ggml-hexagon \
                ggml/src/ggml-metal ggml/src/ggml-et; do ex+=("--exclude=./$d"); done
tar -C "$SRC" "${ex[@]}" -czf "$OUT/llama-src.tgz" .
cp "$SRC/models/ggml-vocab-llama-spm.gguf" "$OUT/"
(cd "$OUT" && apt-get download libjansson-dev libjansson4 liburing-dev liburing2 pkgconf pkgconf-bin libpkgconf3 2>/dev/null)
du -sh "$OUT"
