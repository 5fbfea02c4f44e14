#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz_gguf, fuzz_plan, fuzz_api) into OUTDIR with
# clang -fsanitize=fuzzer,address,undefined (UB aborts, so it counts as a crash).
#
#   tests/fuzz/build.sh OUTDIR [LLAMA_CPP_DIR [LLAMA_BUILD_DIR]]
#
# The llama.cpp directories default to $LLAMA_CPP_DIR / $LLAMA_BUILD_DIR, then to
# the pinned checkout scripts/setup.sh makes. Exit 77 (ctest: skipped) when clang
# or its libFuzzer runtime is missing (Debian: apt-get install clang libclang-rt-14-dev).
# A target is rebuilt only when a source is newer than it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: build.sh OUTDIR [LLAMA_CPP_DIR [LLAMA_BUILD_DIR]]}"
L="${2:-${LLAMA_CPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hypura/deps/llama.cpp-de3ff815}}"
LB="${3:-${LLAMA_BUILD_DIR:-$L/build-cpu}}"

CC=""
for c in "${FUZZ_CC:-}" clang-14 clang; do
  [[ -n "$c" ]] && command -v "$c" >/dev/null 2>&1 && { CC="$c"; break; }
done
if [[ -z "$CC" ]]; then
  echo "fuzz build: no clang found (apt-get install clang libclang-rt-14-dev); skipped"
  exit 77
fi
mkdir -p "$OUT"
probe="$OUT/.probe"
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe.c"
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" >"$probe.log" 2>&1; then
  cat "$probe.log"
  echo "fuzz build: $CC cannot link libFuzzer (Debian: libclang-rt-14-dev); skipped"
  exit 77
fi
rm -f "$probe" "$probe.c" "$probe.log"

[[ -f "$L/include/llama.h" ]] || { echo "fuzz build: no llama.cpp checkout at $L (set LLAMA_CPP_DIR)"; exit 1; }
GGML_LIB=""
for d in "$LB/bin" "$LB/ggml/src"; do [[ -e "$d/libggml-base.so" ]] && { GGML_LIB="$d"; break; }; done
[[ -n "$GGML_LIB" ]] || { echo "fuzz build: no libggml-base.so under $LB"; exit 1; }

CFLAGS=(-std=c11 -g -O1 -D_GNU_SOURCE -Wall -Wextra -Werror
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
        -I"$ROOT/src" -I"$ROOT/include" -I"$L/include" -I"$L/ggml/include")
GGML=(-L"$GGML_LIB" -Wl,-rpath,"$GGML_LIB" -lggml-base)
JANSSON=($(pkg-config --libs jansson 2>/dev/null || echo -ljansson))

build() { # name sources... -- libs...
  local name="$1"; shift
  local srcs=() libs=()
  while (($#)) && [[ "$1" != -- ]]; do srcs+=("$ROOT/$1"); shift; done
  (($#)) && shift
  libs=("$@")
  local bin="$OUT/$name" stale=0
  if [[ ! -x "$bin" ]]; then stale=1
  else
    for s in "${srcs[@]}" "$ROOT"/src/*/*.h "$ROOT"/include/*.h "${BASH_SOURCE[0]}"; do
      [[ "$s" -nt "$bin" ]] && { stale=1; break; }
    done
  fi
  if ((stale)); then
    echo "fuzz build: $name ($CC)"
    "$CC" "${CFLAGS[@]}" "${srcs[@]}" "${libs[@]}" -lm -o "$bin.tmp"
    mv "$bin.tmp" "$bin"
  else
    echo "fuzz build: $name is up to date"
  fi
}

build fuzz_gguf tests/fuzz/fuzz_gguf.c src/gguf/hy_gguf.c src/util/hy_util.c src/cli/cmd_inspect.c -- "${GGML[@]}" "${JANSSON[@]}"
build fuzz_plan tests/fuzz/fuzz_plan.c src/plan/hy_plan.c src/gguf/hy_gguf.c src/util/hy_util.c -- "${GGML[@]}"
build fuzz_api tests/fuzz/fuzz_api.c src/server/hy_api_parse.c src/util/hy_util.c -- "${JANSSON[@]}"
