#!/usr/bin/env bash
# The main job on an embedded default: a synthetic dense model about twice the
# memory budget it is given, streamed from storage. Prints the plan, the text,
# tok/s, I/O per token, stalls and peak memory. When run as root with a memory
# cgroup available, the run is also confined to a cgroup of the same size.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${HYPURA_BUILD_DIR:-$ROOT/build}/bin"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hypura/demo"
BUDGET_MIB=${DEMO_BUDGET_MIB:-512}
MODEL="$CACHE/demo-dense-q4k.gguf"
mkdir -p "$CACHE"

if [[ ! -f "$MODEL" ]]; then
  echo "== making a synthetic model of ~$((BUDGET_MIB * 2)) MiB (dense llama, Q4_K)"
  "$BIN/hypura-mkmodel" -o "$MODEL" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k \
    --target-size $((BUDGET_MIB * 2))M --seed 42 --quiet
fi
echo "== model"
"$BIN/hypura" inspect "$MODEL" | head -12
echo
echo "== hypura run with a ${BUDGET_MIB} MiB memory budget"
cmd=("$BIN/hypura" run "$MODEL" -p "The history of the printing press" -n 24 --temp 0 -c 512
     --memory-budget "${BUDGET_MIB}M" --plan)
CG=""
if [[ $(id -u) -eq 0 && -w /sys/fs/cgroup/memory ]]; then
  CG=/sys/fs/cgroup/memory/hypura-demo-$$
  if mkdir "$CG" 2>/dev/null; then
    echo $((BUDGET_MIB << 20)) > "$CG/memory.limit_in_bytes"
    trap 'rmdir "$CG" 2>/dev/null || true' EXIT
    echo "(confined to a cgroup v1 memory group capped at ${BUDGET_MIB} MiB)"
    sync; echo 3 > /proc/sys/vm/drop_caches || true
  else CG=""; fi
fi
if [[ -n $CG ]]; then
  sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" "${cmd[@]}"
  echo "cgroup peak: $(( $(cat "$CG/memory.max_usage_in_bytes") >> 20 )) MiB of ${BUDGET_MIB} MiB;" \
       "OOM kills: $(awk '/oom_kill /{print $2}' "$CG/memory.oom_control")"
else
  "${cmd[@]}"
fi
