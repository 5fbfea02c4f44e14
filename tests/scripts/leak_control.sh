#!/usr/bin/env bash
# The leak tests can fail: leak_lib.sh's check passes a clean process and fails one
# that leaks, one with undefined behaviour (UBSan) and one that skips the exit-time
# leak check (_exit), with the same
# options and suppressions as leak_run.sh and leak_serve.sh.
# Skips (77) in a build without -DHYPURA_SANITIZE=ON.
set -uo pipefail
CONTROL=$1 WORK=$2/leak_control
. "$(dirname "$0")/leak_lib.sh"
leak_require_sanitized "${3:-}"
mkdir -p "$WORK"
leak_start "$WORK"
fail=0
"$CONTROL" clean; leak_expect
leak_check clean || { echo "FAIL: a clean process did not pass"; fail=1; }
# (leak_check is run in this shell, its output kept in a file: it resets the count)
"$CONTROL" leak; echo "leak_control leak: exit $?"; leak_expect
if leak_check leak >"$WORK/leak.out"; then cat "$WORK/leak.out"; echo "FAIL: a leak passed"; fail=1
else grep -E 'Direct leak|leak_control.c|^FAIL' "$WORK/leak.out"
  grep -q 'in main .*leak_control.c' "$WORK/leak.out" || { echo "FAIL: the report does not name the leaking line"; fail=1; }
fi
# (gcc's ASan+UBSan runtimes write UBSan reports to stderr whatever log_path says:
#  scripts/test-sanitize.sh builds with clang, where they go to the report files)
if [[ "${4:-}" == Clang ]]; then
  "$CONTROL" ubsan; echo "leak_control ubsan: exit $?"; leak_expect
  if leak_check ubsan >"$WORK/ubsan.out"; then cat "$WORK/ubsan.out"; echo "FAIL: undefined behaviour passed"; fail=1
  else grep -E 'runtime error|^FAIL' "$WORK/ubsan.out"
    grep -q 'leak_control.c:[0-9]*:[0-9]*: runtime error: signed integer overflow' "$WORK/ubsan.out" ||
      { echo "FAIL: no UBSan report naming the line"; fail=1; }
  fi
else
  echo "note: built with ${4:-an unknown compiler}, not clang: UBSan report collection not checked"
fi
"$CONTROL" noexit; leak_expect
if leak_check noexit >"$WORK/noexit.out"; then cat "$WORK/noexit.out"; echo "FAIL: a process that skipped the leak check passed"; fail=1
else cat "$WORK/noexit.out"; grep -q '0 of 1 processes' "$WORK/noexit.out" || { echo "FAIL: wrong count"; fail=1; }; fi
((fail == 0)) && echo "ok: the check passes a clean process, fails a leak, undefined behaviour and an unchecked exit"
exit $fail
