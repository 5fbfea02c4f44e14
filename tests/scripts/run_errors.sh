#!/usr/bin/env bash
# Clear one-line errors and non-zero exits for bad input to `hypura run`.
set -uo pipefail
HY_BIN=$1 WORK=$2/run_errors
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache
H="$HY_BIN/hypura"
fail=0
expect() { # name, expected-substring, command...
  local name=$1 want=$2; shift 2
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [[ $rc -ne 0 && "$out" == *"$want"* ]]; then echo "ok $name: $out" | head -1
  else echo "FAIL $name (exit $rc): $out"; fail=1; fi
}
m=$WORK/m.gguf
"$HY_BIN/hypura-mkmodel" -o "$m" --dim 256 --layers 2 --ff 512 --quiet >/dev/null
printf 'not a gguf at all' > "$WORK/junk.gguf"
head -c 1000 "$m" > "$WORK/trunc.gguf"
expect missing-file "No such file" "$H" run "$WORK/nope.gguf" -p hi
expect not-gguf "GGUF" "$H" run "$WORK/junk.gguf" -p hi
expect truncated "trunc" "$H" run "$WORK/trunc.gguf" -p hi
expect ctx-too-large "training context" "$H" run "$m" -p hi -c 100000
expect no-prompt "--prompt" "$H" run "$m"
expect bad-number "invalid value" "$H" run "$m" -p hi -n abc
expect bad-budget "not a size" "$H" run "$m" -p hi --memory-budget lots
expect tiny-budget "minimum is" "$H" run "$m" -p hi --memory-budget 1M
expect directory "directory" "$H" run "$WORK" -p hi
# a GPU budget where there is no GPU: run refuses it; estimate plans it as a what-if
if "$H" profile --quick 2>/dev/null | grep -q "^GPU 0"; then
  echo "skip gpu-budget-without-gpu: this machine has a GPU"
else
  expect gpu-budget-without-gpu "has no GPU" "$H" run "$m" -p hi --gpu-budget 100M
  plan=$("$H" estimate "$m" --gpu-budget 100M 2>&1); rc=$?
  if [[ $rc -eq 0 && $plan == *"GPU: none here (what-if)"* && $plan =~ tiers:\ GPU\ [1-9] ]]; then
    echo "ok estimate-gpu-what-if: $(grep 'tiers:' <<<"$plan")"
  else echo "FAIL estimate-gpu-what-if (exit $rc): $plan"; fail=1; fi
  # precedence: the flag over HYPURA_GPU_BUDGET, and "none" (or 0) turns the GPU tier off in either
  gpu_tier() { "$H" estimate "$m" "$@" 2>&1 | sed -n 's/.*tiers: GPU \([0-9.]* [KMG]*i*B\).*/\1/p'; }
  got="$(HYPURA_GPU_BUDGET=100M gpu_tier) / $(HYPURA_GPU_BUDGET=none gpu_tier) / $(HYPURA_GPU_BUDGET=100M gpu_tier --gpu-budget none) / $(HYPURA_GPU_BUDGET=none gpu_tier --gpu-budget 100M)"
  if [[ $got =~ ^[1-9][0-9.]*\ [KM]iB\ /\ 0\ B\ /\ 0\ B\ /\ [1-9] ]]; then echo "ok gpu-budget-precedence: $got"
  else echo "FAIL gpu-budget-precedence: env 100M / env none / env 100M + flag none / env none + flag 100M gave $got"; fail=1; fi
fi
exit $fail
