#!/usr/bin/env bash
# Issue 15's Mixtral-shaped case on a `device` machine, run detached
# (DEVICE_JOB=bench/gpu/xcache_mix.sh bench/gpu/device_poll.sh): what bounds a VRAM
# expert cache when experts are 78 MiB and top-2 of 8. In order:
#  1. hypura's plan without the cache at 4 and 8 GiB, OpenMP's default wait against the long
#     spin (HYPURA_OMP_SPIN=1), two rounds each: is its 0.84x of llama.cpp at 4 GiB the threads' wait?
#  2. llama.cpp with every expert on the CPU (-ncmoe 32) and with none (-ncmoe 0, the whole
#     model in VRAM): the CPU's time per expert, and the GPU's, for the bound in the README;
#  3. xcache_all.sh on the Mixtral shape (RAM-resident: cache, no cache, llama.cpp sweep);
#  4. xcache_nvme.sh on it with RAM capped (WARM=1: a run keeping statistics, then the cache
#     filled ahead from them), llama.cpp in the same cgroup.
# Each part's log is copied into this job's log as it runs.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_job.sh"
export HYPURA_BUILD_DIR=$ROOT/build-gpu HYPURA_NO_PERSIST_STATS=1 HYPURA_NO_STORAGE_PROFILE=1
source bench/lib.sh
MIX=$MODELS/gpu-moe-20g.gguf
[[ -f $MIX ]] || "$BIN/hypura-mkmodel" -o "$MIX" --dim 4096 --layers 32 --ff 11264 --heads 32 --kv-heads 8 \
  --experts 8 --top-k 2 --skew 0.5 --type q4_k --ctx 4096 --seed 11 --quiet
P="Write a short story about a lighthouse keeper who finds a message in a bottle."
TMP=$(mktemp -d)
echo "== 1. no cache: OpenMP default against the long spin $(date -u +%T)"
for B in 4G 8G; do for r in 1 2; do for spin in "" 1; do
  rm -f "$TMP/s.json"
  HYPURA_OMP_SPIN=$spin "$BIN/hypura" run "$MIX" -p "$P" -n 32 --temp 0 -c 1024 --gpu-budget $B \
    --stats-json "$TMP/s.json" >/dev/null 2>"$TMP/s.err"
  printf "  %s round %s %-8s %7s tok/s\n" $B $r "${spin:+spin}${spin:-default}" \
    "$(hypura_json_tps "$TMP/s.json" 2>/dev/null || echo fail)"
done; done; done
echo "== 2. llama.cpp, every expert on the CPU / none $(date -u +%T)"
for n in 32 0; do
  "$LLAMA_BIN/llama-bench" -m "$MIX" -ngl 99 -ncmoe $n -p 0 -n 32 -r 2 -t 16 -o csv 2>/dev/null | tail -1 |
    awk -F, -v n=$n '{gsub(/"/, ""); print "  -ngl 99 -ncmoe " n ": " $(NF-1) " tok/s"}'
done
part() { # part NAME SCRIPT [VAR=VALUE...]: another job, its log followed into this one
  local d=$L/$1 s=$2; shift 2
  rm -rf "$d"; mkdir -p "$d"; : >"$d/log"
  tail -n +1 -f "$d/log" & local tp=$!
  env HY_JOB_DIR="$d" "$@" bash "$s"
  sleep 1; kill $tp 2>/dev/null
}
echo "== 3. RAM-resident $(date -u +%T)"
part all bench/gpu/xcache_all.sh SEL=mix SKIP_IDENTITY=1 N_GEN=64 PP=256
echo "== 4. RAM capped $(date -u +%T)"
part nvme bench/gpu/xcache_nvme.sh SEL=mix WARM=1 SKIP_IDENTITY=1 N_GEN=32
echo "end $(date -u +%T)"
touch $L/done
