#!/usr/bin/env bash
# Starts bench/gpu/device_all.sh (or $DEVICE_JOB) detached if it is not running, then follows its
# log for up to $1 seconds (default 560) and copies it (and the saved CUDA build)
# to $OUT.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
L=/tmp/hy-gpu
if [[ ! -f $L/started ]]; then
  mkdir -p $L; touch $L/started
  setsid nohup bash "$ROOT/${DEVICE_JOB:-bench/gpu/device_all.sh}" </dev/null >/dev/null 2>&1 &
fi
end=$(( $(date +%s) + ${1:-560} ))
while [[ ! -f $L/done && $(date +%s) -lt $end ]]; do sleep 5; done
cp $L/log "$OUT/log.txt" 2>/dev/null
if [[ -f $L/llama-cuda-bin.tar.xz && ! -f $L/cuda_sent ]] && grep -q "saved cuda build" $L/log; then
  split -b 15M $L/llama-cuda-bin.tar.xz "$OUT/cudabin.part." && touch $L/cuda_sent
fi
cp "$ROOT"/bench/results/gpu_vs_llama.jsonl "$OUT/" 2>/dev/null
[[ -f $L/done ]] && echo "DONE" || echo "STILL RUNNING"
tail -c 11000 $L/log
