#!/usr/bin/env bash
# The VRAM expert cache (--gpu-xcache, src/stream/hy_vxc.c) never changes the math:
# with the cache's device arenas on the CPU device (HYPURA_XCACHE_CPU=1: the same
# slot windows, id remapping and whole-layer area as on a GPU, where CI has none),
# every generated step's logits equal the resident run's (--no-repack: same
# kernels), for the smallest cache (top-k slots per layer: evicts all the time)
# and a larger one, with a prompt served through the whole-layer area and decode
# through the slots; Mixtral-like, qwen3moe (128-way-style fine-grained, Q4_K) and
# gpt-oss (MXFP4 experts with per-expert biases: add_id). Also: a cache too small
# is refused with the size it needs. The GPU run of the same check is gpu_identity.sh.
#   vxc_identity.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/vxc_identity
source "$(dirname "$0")/vxc_lib.sh"
for m in mixtral qwen3moe gpt-oss; do
  f=$WORK/$m.gguf
  run "$f" -p "$p" -n 20 --mode resident --dump-logits "$WORK/ref.bin" >/dev/null || { echo "FAIL $m: resident run"; fail=1; continue; }
  # the least cache the plan accepts: its refusal names it
  HYPURA_XCACHE_CPU=1 run "$f" -p x -n 1 --gpu-xcache 1K >/dev/null
  need=$(sed -n 's/.*holds fewer than [0-9]* experts per layer; at least \([0-9.]*\) MiB.*/\1/p' "$WORK/last.err")
  [[ -n $need ]] || { echo "FAIL $m: a 1 KiB cache was not refused with the size it needs: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
  for size in "$(python3 -c "print(round($need + 0.05, 1))")M" "$(python3 -c "print(round($need * 2, 1))")M"; do
    HYPURA_XCACHE_CPU=1 run "$f" -p "$p" -n 20 --gpu-xcache $size --dump-logits "$WORK/x.bin" >/dev/null ||
      { echo "FAIL $m --gpu-xcache $size: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
    line=$(grep -o 'VRAM expert cache: [0-9]* layers x.*' "$WORK/last.err")
    slots=$(sed -n 's/.*passes: \([0-9]*\) from slots, \([0-9]*\) batched.*/\1 \2/p' <<<"$line")
    hit=$(sed -n 's/.*hit rate \([0-9.]*\)%.*/\1/p' <<<"$line")
    if ! cmp -s "$WORK/ref.bin" "$WORK/x.bin"; then echo "DIFFER $m --gpu-xcache $size [$line]"; fail=1
    elif [[ ${slots% *} -eq 0 || ${slots#* } -eq 0 ]]; then echo "FAIL $m --gpu-xcache $size: slots and the whole-layer area were not both used [$line]"; fail=1
    elif python3 -c "import sys; sys.exit(0 if float('$hit') < 100 else 1)"; then echo "ok $m --gpu-xcache $size: logits identical [$line]"
    else echo "FAIL $m --gpu-xcache $size: no miss, nothing tested [$line]"; fail=1; fi
  done
done
# the cache keeps this model's routing statistics (the CPU expert cache's file), and estimate
# then predicts its hit rate from them
f=$WORK/mixtral.gguf
env -u HYPURA_NO_PERSIST_STATS HYPURA_XCACHE_CPU=1 "$HY_BIN/hypura" run "$f" -p "$p" -n 20 --gpu-xcache 8M --temp 0 -c 256 -t 2 \
  --no-repack >/dev/null 2>"$WORK/last.err" ||
  { echo "FAIL: a run keeping statistics: $(tail -1 "$WORK/last.err")"; fail=1; }
est=$(env -u HYPURA_NO_PERSIST_STATS HYPURA_XCACHE_CPU=1 "$HY_BIN/hypura" estimate "$f" -c 256 --gpu-xcache 8M 2>&1 | grep "VRAM expert cache")
if grep -q "expected hit rate [0-9.]*% (from this model's routing statistics: [1-9]" <<<"$est"; then echo "ok estimate from kept statistics: ${est#  }"
else echo "FAIL estimate does not use the kept statistics: $est"; fail=1; fi
exit $fail
