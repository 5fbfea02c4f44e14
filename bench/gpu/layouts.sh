#!/usr/bin/env bash
# Where should the CPU-side weights of a GPU-tier run live? On a `device` machine
# (carry .device): hypura's default and --no-repack (hypura's own RAM tier:
# anonymous memory on transparent huge pages, plain kernels) against llama-bench
# with --no-host 0 (weights in the GPU's pinned host buffers, plain kernels:
# llama.cpp's default) and --no-host 1 (repacked). MoE: -ncmoe 27, dense: -ngl 18,
# the placements hypura's plan lands on with a 4 GiB GPU budget. Two rounds,
# tok/s of 32 generated tokens. This is what chose the session's layout: dense
# CPU weights repacked, a MoE's experts pinned and plain.
set -uo pipefail
cd "$(dirname "$0")/../.."
env_sh=$(bench/gpu/device_setup.sh) && . "$env_sh"
export HYPURA_BUILD_DIR=$PWD/build-gpu HYPURA_NO_PERSIST_STATS=1
source bench/lib.sh
bench/gpu_vs_llama.sh models >/dev/null 2>&1
B=$BIN L=$LLAMA_BIN D=$MODELS
P="Write a short story about a lighthouse keeper who finds a message in a bottle."
hy() {
  local m=$1; shift
  rm -f /tmp/h.json
  $B/hypura run "$m" -p "$P" -n 32 --temp 0 -c 512 --gpu-budget 4G --stats-json /tmp/h.json "$@" >/dev/null 2>/tmp/h.err
  [[ -s /tmp/h.json ]] && hypura_json_tps /tmp/h.json || tail -1 /tmp/h.err
}
ll() { # avg_ts of each --no-host value, in order
  local m=$1; shift
  $L/llama-bench -m "$m" -p 0 -n 32 -r 1 -t 16 -lm none -o csv "$@" 2>/dev/null | awk -F, 'NR>1{print $(NF-1)}' | tr -d '"' | tr '\n' ' '
}
for r in 1 2; do
  echo "round $r MoE: hypura $(hy $D/gpu-moe-20g.gguf) | --no-repack $(hy $D/gpu-moe-20g.gguf --no-repack)" \
       "| llama -ncmoe 27 --no-host 0,1: $(ll $D/gpu-moe-20g.gguf -ngl 99 -ncmoe 27 --no-host 0,1)"
  echo "round $r dense: hypura $(hy $D/gpu-dense-11g.gguf) | --no-repack $(hy $D/gpu-dense-11g.gguf --no-repack)" \
       "| llama -ngl 18 --no-host 0,1: $(ll $D/gpu-dense-11g.gguf -ngl 18 --no-host 0,1)"
done
