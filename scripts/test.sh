#!/usr/bin/env bash
# The README's test command (after setup): the whole ctest suite, then the same suite
# again on an ASan+UBSan build with LeakSanitizer on (scripts/test-sanitize.sh, into
# ./build-asan). HYPURA_SANITIZE_TESTS=0 skips the second pass (CI keeps it). Extra
# arguments go to ctest in both passes (e.g. -R server_). Fails if either pass fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${HYPURA_BUILD_DIR:-$ROOT/build}"
rc=0
t0=$SECONDS
(cd "$BUILD" && ctest --output-on-failure -j "${CTEST_JOBS:-2}" "$@") || rc=$?
printf '[test] suite: exit %d in %d s\n' "$rc" $((SECONDS - t0)) >&2
t1=$SECONDS
"$ROOT/scripts/test-sanitize.sh" "$@" || rc=1
printf '[test] sanitizer pass done in %d s; total %d s\n' $((SECONDS - t1)) $((SECONDS - t0)) >&2
exit "$rc"
