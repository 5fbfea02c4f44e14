#!/usr/bin/env bash
# LeakSanitizer (with ASan+UBSan) clean on `hypura run`: resident, dense-FFN-streaming,
# expert-streaming (direct I/O and --io pagecache), interactive, and the refusals
# (missing file, truncated model, budget too small), plus the mkmodel runs that make
# the models. Each process must exit through the leak check with nothing reported.
# Skips (77) in a build without -DHYPURA_SANITIZE=ON.
set -uo pipefail
HY_BIN=$1 WORK=$2/leak_run
. "$(dirname "$0")/leak_lib.sh"
leak_require_sanitized "${3:-}"
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data
H=$HY_BIN/hypura
fail=0
leak_start "$WORK"

mk() { "$HY_BIN/hypura-mkmodel" --dim 256 --layers 4 --ff 512 --type q8_0 --seed 5 --quiet "$@" >/dev/null ||
         { echo "FAIL: hypura-mkmodel $*"; fail=1; }; leak_expect; }
mk -o "$WORK/dense.gguf"
mk -o "$WORK/moe.gguf" --experts 8 --top-k 2 --skew 1
leak_check mkmodel || fail=1

# name, expected mode in the plan (or ""), run arguments...; must exit 0 and print text
gen() {
  local name=$1 want=$2; shift 2
  local out rc
  out=$("$H" run "$@" -p "The quick brown fox" -n 8 --temp 0 -c 256 -t 2 --plan 2>"$WORK/$name.err"); rc=$?
  leak_expect
  if [[ $rc -ne 0 || -z "$out" ]]; then echo "FAIL $name: exit $rc, text [$out]"; tail -5 "$WORK/$name.err"; fail=1; return; fi
  if [[ -n $want ]] && ! grep -q "$want" "$WORK/$name.err"; then echo "FAIL $name: the plan is not $want"; fail=1; return; fi
  echo "$name: [$out]"
}
gen resident full-resident "$WORK/dense.gguf"
gen dense_stream dense-FFN-streaming "$WORK/dense.gguf" --mode stream
gen expert_stream expert-streaming "$WORK/moe.gguf" --mode stream
gen expert_pagecache expert-streaming "$WORK/moe.gguf" --mode stream --io pagecache
leak_check run || fail=1

# interactive: two turns from stdin, then EOF
out=$(printf 'Hello there\nAnd again\n' | "$H" run "$WORK/dense.gguf" -i -n 6 --temp 0 -c 512 -t 2 2>"$WORK/interactive.err"); rc=$?
leak_expect
[[ $rc -eq 0 && -n "$out" ]] || { echo "FAIL interactive: exit $rc"; tail -5 "$WORK/interactive.err"; fail=1; }
leak_check run_interactive || fail=1

# refusals: non-zero exit, and still nothing leaked on the way out
head -c 4096 "$WORK/dense.gguf" > "$WORK/trunc.gguf"
refuse() { # name, expected message, run arguments...
  local name=$1 want=$2; shift 2
  local err rc
  err=$("$H" run "$@" -p hi 2>&1 >/dev/null); rc=$?
  leak_expect
  if [[ $rc -eq 0 || "$err" != *"$want"* ]]; then echo "FAIL refuse $name: exit $rc: $err"; fail=1; fi
}
refuse missing "No such file" "$WORK/nope.gguf"
refuse truncated "trunc" "$WORK/trunc.gguf"
refuse budget "minimum is" "$WORK/dense.gguf" --memory-budget 1M
refuse ctx "training context" "$WORK/dense.gguf" -c 100000
leak_check run_refusals || fail=1
exit $fail
