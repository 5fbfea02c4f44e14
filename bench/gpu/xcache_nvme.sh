#!/usr/bin/env bash
# The VRAM expert cache over RAM and NVMe (--gpu-xcache with a memory budget below the
# model; issue 15) on a `device` machine, run detached (DEVICE_JOB=bench/gpu/xcache_nvme.sh
# bench/gpu/device_poll.sh). Order = priority: build, GPU bit-identity
# (tests/scripts/gpu_identity.sh, with its NVMe-tier case), then the ~20 GB qwen3moe-layout
# and Mixtral-shaped models of xcache_all.sh at GPU budgets $BUDGETS and a memory budget of
# $MEMB: hypura with the cache (--gpu-xcache auto) and without it (expert-streaming, experts
# on the CPU), and llama.cpp -ngl 99 -ncmoe N (N: the layers whose experts hypura keeps off
# the GPU; LLAMA_MORE=1: and one fewer). Where a memory cgroup can be made, every run is capped at
# $CAP (the model does not fit: llama.cpp's mmap pages then come from the disk again).
# WARM=1 runs each hypura configuration with kept routing statistics (a first run records them);
# SEL=q3|mix picks one model; LLAMA_MORE=1 adds llama.cpp with one more expert layer on the GPU;
# ONLY_CACHE=1 leaves out hypura without the cache, SKIP_LLAMA=1 llama.cpp, NO_PROMPT=1 the prompt-speed runs.
# Results: bench/results/xcache_nvme.jsonl.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_job.sh"
export HYPURA_BUILD_DIR=$ROOT/build-gpu HYPURA_NO_PERSIST_STATS=1 HYPURA_NO_STORAGE_PROFILE=1
source bench/lib.sh
BUDGETS=${BUDGETS:-"4G 8G"} N_GEN=${N_GEN:-32} MEMB=${MEMB:-10G} CAP=${CAP:-12G}
OUTJ=$RESULTS/xcache_nvme.jsonl
nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader
if [[ -z ${SKIP_IDENTITY:-} ]]; then
  echo "== gpu identity $(date -u +%T)"
  tests/scripts/gpu_identity.sh build-gpu/bin /tmp/hy-gpu-work | grep -E "vxc|FAIL|skip"
fi
# a memory cgroup for the runs (v1 or v2), if this machine lets us make one
CG=""
if [[ -d /sys/fs/cgroup/memory ]] && mkdir -p /sys/fs/cgroup/memory/hy15 2>/dev/null &&
   echo $(numfmt --from=iec $CAP) >/sys/fs/cgroup/memory/hy15/memory.limit_in_bytes 2>/dev/null; then
  CG=/sys/fs/cgroup/memory/hy15
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && mkdir -p /sys/fs/cgroup/hy15 2>/dev/null &&
   echo $(numfmt --from=iec $CAP) >/sys/fs/cgroup/hy15/memory.max 2>/dev/null; then
  CG=/sys/fs/cgroup/hy15
fi
echo "memory cgroup: ${CG:-none could be made} (cap $CAP); hypura --memory-budget $MEMB"
capped() { if [[ -n $CG ]]; then bash -c 'echo $$ > '"$CG"'/cgroup.procs; exec "$@"' _ "$@"; else "$@"; fi; }
echo "== models $(date -u +%T)"
MIX=$MODELS/gpu-moe-20g.gguf Q3=$MODELS/gpu-q3moe-20g.gguf
[[ -f $Q3 ]] || "$BIN/hypura-mkmodel" -o "$Q3" --arch qwen3moe --dim 2048 --layers 56 --heads 32 --kv-heads 4 --head-dim 128 \
  --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf --ctx 4096 --seed 13 --quiet
[[ -f $MIX ]] || "$BIN/hypura-mkmodel" -o "$MIX" --dim 4096 --layers 32 --ff 11264 --heads 32 --kv-heads 8 \
  --experts 8 --top-k 2 --skew 0.5 --type q4_k --ctx 4096 --seed 11 --quiet
ls -la "$MIX" "$Q3"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
P="Write a short story about a lighthouse keeper who finds a message in a bottle."
TMP=$(mktemp -d)
hy() {
  local name=$1 m=$2; shift 2
  "$BIN/hypura" estimate "$m" -c 1024 "$@" 2>&1 | grep -E "plan:|VRAM expert cache|expert cache:|predicted|auto:|under it|PCIe" | cut -c1-400 | sed 's/^/    /'
  vram_start
  rm -f "$TMP/h.json"
  capped timeout 150 "$BIN/hypura" run "$m" -p "$P" -n $N_GEN --temp 0 -c 1024 --stats-json "$TMP/h.json" "$@" >/dev/null 2>"$TMP/h.err"
  local rc=$?
  vram_stop
  grep -E "^\[hypura\] (VRAM expert cache|under it|filled ahead|load [0-9]|experts:|streamed)" "$TMP/h.err" | cut -c1-500 | sed 's/^/    /'
  [[ $rc -eq 0 ]] || echo "    hypura failed (rc $rc): $(tail -2 "$TMP/h.err")"
  HT=$(hypura_json_tps "$TMP/h.json" 2>/dev/null || echo 0); HT=${HT:-0}
  local long=$(python3 -c "print(' '.join(['$P'] * 30))")
  [[ -n ${NO_PROMPT:-} ]] && rm -f "$TMP/p.json" "$TMP/p.err" && touch "$TMP/p.err" || capped timeout 120 "$BIN/hypura" run "$m" -p "$long" -n 1 --temp 0 -c 1024 --stats-json "$TMP/p.json" "$@" >/dev/null 2>"$TMP/p.err"
  HP=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(round(j['prompt_tps'],1), j['prompt_tokens'])" "$TMP/p.json" 2>/dev/null || echo "0 0")
  grep -E "^\[hypura\] (under it)" "$TMP/p.err" | cut -c1-300 | sed 's/^/    prompt: /'
  printf '  %-44s gen %8.2f tok/s | prompt %s tok/s (%s tokens) | VRAM %6s MiB\n' "hypura $name" "$HT" "${HP% *}" "${HP#* }" "$VRAM"
  echo "{\"model\":\"$(basename $m)\",\"budget\":\"$B\",\"memb\":\"$MEMB\",\"cap\":\"${CG:+$CAP}\",\"who\":\"hypura\",\"config\":\"$name $*\",\"gen_tps\":$HT,\"prompt_tps\":${HP% *},\"vram_mib\":$VRAM}" >>"$OUTJ"
}
ll() {
  local name=$1 m=$2; shift 2
  vram_start
  capped timeout 100 "$LLAMA_BIN/llama-bench" -m "$m" -p 256 -n 16 -r 1 -t 16 -o json "$@" >"$TMP/l.json" 2>"$TMP/l.err"
  local rc=$?
  vram_stop
  LT=$(llama_bench_tg_pp "$TMP/l.json")
  [[ $rc -eq 0 ]] || LT="0 0"
  printf '  %-44s gen %8s tok/s | prompt %s tok/s (256 tokens) | VRAM %6s MiB%s\n' "llama $name" "${LT% *}" "${LT#* }" "$VRAM" \
    "$([[ $rc -ne 0 ]] && echo " FAILED rc $rc: $(tail -1 "$TMP/l.err")")"
  echo "{\"model\":\"$(basename $m)\",\"budget\":\"$B\",\"cap\":\"${CG:+$CAP}\",\"who\":\"llama\",\"config\":\"$name\",\"gen_tps\":${LT% *},\"prompt_tps\":${LT#* },\"vram_mib\":$VRAM}" >>"$OUTJ"
}
# --gpu-xcache auto's decision from the prediction alone (no statistics kept yet)
for B in $BUDGETS; do for m in $Q3 $MIX; do
  echo "== estimate $(basename $m) --gpu-budget $B --memory-budget $MEMB --gpu-xcache auto"
  "$BIN/hypura" estimate "$m" -c 1024 --gpu-budget $B --memory-budget $MEMB --gpu-xcache auto 2>&1 |
    grep -E "VRAM expert cache|under it|PCIe|predicted|auto:" | cut -c1-600
done; done
# WARM=1: each model's first run keeps its routing statistics (a fresh data directory), which the
# second run's plan (expected hit rates, the auto decision) and caches (seeded LFU) start from
if [[ -n ${WARM:-} ]]; then export XDG_DATA_HOME=$(mktemp -d); unset HYPURA_NO_PERSIST_STATS; fi
for B in $BUDGETS; do
  for m in ${SEL:-$Q3 $MIX}; do
    [[ $m == mix ]] && m=$MIX; [[ $m == q3 ]] && m=$Q3
    echo "== $(basename $m) GPU budget $B memory budget $MEMB $(date -u +%T)"
    [[ -n ${WARM:-} ]] && hy "--gpu-xcache auto, first run (keeps statistics)" "$m" --gpu-budget $B --gpu-xcache auto --memory-budget $MEMB
    hy "--gpu-xcache auto (RAM+NVMe under it)" "$m" --gpu-budget $B --gpu-xcache auto --memory-budget $MEMB
    [[ -z ${ONLY_CACHE:-} ]] && hy "no VRAM cache (expert-streaming)" "$m" --gpu-budget $B --memory-budget $MEMB
    nl=$("$BIN/hypura" estimate "$m" -c 1024 --gpu-budget $B 2>&1 | sed -n 's/.*experts of \([0-9]*\) layers.*/\1/p' | head -1)
    tot=$( [[ $m == "$MIX" ]] && echo 32 || echo 56 )
    [[ -z ${SKIP_LLAMA:-} ]] && for n in $(( tot - ${nl:-0} )) ${LLAMA_MORE:+$(( tot - ${nl:-0} - 1 ))}; do ll "-ngl 99 -ncmoe $n" "$m" -ngl 99 -ncmoe $n; done
  done
done
echo "end $(date -u +%T)"
touch $L/done
