#!/usr/bin/env bash
# Final check of the VRAM expert cache on a `device` machine (run detached:
# DEVICE_JOB=bench/gpu/xcache_check.sh bench/gpu/device_poll.sh): the GPU identity tests
# on this build, then the qwen3moe-layout model of xcache_all.sh at a 4 GiB GPU budget
# twice with routing statistics kept (a fresh data directory): the second run's cache
# starts from the first's statistics (64 generated tokens each, as xcache_all.sh).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_job.sh"
export HYPURA_BUILD_DIR=$ROOT/build-gpu HYPURA_NO_STORAGE_PROFILE=1
source bench/lib.sh
echo "== gpu identity $(date -u +%T)"
HYPURA_NO_PERSIST_STATS=1 tests/scripts/gpu_identity.sh build-gpu/bin /tmp/hy-gpu-work
Q3=$MODELS/gpu-q3moe-20g.gguf
[[ -f $Q3 ]] || "$BIN/hypura-mkmodel" -o "$Q3" --arch qwen3moe --dim 2048 --layers 56 --heads 32 --kv-heads 4 --head-dim 128 \
  --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf --ctx 4096 --seed 13 --quiet
export XDG_DATA_HOME=$(mktemp -d)
P="Write a short story about a lighthouse keeper who finds a message in a bottle."
for r in 1 2; do
  echo "== run $r with kept statistics $(date -u +%T)"
  "$BIN/hypura" estimate "$Q3" -c 1024 --gpu-budget 4G --gpu-xcache auto 2>&1 | grep "VRAM expert cache" | sed 's/^/  /'
  "$BIN/hypura" run "$Q3" -p "$P" -n 64 --temp 0 -c 1024 --gpu-budget 4G --gpu-xcache auto --stats-json /tmp/h.json >/dev/null 2>/tmp/h.err ||
    echo "  failed: $(tail -2 /tmp/h.err)"
  grep -E "^\[hypura\] (VRAM expert cache|load [0-9])" /tmp/h.err | sed 's/^/  /'
  python3 -c "import json; j=json.load(open('/tmp/h.json')); print('  stats-json vram_xcache:', j.get('vram_xcache'))"
done
echo "end $(date -u +%T)"
touch $L/done
