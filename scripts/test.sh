#!/usr/bin/env bash
# The README's test command (after setup): the whole ctest suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${HYPURA_BUILD_DIR:-$ROOT/build}"
cd "$BUILD"
ctest --output-on-failure -j "${CTEST_JOBS:-2}" "$@"
