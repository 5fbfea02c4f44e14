#!/usr/bin/env bash
# Issue 16: another machine's RAM as a tier, through ggml's RPC backend. One
# machine stands in for two: a ggml-rpc-server of the pinned build on 127.0.0.1
# in its own memory cgroup (REMOTE_MIB, default 1536), the local process in
# another (CAP_MIB, default 1536). For a ~3 GB dense Q4_K model and a ~3.7 GB
# qwen3moe-shaped MoE (the bench models, made when missing), cold page cache
# before each run:
#   - hypura alone: streaming from local storage (dense-FFN or expert-streaming);
#   - hypura --rpc: the plan's own split (remote budget = the server's cap less
#     SERVER_OVERHEAD_MIB), the rest resident or streamed here; where the plan
#     keeps every layer here, also a split set by hand (HYPURA_RPC_LAYERS);
#   - llama.cpp's own --rpc (llama-completion, mmap, -fit off, -nr: repacking would copy
#     every CPU layer into anonymous memory, OOM-killed under the cap) with -ngl set by
#     hand to a few layer counts around what the server's cap holds; the best
#     is reported as its best hand-set split.
# Also the link's figures (hypura profile --rpc: round trip, upload, product
# speed there) and what the plan predicts for 1, 10 and 25 GbE (estimate
# --rpc-assume with --rpc-link, the same remote budget). Needs root (cgroups).
# Writes bench/results/rpc_vs_local.json (OUT= to write elsewhere).
# Both memories live on one machine here: the "link" is loopback, and the two
# processes share its 2 cores and its memory bandwidth.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
T=${THREADS:-$(nproc)} N=${N_GEN:-16}
CAP_MIB=${CAP_MIB:-1536} REMOTE_MIB=${REMOTE_MIB:-1536} OVER=${SERVER_OVERHEAD_MIB:-160}
KINDS=${KINDS:-"dense moe"}
OUTF=${OUT:-$RESULTS/rpc_vs_local.json}
SERVER="$LLAMA_BIN/ggml-rpc-server"
[[ -x $SERVER ]] || { echo "no $SERVER: the pinned llama.cpp needs GGML_RPC=ON (scripts/setup.sh)"; exit 1; }
[[ -d /sys/fs/cgroup/memory ]] || { echo "needs cgroup v1 memory (root)"; exit 1; }
P="The history of the printing press"
W=$(mktemp -d)
SCG=/sys/fs/cgroup/memory/hypura-bench-rpc-server-$$
SPID=
stop_server() { [[ -n $SPID ]] && { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; SPID=; }; return 0; }
trap 'stop_server; rmdir "$SCG" 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$SCG" && echo $((REMOTE_MIB << 20)) >"$SCG/memory.limit_in_bytes"
# a fresh server (and a fresh cgroup peak) for each run: it holds one client's buffers
start_server() {
  stop_server
  echo 0 >"$SCG/memory.max_usage_in_bytes" 2>/dev/null
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # OMP_WAIT_POLICY=passive: on one machine, a server spinning after its part of a token would take
  # the cores the client computes its part on (the same server for hypura and llama.cpp)
  OMP_WAIT_POLICY=passive sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$SCG" "$SERVER" -H 127.0.0.1 -p "$PORT" -t "$T" \
    >"$W/server.log" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do ss -ltn | grep -q "127.0.0.1:$PORT " && return 0; sleep 0.1; done
  echo "ggml-rpc-server did not start"; cat "$W/server.log"; exit 1
}
server_peak() { echo $(( $(cat "$SCG/memory.max_usage_in_bytes") >> 20 )); }
server_oom() { awk '/oom_kill /{print $2}' "$SCG/memory.oom_control"; }

echo "cap here $CAP_MIB MiB, server cap $REMOTE_MIB MiB (plan budget there $((REMOTE_MIB - OVER)) MiB), $N tokens, $T threads"
start_server
"$BIN/hypura" profile --no-storage --json --rpc "127.0.0.1:$PORT" >"$W/link.json" 2>/dev/null
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["remote"][0]
print("link (loopback): round trip %.3f ms, upload %.2f GB/s; Q8_0 product %.1f GB/s on the server, %.1f GB/s here"
      % (r["rtt_s"] * 1e3, r["upload_gbps"], r["matvec_gbps"], r["local_matvec_gbps"]))' "$W/link.json"

RES=()
for kind in $KINDS; do
  if [[ $kind == moe ]]; then
    M="$MODELS/q3.gguf"
    [[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --arch qwen3moe --dim 2048 --heads 32 --kv-heads 4 --head-dim 128 \
      --ff 6144 --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf --target-size 3.7G --quiet
  else
    M="$MODELS/dense-3g-q4k.gguf"
    [[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k \
      --target-size 3G --seed 5 --quiet
  fi
  # layers and the largest layer's bytes, for llama.cpp's hand-set splits
  read -r NL LAYER_MIB < <("$BIN/hypura" inspect "$M" --json --tensors | python3 -c '
import json, sys
d = json.load(sys.stdin); by = {}
for t in d["tensors"]:
    l = t.get("layer", -1)
    if l >= 0: by[l] = by.get(l, 0) + t["size"]
print(len(by), max(by.values()) / 2**20)')
  FIT=$(python3 -c "import math; print(max(1, math.floor(($REMOTE_MIB - $OVER) / $LAYER_MIB)))")
  echo
  echo "== $kind: $(basename "$M"), $(( $(stat -c %s "$M") >> 20 )) MiB, $NL layers of up to ${LAYER_MIB%.*} MiB"
  hy() { # name, args...
    local name=$1; shift
    drop_caches
    run_capped $((CAP_MIB << 20)) "$W/o-$kind-$name" "$W/e-$kind-$name" "$BIN/hypura" run "$M" -p "$P" -n $N --temp 0 \
      -c 512 -t $T --memory-budget ${CAP_MIB}M --stats-json "$W/s-$kind-$name.json" "$@"
    local tps; tps=$(hypura_json_tps "$W/s-$kind-$name.json")
    echo "hypura $name: exit $RC, $tps tok/s, peak here $((CG_PEAK >> 20)) MiB, oom ${CG_OOM:-0}" \
         "${SPID:+| server peak $(server_peak) MiB, oom $(server_oom)}"
    grep -E "^  remote|^  link|^    layers|^plan:|^  predicted" "$W/e-$kind-$name" | cut -c1-200 | sed 's/^/    /'
    echo "    $(hypura_pred_line "$W/s-$kind-$name.json")"
    [[ $RC == 0 ]] || tail -3 "$W/e-$kind-$name" | sed 's/^/    /'
    local sp=0; [[ -n $SPID ]] && sp=$(server_peak)
    RES+=("{\"model\":\"$kind\",\"run\":\"hypura $name\",\"exit\":$RC,\"tok_s\":$tps,\"pred_tok_s\":$(hypura_json_pred "$W/s-$kind-$name.json"),\"peak_mib\":$((CG_PEAK >> 20)),\"server_peak_mib\":$sp}")
  }
  stop_server
  hy alone
  start_server
  hy rpc --rpc "127.0.0.1:$PORT@$((REMOTE_MIB - OVER))M"
  # where the plan keeps every layer here, what a split would have given: set by hand
  if grep -q "no remote layer" "$W/e-$kind-rpc"; then
    start_server
    HYPURA_RPC_LAYERS=$((FIT - 1)) hy "rpc, $((FIT - 1)) layers set by hand" --rpc "127.0.0.1:$PORT@$((REMOTE_MIB - OVER))M"
  fi
  stop_server
  best=0 best_ngl=
  for ngl in $((FIT - 2)) $FIT $((FIT + 2)); do
    [[ $ngl -ge 1 && $ngl -le $NL ]] || continue
    start_server
    drop_caches
    run_capped $((CAP_MIB << 20)) "$W/lo-$kind-$ngl" "$W/le-$kind-$ngl" timeout 900 "$LLAMA_BIN/llama-completion" -m "$M" \
      -p "$P" -n $N --temp 0 -no-cnv -c 512 -t $T -fit off -nr --rpc "127.0.0.1:$PORT" -ngl $ngl
    tps=$(llama_eval_tps "$W/le-$kind-$ngl"); tps=${tps:-0}
    echo "llama.cpp --rpc -ngl $ngl: exit $RC, $tps tok/s, peak here $((CG_PEAK >> 20)) MiB, oom ${CG_OOM:-0}" \
         "| server peak $(server_peak) MiB, oom $(server_oom)"
    [[ $RC == 0 ]] || grep -iE "error|failed|abort" "$W/le-$kind-$ngl" | tail -2 | sed 's/^/    /'
    RES+=("{\"model\":\"$kind\",\"run\":\"llama.cpp --rpc -ngl $ngl\",\"exit\":$RC,\"tok_s\":$tps,\"peak_mib\":$((CG_PEAK >> 20)),\"server_peak_mib\":$(server_peak)}")
    if [[ $RC == 0 ]] && python3 -c "import sys; sys.exit(0 if $tps > $best else 1)"; then best=$tps best_ngl=$ngl; fi
    stop_server
  done
  echo "llama.cpp's best hand-set split: -ngl ${best_ngl:-none} at $best tok/s"
  # on paper: the same remote budget behind 1, 10 and 25 GbE (remote as fast as this machine, assumed)
  for l in 1gbe 10gbe 25gbe; do
    "$BIN/hypura" estimate "$M" -c 512 --memory-budget ${CAP_MIB}M --rpc-assume $((REMOTE_MIB - OVER))M --rpc-link $l \
      --json 2>/dev/null >"$W/est-$kind-$l.json"
    python3 - "$W/est-$kind-$l.json" "$l" "$kind" <<'PY' | tee -a "$W/paper"
import json, sys
j = json.load(open(sys.argv[1])); r = j["remote"]; d = r["devices"][0]
print(f"  plan on paper, {sys.argv[2]}: {d['layers']} layers remote, {r['pred_tok_s']:.2f} tok/s predicted "
      f"(alone {r['pred_tok_s_local_only']:.2f}; per token local {r['pred_local_s']:.3f} s, remote {r['pred_remote_s']:.3f} s, "
      f"link {r['pred_link_s']*1e3:.2f} ms)")
PY
    RES+=("$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1])); r = j["remote"]
print(json.dumps({"model": sys.argv[3], "run": "plan on paper " + sys.argv[2], "layers_remote": r["devices"][0]["layers"],
                  "pred_tok_s": r["pred_tok_s"], "pred_tok_s_alone": r["pred_tok_s_local_only"]}))' "$W/est-$kind-$l.json" "$l" "$kind")")
  done
done
{
  echo "{\"cap_mib\":$CAP_MIB,\"remote_mib\":$REMOTE_MIB,\"n_gen\":$N,\"threads\":$T,\"link\":$(cat "$W/link.json" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["remote"][0]))'),\"runs\":["
  (IFS=,; echo "${RES[*]}")
  echo "]}"
} | python3 -m json.tool >"$OUTF" && echo "results: $OUTF"
