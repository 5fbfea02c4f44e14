#!/usr/bin/env bash
# The VRAM expert cache over the NVMe tier (--gpu-xcache with a memory budget below the
# model: expert-streaming's plan, the served experts read with direct I/O into a RAM expert
# cache of pinned slots and copied from there; src/stream/hy_vxc.c) never changes the math:
# with the cache on the CPU device (HYPURA_XCACHE_CPU=1), every step's logits equal the
# resident run's, for the smallest VRAM cache and a larger one, at the least memory budget
# expert-streaming takes (RAM cache smaller than the experts: misses read from the file) and a
# larger one; the prompt goes through the whole-layer area, decode through the slots.
# Mixtral-like, qwen3moe and gpt-oss (per-expert biases: add_id), as vxc_identity.sh.
# Also: a read error of an expert aborts the run with the error (no crash, no output of
# partial data). The GPU run of the same check is bench/gpu/xcache_check.sh.
#   vxc_nvme_identity.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/vxc_nvme_identity
source "$(dirname "$0")/vxc_lib.sh"
# --mode stream: these tiny models fit at the least budget that streams experts (the fixed buffers dominate)
est() { "$HY_BIN/hypura" estimate "$@" -c 256 --mode stream 2>&1; }
for m in mixtral qwen3moe gpt-oss; do
  f=$WORK/$m.gguf
  run "$f" -p "$p" -n 20 --mode resident --dump-logits "$WORK/ref.bin" >/dev/null || { echo "FAIL $m: resident run"; fail=1; continue; }
  # the least memory budget: the refusal names it
  min=$(est "$f" --memory-budget 1M | sed -n 's/.*the minimum is \([0-9.]*\) MiB.*/\1/p')
  [[ -n $min ]] || { echo "FAIL $m: no minimum budget named"; fail=1; continue; }
  HYPURA_XCACHE_CPU=1 run "$f" -p x -n 1 --mode stream --memory-budget "$(python3 -c "print(round($min + 0.1, 1))")M" --gpu-xcache 1K >/dev/null
  need=$(sed -n 's/.*holds fewer than [0-9]* experts per layer; at least \([0-9.]*\) MiB.*/\1/p' "$WORK/last.err")
  [[ -n $need ]] || { echo "FAIL $m: a 1 KiB cache was not refused with the size it needs: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
  for mb in "$(python3 -c "print(round($min + 0.1, 1))")M" "$(python3 -c "print(round($min + 3, 1))")M"; do
    plan=$(est "$f" --memory-budget "$mb" | head -1)
    grep -q expert-streaming <<<"$plan" || { echo "FAIL $m --memory-budget $mb: not expert-streaming: $plan"; fail=1; continue; }
    for size in "$(python3 -c "print(round($need + 0.05, 1))")M" "$(python3 -c "print(round($need * 2, 1))")M"; do
      HYPURA_XCACHE_CPU=1 run "$f" -p "$p" -n 20 --mode stream --memory-budget "$mb" --gpu-xcache $size --dump-logits "$WORK/x.bin" >/dev/null ||
        { echo "FAIL $m --memory-budget $mb --gpu-xcache $size: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
      line=$(grep -o 'VRAM expert cache: [0-9]* layers x.*' "$WORK/last.err")
      under=$(grep -o 'under it: RAM expert cache.*' "$WORK/last.err")
      slots=$(sed -n 's/.*passes: \([0-9]*\) from slots, \([0-9]*\) batched.*/\1 \2/p' <<<"$line")
      ram=$(sed -n 's/.* \([0-9.]*\)% of the copies served from it.*/\1/p' <<<"$under")
      if ! cmp -s "$WORK/ref.bin" "$WORK/x.bin"; then echo "DIFFER $m --memory-budget $mb --gpu-xcache $size [$line] [$under]"; fail=1
      elif [[ -z $under || -z $ram ]]; then echo "FAIL $m --memory-budget $mb --gpu-xcache $size: no RAM/NVMe tier under the cache [$line]"; fail=1
      elif [[ ${slots% *} -eq 0 || ${slots#* } -eq 0 ]]; then echo "FAIL $m --gpu-xcache $size: slots and the whole-layer area were not both used [$line]"; fail=1
      elif grep -q "read 0 B from NVMe" <<<"$under"; then echo "FAIL $m --memory-budget $mb --gpu-xcache $size: nothing read from NVMe [$under]"; fail=1
      else echo "ok $m --memory-budget $mb --gpu-xcache $size: logits identical [$line] [$under]"; fi
    done
  done
done
# with routing statistics kept, a run fills the caches ahead at load (the RAM expert cache from the
# file, the VRAM windows from it; or the windows from pinned RAM when the experts fit there): the
# next run's logits stay the resident run's
for m in qwen3moe gpt-oss; do
  f=$WORK/$m.gguf
  run "$f" -p "$p" -n 20 --mode resident --dump-logits "$WORK/ref.bin" >/dev/null || { echo "FAIL $m: resident run"; fail=1; continue; }
  min=$(est "$f" --memory-budget 1M | sed -n 's/.*the minimum is \([0-9.]*\) MiB.*/\1/p')
  mb=$(python3 -c "print(round($min + 0.1, 1))")M
  export XDG_DATA_HOME=$WORK/data-$m
  for mode in nvme ram; do
    args=(--mode stream --memory-budget "$mb"); [[ $mode == ram ]] && args=()
    for r in 1 2; do
      env -u HYPURA_NO_PERSIST_STATS HYPURA_XCACHE_CPU=1 "$HY_BIN/hypura" run "$f" -p "$p" -n 20 --temp 0 -c 256 -t 2 --no-repack \
        "${args[@]}" --gpu-xcache 12M --dump-logits "$WORK/x.bin" >/dev/null 2>"$WORK/last.err" ||
        { echo "FAIL $m $mode run $r with statistics: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
      filled=$(grep -o 'filled ahead.*' "$WORK/last.err")
      if ! cmp -s "$WORK/ref.bin" "$WORK/x.bin"; then echo "DIFFER $m $mode run $r with statistics [$filled]"; fail=1
      elif [[ $r -eq 2 && -z $filled ]]; then echo "FAIL $m $mode: the second run filled nothing ahead"; fail=1
      elif [[ $r -eq 2 ]]; then echo "ok $m $mode: logits identical after filling ahead [$filled]"; fi
    done
  done
  export XDG_DATA_HOME=$WORK/data
done
# a read error of an expert slice (an injected EIO over the last expert tensor) stops the run with it
f=$WORK/qwen3moe.gguf
off=$("$HY_BIN/hypura" inspect "$f" --json --tensors | python3 -c "
import json, sys
t = [x for x in json.load(sys.stdin)['tensors'] if 'exps' in x['name']][-1]
print(t['offset'], t['size'])")
min=$(est "$f" --memory-budget 1M | sed -n 's/.*the minimum is \([0-9.]*\) MiB.*/\1/p')
HYPURA_IO_FAULT="eio@${off% *}+${off#* }" HYPURA_XCACHE_CPU=1 run "$f" -p "$p" -n 4 --mode stream --memory-budget "$(python3 -c "print(round($min + 0.1, 1))")M" \
  --gpu-xcache 16M >/dev/null
rc=$?
if [[ $rc -eq 1 ]] && grep -q "EIO" "$WORK/last.err"; then echo "ok an expert's read error ends the run: $(grep -m1 EIO "$WORK/last.err")"
else echo "FAIL an expert's read error (rc $rc): $(tail -2 "$WORK/last.err")"; fail=1; fi
exit $fail
