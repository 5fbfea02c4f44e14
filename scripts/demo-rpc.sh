#!/usr/bin/env bash
# Remote tiers on one machine: a ggml-rpc-server from the pinned build stands in
# for a second machine's RAM. It runs on 127.0.0.1 (never beyond loopback: the
# RPC protocol has no authentication) in its own memory cgroup; `hypura run`
# runs in another, and the model (the demo's ~1 GiB dense Q4_K) is larger than
# either: the plan puts the last layers on the server, up to what its cgroup
# holds, and streams the rest from storage. Prints the plan with every tier,
# the text, tok/s against the prediction, and both cgroups' peaks.
# Without root or cgroup v1 the memory budgets still apply, without the caps.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${HYPURA_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD/bin"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hypura/demo"
LOCAL_MIB=${DEMO_LOCAL_MIB:-512}
REMOTE_MIB=${DEMO_REMOTE_MIB:-512}
MODEL="$CACHE/demo-dense-q4k.gguf" # the same model as `make demo`
LLAMA_BUILD=$(sed -n 's/^LLAMA_BUILD_DIR:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
SERVER="$LLAMA_BUILD/bin/ggml-rpc-server"
[[ -x $SERVER ]] || { echo "demo-rpc: $SERVER is missing: the pinned llama.cpp needs GGML_RPC=ON (scripts/setup.sh builds it)"; exit 1; }
mkdir -p "$CACHE"
if [[ ! -f "$MODEL" ]]; then
  echo "== making a synthetic model of ~1 GiB (dense llama, Q4_K)"
  "$BIN/hypura-mkmodel" -o "$MODEL" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k \
    --target-size 1024M --seed 42 --quiet
fi
echo "== model: $(du -m "$MODEL" | cut -f1) MiB; this process may use ${LOCAL_MIB} MiB, the RPC server ${REMOTE_MIB} MiB"

CGS=()
cleanup() {
  [[ -n ${SPID:-} ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  local c; for c in "${CGS[@]}"; do rmdir "$c" 2>/dev/null || true; done
  return 0
}
trap cleanup EXIT
# cgroup NAME MIB: a v1 memory group, or "" where none can be made
cgroup() {
  [[ $(id -u) -eq 0 && -w /sys/fs/cgroup/memory ]] || return 0
  local cg=/sys/fs/cgroup/memory/hypura-demo-rpc-$1-$$
  mkdir "$cg" 2>/dev/null || return 0
  echo $(($2 << 20)) >"$cg/memory.limit_in_bytes"
  CGS+=("$cg")
  echo "$cg"
}
in_cg() { local cg=$1; shift; if [[ -n $cg ]]; then sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$cg" "$@"; else "$@"; fi; }
peak() { [[ -n $1 ]] && echo "$(( $(cat "$1/memory.max_usage_in_bytes") >> 20 )) MiB (OOM kills: $(awk '/oom_kill /{print $2}' "$1/memory.oom_control"))" || echo "n/a (no cgroup)"; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SCG=$(cgroup server "$REMOTE_MIB")
# OMP_WAIT_POLICY=passive: on one machine, a server spinning after its part of a token
# would take the cores this process computes its own part on
OMP_WAIT_POLICY=passive sh -c '[ -n "$1" ] && echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$SCG" \
  "$SERVER" -H 127.0.0.1 -p "$PORT" >"$CACHE/rpc-server.log" 2>&1 &
SPID=$!
for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$PORT " && break; sleep 0.1; done
echo "== ggml-rpc-server on 127.0.0.1:$PORT${SCG:+ (cgroup capped at ${REMOTE_MIB} MiB)}"
# the server reports the host's memory, not its cgroup's: the plan is told what it may use there
# (its cap less 96 MiB for the server's own code and buffers)
EP="127.0.0.1:$PORT@$((REMOTE_MIB - 96))M"
LCG=$(cgroup run "$LOCAL_MIB")
[[ -n $LCG ]] && { sync; echo 3 >/proc/sys/vm/drop_caches || true; }
echo "== hypura run --rpc $EP --memory-budget ${LOCAL_MIB}M${LCG:+ (cgroup capped at ${LOCAL_MIB} MiB)}"
in_cg "$LCG" "$BIN/hypura" run "$MODEL" -p "The history of the printing press" -n 24 --temp 0 -c 512 \
  --memory-budget "${LOCAL_MIB}M" --rpc "$EP" --plan
echo "cgroup peaks: hypura $(peak "$LCG"); ggml-rpc-server $(peak "$SCG")"
