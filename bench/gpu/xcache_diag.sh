#!/usr/bin/env bash
# The VRAM expert cache's overhead and steady state on a `device` machine (run detached:
# DEVICE_JOB=bench/gpu/xcache_diag.sh bench/gpu/device_poll.sh). On the qwen3moe-layout
# model of xcache_all.sh: (1) every tensor on the GPU (no cache: the ceiling); (2) the same
# budget with a cache holding every expert of every layer (--gpu-budget 22G --gpu-xcache 20.5G: after the first
# touches every selection hits, so what is left over (1) is the mechanism's own cost: the
# eval callback's round trip per layer); (3) budgets 4 and 8 GiB with --gpu-xcache auto and
# the best llama.cpp configurations of xcache_all.sh within that VRAM, over N_GEN (256)
# generated tokens: past the cache's first fills.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_job.sh"
export HYPURA_BUILD_DIR=$ROOT/build-gpu HYPURA_NO_PERSIST_STATS=1 HYPURA_NO_STORAGE_PROFILE=1
source bench/lib.sh
N_GEN=${N_GEN:-256}
Q3=$MODELS/gpu-q3moe-20g.gguf
[[ -f $Q3 ]] || "$BIN/hypura-mkmodel" -o "$Q3" --arch qwen3moe --dim 2048 --layers 56 --heads 32 --kv-heads 4 --head-dim 128 \
  --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf --ctx 4096 --seed 13 --quiet
P="Write a short story about a lighthouse keeper who finds a message in a bottle."
hy() {
  local name=$1; shift
  "$BIN/hypura" run "$Q3" -p "$P" -n $N_GEN --temp 0 -c 1024 --stats-json /tmp/h.json "$@" >/dev/null 2>/tmp/h.err || echo "  failed: $(tail -2 /tmp/h.err)"
  printf '  %-52s gen %8s tok/s\n' "hypura $name" "$(hypura_json_tps /tmp/h.json)"
  grep -E "^\[hypura\] VRAM expert cache" /tmp/h.err | sed 's/^/    /'
}
ll() {
  local name=$1; shift
  "$LLAMA_BIN/llama-bench" -m "$Q3" -p 0 -n $N_GEN -r 1 -t 16 -o csv "$@" 2>/dev/null >/tmp/l.csv
  printf '  %-52s gen %8s tok/s\n' "llama $name" "$(python3 -c "import csv,sys; r=list(csv.DictReader(open('/tmp/l.csv'))); print(round(float(r[-1]['avg_ts']),2))" 2>/dev/null)"
}
echo "== overhead $(date -u +%T)"
hy "all on the GPU (--gpu-budget 30G)" --gpu-budget 30G
hy "all experts cached (--gpu-budget 22G --gpu-xcache 20.5G)" --gpu-budget 22G --gpu-xcache 20.5G
echo "== steady state, $N_GEN tokens $(date -u +%T)"
hy "--gpu-budget 4G --gpu-xcache auto" --gpu-budget 4G --gpu-xcache auto
ll "-ngl 99 -ncmoe 46 (best within 4 GiB above)" -ngl 99 -ncmoe 46
hy "--gpu-budget 8G --gpu-xcache auto" --gpu-budget 8G --gpu-xcache auto
ll "-ngl 99 -ncmoe 33 (best within 8 GiB above)" -ngl 99 -ncmoe 33
hy "--gpu-budget 8G --gpu-xcache auto --cache-policy lru" --gpu-budget 8G --gpu-xcache auto --cache-policy lru
echo "end $(date -u +%T)"
touch $L/done
