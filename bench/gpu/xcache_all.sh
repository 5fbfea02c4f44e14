#!/usr/bin/env bash
# The VRAM expert cache (--gpu-xcache, issue 15) on a `device` machine, meant to run
# detached (bench/gpu/device_poll.sh with DEVICE_JOB=bench/gpu/xcache_all.sh). Order =
# priority: build, bit-identity (tests/scripts/gpu_identity.sh), then for a ~20 GB
# Mixtral-shaped MoE and a ~20 GB qwen3moe-layout one (128 experts, top-8) at GPU
# budgets of $BUDGETS: hypura with the cache (--gpu-xcache auto), hypura without it (its
# plan: whole expert layers on the GPU, the rest on the CPU), and llama.cpp -ngl 99
# -ncmoe N for the N of hypura's plan and one layer more on the GPU; a llama.cpp
# configuration counts only if its peak VRAM (nvidia-smi) is at most hypura-with-cache's
# +2 %. Generation of N_GEN tokens after a short prompt, and prompt speed over a
# ~PP-token prompt (llama-bench -p PP). Results: bench/results/xcache.jsonl.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_job.sh"
export HYPURA_BUILD_DIR=$ROOT/build-gpu HYPURA_NO_PERSIST_STATS=1 HYPURA_NO_STORAGE_PROFILE=1
[[ -f /opt/llama.cpp/build-cuda/bin/libggml-cuda.so && ! -f $L/llama-cuda-bin.tar.xz ]] && (cd /opt/llama.cpp/build-cuda/bin && tar cf - *.so* llama-bench llama-completion | xz -T0 -3 > $L/llama-cuda-bin.tar.xz.tmp && mv $L/llama-cuda-bin.tar.xz.tmp $L/llama-cuda-bin.tar.xz && echo "saved cuda build: $(du -h $L/llama-cuda-bin.tar.xz | cut -f1)") &
source bench/lib.sh
BUDGETS=${BUDGETS:-"4G 8G"} N_GEN=${N_GEN:-64} PP=${PP:-512}
OUTJ=$RESULTS/xcache.jsonl
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader
if [[ -z ${SKIP_IDENTITY:-} ]]; then
  echo "== gpu identity $(date -u +%T)"
  tests/scripts/gpu_identity.sh build-gpu/bin /tmp/hy-gpu-work
fi
echo "== models $(date -u +%T)"
MIX=$MODELS/gpu-moe-20g.gguf Q3=$MODELS/gpu-q3moe-20g.gguf
[[ -f $MIX ]] || "$BIN/hypura-mkmodel" -o "$MIX" --dim 4096 --layers 32 --ff 11264 --heads 32 --kv-heads 8 \
  --experts 8 --top-k 2 --skew 0.5 --type q4_k --ctx 4096 --seed 11 --quiet
[[ -f $Q3 ]] || "$BIN/hypura-mkmodel" -o "$Q3" --arch qwen3moe --dim 2048 --layers 56 --heads 32 --kv-heads 4 --head-dim 128 \
  --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf --ctx 4096 --seed 13 --quiet
ls -la "$MIX" "$Q3"
P="Write a short story about a lighthouse keeper who finds a message in a bottle."
TMP=$(mktemp -d)
# hy NAME MODEL ARGS: generation and prompt tok/s, peak VRAM
hy() {
  local name=$1 m=$2; shift 2
  vram_start
  rm -f "$TMP/h.json"
  "$BIN/hypura" run "$m" -p "$P" -n $N_GEN --temp 0 -c 1024 --stats-json "$TMP/h.json" "$@" >/dev/null 2>"$TMP/h.err"
  local rc=$?
  vram_stop
  grep -E "GPU:|VRAM expert cache|tiers:" "$TMP/h.err" | sed 's/^/    /'
  [[ $rc -eq 0 ]] || echo "    hypura failed (rc $rc): $(tail -2 "$TMP/h.err")"
  HT=$(hypura_json_tps "$TMP/h.json")
  # prompt speed: a long prompt, 1 token generated
  local long=$(python3 -c "print(' '.join(['$P'] * 30))")
  "$BIN/hypura" run "$m" -p "$long" -n 1 --temp 0 -c 1024 --stats-json "$TMP/p.json" "$@" >/dev/null 2>"$TMP/p.err"
  HP=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(round(j['prompt_tps'],1), j['prompt_tokens'])" "$TMP/p.json" 2>/dev/null || echo "0 0")
  printf '  %-40s gen %8.2f tok/s | prompt %s tok/s (%s tokens) | VRAM %6s MiB\n' "hypura $name" "$HT" "${HP% *}" "${HP#* }" "$VRAM"
  echo "{\"model\":\"$(basename $m)\",\"budget\":\"$B\",\"who\":\"hypura\",\"config\":\"$name $*\",\"gen_tps\":$HT,\"prompt_tps\":${HP% *},\"vram_mib\":$VRAM}" >>"$OUTJ"
}
# ll NAME MODEL ARGS: llama-bench tg N_GEN and pp PP
ll() {
  local name=$1 m=$2; shift 2
  vram_start
  "$LLAMA_BIN/llama-bench" -m "$m" -p $PP -n $N_GEN -r 1 -t 16 -o json "$@" >"$TMP/l.json" 2>"$TMP/l.err"
  local rc=$?
  vram_stop
  LT=$(llama_bench_tg_pp "$TMP/l.json")
  [[ $rc -eq 0 ]] || LT="0 0"
  printf '  %-40s gen %8s tok/s | prompt %s tok/s (%d tokens) | VRAM %6s MiB%s\n' "llama $name" "${LT% *}" "${LT#* }" $PP "$VRAM" \
    "$([[ $rc -ne 0 ]] && echo " FAILED: $(tail -1 "$TMP/l.err")")"
  echo "{\"model\":\"$(basename $m)\",\"budget\":\"$B\",\"who\":\"llama\",\"config\":\"$name\",\"gen_tps\":${LT% *},\"prompt_tps\":${LT#* },\"vram_mib\":$VRAM}" >>"$OUTJ"
}
for B in $BUDGETS; do
  for m in ${SEL:-"$MIX $Q3"}; do
    [[ $m == mix ]] && m=$MIX; [[ $m == q3 ]] && m=$Q3
    echo "== $(basename $m) GPU budget $B $(date -u +%T)"
    hy "--gpu-xcache auto" "$m" --gpu-budget $B --gpu-xcache auto; HV=$VRAM; HTX=$HT
    # the VRAM cache's own figures for the closing note
    grep -E "^\[hypura\] (VRAM expert cache|load)" "$TMP/h.err" | sed 's/^/    /'
    nl=$("$BIN/hypura" estimate "$m" -c 1024 --gpu-budget $B 2>&1 | sed -n 's/.*experts of \([0-9]*\) layers.*/\1/p' | head -1)
    tot=$( [[ $m == "$MIX" ]] && echo 32 || echo 56 )
    hy "no cache" "$m" --gpu-budget $B
    best=0 bname=""
    for n in $(( tot - ${nl:-0} + ${EXTRA:-0} )) $(( tot - ${nl:-0} + 1 )) $(( tot - ${nl:-0} )) $(( tot - ${nl:-0} - 1 )); do
      ll "-ngl 99 -ncmoe $n" "$m" -ngl 99 -ncmoe $n
      if python3 -c "import sys; sys.exit(0 if $VRAM <= $HV * 1.02 and ${LT% *} > $best else 1)"; then best=${LT% *}; bname="-ncmoe $n"; fi
    done
    python3 -c "print('  RATIO %s %s: hypura --gpu-xcache %.2f / best llama.cpp within its VRAM (%s) %.2f = %.2fx' % ('$(basename $m)', '$B', $HTX, '$bname' or 'none', $best, $HTX / $best if $best > 0 else float('nan')))"
  done
done
echo "end $(date -u +%T)"
touch $L/done
