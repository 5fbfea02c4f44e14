#!/usr/bin/env bash
# Predictions on the GPU machine (issue 12) and issue 15's first measurement,
# meant to run detached on a `device` machine (started and followed by
# bench/gpu/device_poll.sh with DEVICE_JOB=bench/gpu/device_predict.sh):
#  1. a Qwen3-30B-A3B-shaped qwen3moe (3.7 GB), resident, with GPU budgets of
#     none / 4 GiB / 2 GiB (PRED_GPU), 3 runs each, and expert-streaming under a
#     2 GiB budget without a GPU (cold), 3 runs: predicted against measured
#     generation tok/s, and the compute ratio the runs keep for the next ones
#     (hy_calib: the first run of a budget has none, or the machine's);
#  2. bench/gpu/managed_probe.cu: cudaMemPrefetchAsync per slice size, GPU page
#     faults, eviction, pinned memcpy, managed vs cudaMalloc reads;
#  3. the same model wholly on the GPU with and without
#     GGML_CUDA_ENABLE_UNIFIED_MEMORY=1 (does managed memory slow the model?).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
L=${DEVICE_LOG_DIR:-/tmp/hy-gpu}
mkdir -p $L
exec >$L/log 2>&1
echo "start $(date -u +%T)"
env_sh=$(bench/gpu/device_setup.sh) || { echo "SETUP FAILED"; touch $L/done; exit 1; }
. "$env_sh"
B=$ROOT/build-gpu/bin
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader
nproc
$B/hypura profile 2>&1 | grep -E "memcpy|sequential|GPU|CPU"
M=/tmp/q3.gguf
[[ -f $M ]] || $B/hypura-mkmodel -o $M --arch qwen3moe --dim 2048 --heads 32 --kv-heads 4 --head-dim 128 --ff 6144 \
  --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf --target-size 3.7G --quiet
P="The history of the printing press begins in"
echo "== 1. predictions, resident, $(date -u +%T)"
for g in ${PRED_GPU:-none 4G 2G}; do
  for r in 1 2 3; do
    $B/hypura run $M -p "$P" -n 64 --temp 0 -c 1024 --gpu-budget $g --stats-json $L/s.json >/dev/null 2>$L/e
    python3 - "$L/s.json" "$g" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d.get("prediction", {})
m, t = d.get("gen_tps", 0), d.get("predicted_tok_s", 0)
print(f"gpu {sys.argv[2]} run {sys.argv[3]}: mode {d.get('mode')}, predicted {t:.1f} tok/s, measured {m:.1f} "
      f"({m / t if t else 0:.2f}x); compute x{p.get('compute_scale', 1):.2f} ({p.get('compute_scale_source')}, "
      f"{p.get('compute_scale_runs')} runs), memory {p.get('memory_gbps', 0):.1f} GB/s")
PY
    grep -E "compute:|tiers:" $L/e | sed 's/^/    /'
  done
done
echo "== 1b. predictions, expert-streaming under a 2 GiB budget, no GPU, cold $(date -u +%T)"
for r in 1 2 3; do
  sync; echo 3 > /proc/sys/vm/drop_caches
  $B/hypura run $M -p "$P" -n 64 --temp 0 -c 1024 --gpu-budget none --memory-budget 2G --stats-json $L/s.json >/dev/null 2>$L/e
  python3 - "$L/s.json" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d.get("prediction", {}); g = d.get("generation", {})
m, t = d.get("gen_tps", 0), d.get("predicted_tok_s", 0)
h, mi = g.get("expert_hits", 0), g.get("expert_misses", 0)
print(f"stream run {sys.argv[2]}: mode {d.get('mode')}, predicted {t:.1f} tok/s (plan {p.get('plan_tok_s', t):.1f}), "
      f"measured {m:.1f} ({m / t if t else 0:.2f}x); compute x{p.get('compute_scale', 1):.2f} "
      f"({p.get('compute_scale_source')}); hits predicted {100 * (p.get('expert_cache') or {}).get('hit_rate', 0):.1f}%, "
      f"measured {100 * h / (h + mi) if h + mi else 0:.1f}%")
PY
  grep -E "compute:|generation alone" $L/e | sed 's/^/    /'
done
echo "== 2. managed memory probe $(date -u +%T)"
if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  NV=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  $NV -O2 -arch=sm_90 -o /tmp/managed_probe bench/gpu/managed_probe.cu && /tmp/managed_probe 1
elif [[ -x .device/managed_probe ]]; then
  .device/managed_probe 1
fi
echo "== 3. unified memory on the whole model $(date -u +%T)"
for u in 0 1 0 1; do
  if [[ $u == 1 ]]; then export GGML_CUDA_ENABLE_UNIFIED_MEMORY=1; else unset GGML_CUDA_ENABLE_UNIFIED_MEMORY; fi
  $B/hypura run $M -p "$P" -n 64 --temp 0 -c 1024 --gpu-budget 16G --stats-json $L/s.json >/dev/null 2>$L/e
  echo "unified memory $u: $(grep -E 'generation [0-9]+ tokens' $L/e | head -1)"
done
unset GGML_CUDA_ENABLE_UNIFIED_MEMORY
echo "end $(date -u +%T)"
touch $L/done
