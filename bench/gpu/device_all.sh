#!/usr/bin/env bash
# The whole GPU measurement on a `device` machine, meant to run detached
# (setsid) so that it outlives one call; each call polls bench/gpu/device_poll.sh.
# Order = priority: build, environment, small identity tests, models, MoE,
# dense, both under caps, identity on the big models, where the memory goes.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_job.sh"
export HYPURA_BUILD_DIR=$ROOT/build-gpu
# caps around the dense model's CPU side (~6.3 GiB with a 4 GiB GPU budget): streamed, barely, resident
export DENSE_CAP=${DENSE_CAP:-"6G 6.5G 7G"} MEM_CAPS=${MEM_CAPS:-6G}
[[ -f $ROOT/.device/env ]] && . "$ROOT/.device/env" # this call's settings (STAGES, caps, SWEEP)
# keep the CUDA build for another machine of this session (files come back via $OUT)
[[ -f /opt/llama.cpp/build-cuda/bin/libggml-cuda.so ]] && (cd /opt/llama.cpp/build-cuda/bin && tar cf - *.so* llama-bench llama-completion | xz -T0 -3 > $L/llama-cuda-bin.tar.xz && echo "saved cuda build: $(du -h $L/llama-cuda-bin.tar.xz | cut -f1)") &
echo "== environment $(date -u +%T)"
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader
nproc; lscpu | grep -E "Model name|Thread|Core|Socket" ; free -g | head -2; df -h /root | tail -1
cat /sys/kernel/mm/transparent_hugepage/enabled; stat -fc %T /sys/fs/cgroup; cat /etc/os-release | head -2
build-gpu/bin/hypura profile 2>&1 | tail -12
echo "== gpu identity (small models) $(date -u +%T)"
tests/scripts/gpu_identity.sh build-gpu/bin /tmp/hy-gpu-work
for st in ${STAGES:-models moe dense cap identity mem}; do
  echo "== stage $st $(date -u +%T)"
  bench/gpu_vs_llama.sh $st
done
echo "end $(date -u +%T)"
touch $L/done
