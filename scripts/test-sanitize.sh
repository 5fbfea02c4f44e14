#!/usr/bin/env bash
# The test suite again, on hypura built with AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer on). scripts/test.sh runs it after the normal suite, so `make test` and CI
# include it; HYPURA_SANITIZE_TESTS=0 skips it (local runs).
#
# What is instrumented: hypura's own code (the CLI, the server, every module, mkmodel and
# the unit-test binaries), compiled by clang (below why) at -O2 -g, UBSan not recoverable.
# libllama/ggml come from the pinned, uninstrumented build: ASan still checks every
# malloc/free they make and LeakSanitizer still sees their leaks; tests/sanitize/lsan.supp
# is where any of theirs would be named one by one (third-party only; none is needed now).
#
# Every report fails the pass, including those from processes whose exit status a test
# ignores or whose stderr it throws away: each process writes its reports to its own
# file under $BUILD/sanitize-reports (log_path), and this script fails if any is left.
#
# Left out here (not of hypura's code paths, of the sanitizer's cost): the two tests that
# run `hypura run` inside a memory cgroup of 320/448 MiB and assert its peak usage
# (stream_cgroup_budget, expert_cgroup_budget). ASan's shadow memory and its 256 MiB
# free-quarantine are charged to the group, so the cap measures ASan, not hypura (the dense
# one is OOM-killed). They run in the normal pass.
#
# Environment: HYPURA_SANITIZE_TESTS=0 skip; HYPURA_ASAN_BUILD_DIR (default ./build-asan);
# HYPURA_SANITIZE_CC (the compiler; default clang-14 or clang, else cc);
# CTEST_JOBS (default 2); JOBS (build jobs, default nproc); LLAMA_CPP_DIR / LLAMA_BUILD_DIR
# as for scripts/setup.sh. Extra arguments go to ctest (e.g. -R server_).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[sanitize] %s\n' "$*" >&2; }

if [[ "${HYPURA_SANITIZE_TESTS:-1}" == 0 ]]; then
  log "skipped (HYPURA_SANITIZE_TESTS=0)"
  exit 0
fi

# the llama.cpp the normal build uses (scripts/setup.sh configured it), else setup.sh's defaults
cached() { sed -n "s|^$1:PATH=||p" "${HYPURA_BUILD_DIR:-$ROOT/build}/CMakeCache.txt" 2>/dev/null; }
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hypura/deps"
SRC="${LLAMA_CPP_DIR:-$(cached LLAMA_CPP_DIR)}"; SRC="${SRC:-$CACHE/llama.cpp-de3ff815}"
LLAMA_BUILD="${LLAMA_BUILD_DIR:-$(cached LLAMA_BUILD_DIR)}"; LLAMA_BUILD="${LLAMA_BUILD:-$SRC/build-cpu}"
[[ -f "$SRC/include/llama.h" && -f "$LLAMA_BUILD/.hypura-built" ]] ||
  { log "no built llama.cpp at $SRC ($LLAMA_BUILD): run scripts/setup.sh first"; exit 1; }

# clang (setup.sh installs clang and libclang-rt-14-dev): with gcc, whose ASan and UBSan
# are two runtimes, UBSan reports go to stderr whatever log_path says, so those of a
# process whose stderr a test discards would be missed. gcc is the fallback, said so.
CC_SAN="${HYPURA_SANITIZE_CC:-}"
if [[ -z "$CC_SAN" ]]; then
  for c in clang-14 clang; do
    command -v "$c" >/dev/null 2>&1 && echo 'int main(void){return 0;}' |
      "$c" -x c -fsanitize=address,undefined - -o /dev/null >/dev/null 2>&1 && { CC_SAN=$c; break; }
  done
fi
if [[ -z "$CC_SAN" ]]; then
  CC_SAN=cc
  log "warning: no clang with sanitizer runtimes (apt-get install clang libclang-rt-14-dev): using gcc;"
  log "  UBSan reports from processes whose stderr a test discards are not collected"
fi
BUILD="${HYPURA_ASAN_BUILD_DIR:-$ROOT/build-asan}"
# a build directory made with another compiler cannot be reconfigured: start it afresh
if [[ -f "$BUILD/CMakeCache.txt" ]] &&
   [[ "$(sed -n 's|^CMAKE_C_COMPILER:[A-Z]*=||p' "$BUILD/CMakeCache.txt")" != "$(command -v "$CC_SAN")" ]]; then
  rm -rf "$BUILD"
fi
t0=$SECONDS
log "building hypura with ASan+UBSan ($CC_SAN) in $BUILD"
CC="$CC_SAN" cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHYPURA_SANITIZE=ON \
  -DCMAKE_C_FLAGS="-fno-sanitize-recover=all -Wno-unknown-warning-option" \
  -DLLAMA_CPP_DIR="$SRC" -DLLAMA_BUILD_DIR="$LLAMA_BUILD" >/dev/null
if ! cmake --build "$BUILD" -j "${JOBS:-$(nproc)}" >"$BUILD/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD/build.log" | head -40 >&2; log "build failed: see $BUILD/build.log"; exit 1
fi
log "built in $((SECONDS - t0)) s"

REPORTS="$BUILD/sanitize-reports"
rm -rf "$REPORTS"; mkdir -p "$REPORTS"
SUPP="$ROOT/tests/sanitize/lsan.supp"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:log_path=$REPORTS/asan${ASAN_OPTIONS_EXTRA:+:$ASAN_OPTIONS_EXTRA}"
export LSAN_OPTIONS="suppressions=$SUPP:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan"

# the collection works: a leak and (clang) undefined behaviour in the control program
# leave report files (tests/sanitize/leak_control.c; the leak_control test checks more)
"$BUILD/bin/leak_control" leak 2>/dev/null || true
[[ "$CC_SAN" == cc ]] || "$BUILD/bin/leak_control" ubsan 2>/dev/null || true
shopt -s nullglob
got=("$REPORTS"/*)
want=2; [[ "$CC_SAN" == cc ]] && want=1
if ((${#got[@]} != want)) || ! grep -q 'Direct leak' "${got[@]}"; then
  log "FAIL: the control program's reports did not reach $REPORTS (${#got[@]} files)"; exit 1
fi
rm -f "${got[@]}"
shopt -u nullglob

t1=$SECONDS
rc=0
(cd "$BUILD" && ctest --output-on-failure -j "${CTEST_JOBS:-2}" \
   -E '^(stream_cgroup_budget|expert_cgroup_budget)$' "$@") || rc=$?
log "ctest under ASan+UBSan: exit $rc in $((SECONDS - t1)) s"

shopt -s nullglob
reports=("$REPORTS"/*)
if ((${#reports[@]})); then
  for f in "${reports[@]}"; do
    log "report $f:"; cat "$f" >&2
  done
  log "FAIL: ${#reports[@]} sanitizer report(s) (above)"
  exit 1
fi
((rc == 0)) || exit "$rc"
log "clean: no ASan/UBSan/LeakSanitizer report (total $((SECONDS - t0)) s)"
