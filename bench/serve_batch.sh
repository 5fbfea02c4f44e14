#!/usr/bin/env bash
# Issue 13: continuous batching in `hypura serve`. A ~3 GB dense Q4_K model
# (MODEL=... for another, a MoE say) under a 1.5 GiB cgroup cap (CAP_MIB); for
# 1, 2, 4, 8, 16 (CLIENTS) concurrent streaming
# clients, each sending REQS requests of N_GEN tokens one after another
# (OpenAI /v1/completions, temperature 0, distinct prompts): aggregate tok/s
# and time to first token p50/p95, for `hypura serve --parallel C` and
# llama-server -np C (the pinned build, mmap, no repack: its defaults are
# OOM-killed under the cap) in the same run, the same cap, context and
# threads. hypura's decode steps by how many sequences they generated for
# (/api/ps parallel.steps: seconds, bytes read, stalls, and a MoE's routed
# experts per layer: how the union grows with N) go into the results. Then the
# first IDENTITY_N (8) prompts served alone (a fresh server, one at a time)
# against every batched round's answers to them: how many differ.
# Needs root (cgroups, drop_caches). Writes bench/results/serve_batch.json (OUT=...).
#
# llama-server is not in the pinned build's default targets; build it once:
#   cmake -S $LLAMA_CPP_DIR -B $LLAMA_CPP_DIR/build-server -DLLAMA_BUILD_SERVER=ON \
#     -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=ON \
#     -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON && \
#   cmake --build $LLAMA_CPP_DIR/build-server --target llama-server -j2
# (LLAMA_SERVER=path overrides; without it that side is skipped.)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/scripts/serve_lib.sh"
T=${THREADS:-$(nproc)} NGEN=${N_GEN:-24} REQS=${REQS:-1}
CLIENTS=${CLIENTS:-"1 2 4 8 16"}
IDENTITY_N=${IDENTITY_N:-8}
CAP_MIB=${CAP_MIB:-1536}; CAP=$((CAP_MIB << 20))
SHARE=${SHARE:-64} # context per sequence: prompt (~15 tokens) + N_GEN fit
IDENTITY=${IDENTITY:-1}
# HYPURA_ARGS: more `hypura serve` flags for every hypura round (default --repack: the
# weights a streamed plan keeps resident use ggml's repacked kernels; "" for plain ones)
read -r -a HY_ARGS <<<"${HYPURA_ARGS---repack}"
# LLAMA_MAX_CLIENTS=N: llama-server only for rounds of at most N clients (it is the slow side)
OUT=${OUT:-$RESULTS/serve_batch.json}
M=${MODEL:-$MODELS/dense-3g-q4k.gguf}
[[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k --target-size 3G --seed 5 --quiet
LLAMA_SRC=$(sed -n 's/^LLAMA_CPP_DIR:PATH=//p' "${HYPURA_BUILD_DIR:-$ROOT/build}/CMakeCache.txt")
LLAMA_SERVER=${LLAMA_SERVER:-$LLAMA_SRC/build-server/bin/llama-server}
[[ -x $LLAMA_SERVER ]] || { echo "no llama-server at $LLAMA_SERVER (see the header to build it): hypura only"; LLAMA_SERVER=; }
W=$(mktemp -d)
trap '[[ ${KEEP:-0} == 1 ]] && echo "kept $W" || rm -rf "$W"' EXIT
echo "model $(($(stat -c %s "$M") >> 20)) MiB, cap $CAP_MIB MiB, $T threads, $NGEN tokens x $REQS requests per client, context $SHARE per sequence, hypura serve ${HY_ARGS[*]}"

# cg_start LOG cmd...: cmd in a fresh memory cgroup (v1 or v2), in the background: sets CG, SPID
cg_start() {
  local log=$1; shift
  if [[ -d /sys/fs/cgroup/memory ]]; then
    CG=/sys/fs/cgroup/memory/hypura-serve-$$-$RANDOM
    mkdir "$CG" && echo "$CAP" >"$CG/memory.limit_in_bytes" || return 1
  else
    CG=/sys/fs/cgroup/hypura-serve-$$-$RANDOM
    echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    mkdir "$CG" && echo "$CAP" >"$CG/memory.max" || return 1
    echo 0 >"$CG/memory.swap.max" 2>/dev/null
  fi
  : >"$log" # before the server starts: its own redirection truncates the log only once it runs
  sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" "$@" >"$log" 2>&1 &
  SPID=$!
}
# cg_stop: SIGTERM (SIGKILL after 20 s); sets PEAK (bytes), OOM (kills)
cg_stop() {
  kill -TERM "$SPID" 2>/dev/null
  local i
  for i in $(seq 200); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SPID" 2>/dev/null
  wait "$SPID" 2>/dev/null
  if [[ -f $CG/memory.max_usage_in_bytes ]]; then
    PEAK=$(cat "$CG/memory.max_usage_in_bytes"); OOM=$(awk '/oom_kill /{print $2}' "$CG/memory.oom_control")
  else
    PEAK=$(cat "$CG/memory.peak" 2>/dev/null || echo 0); OOM=$(awk '/^oom_kill /{print $2}' "$CG/memory.events")
  fi
  rmdir "$CG" 2>/dev/null || true
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
warm() { # one token, not measured: the first pass after a cold start
  curl -s -m 600 "http://127.0.0.1:$1/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"model","prompt":"Hello","max_tokens":1,"temperature":0}' >/dev/null
}
# round SIDE C NAME [extra server args]: start the server under the cap, warm it, C clients,
# stop; the client's JSON (with the cgroup's peak) goes to $W/NAME.json, the log to $W/NAME.log
round() {
  local side=$1 c=$2 name=$3; shift 3
  local ctx=$((SHARE * c)) port
  drop_caches
  if [[ $side == hypura ]]; then
    cg_start "$W/$name.log" "$BIN/hypura" serve "$M" --port 0 -t "$T" --parallel "$c" --ctx "$ctx" \
      --memory-budget "${CAP_MIB}M" --name model "$@"
    port=$(serve_port "$W/$name.log" "$SPID" 1200) || { tail -5 "$W/$name.log" >&2; cg_stop; echo '{}' >"$W/$name.json"; return; }
  else
    port=$(free_port)
    cg_start "$W/$name.log" "$LLAMA_SERVER" -m "$M" --port "$port" -t "$T" -np "$c" -c "$ctx" -nr --no-warmup "$@"
    local i
    for i in $(seq 1200); do
      [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health") == 200 ]] && break
      kill -0 "$SPID" 2>/dev/null || break
      sleep 0.5
    done
  fi
  warm "$port"
  python3 "$ROOT/bench/serve_client.py" --port "$port" --clients "$c" --requests "$REQS" --tokens "$NGEN" "${CLIENT_ARGS[@]}" \
    >"$W/$name.json"
  echo '[]' >"$W/$name.steps.json"
  [[ $side == hypura ]] && curl -s -m 30 "http://127.0.0.1:$port/api/ps" |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["models"][0]["parallel"]["steps"]))' >"$W/$name.steps.json"
  cg_stop
  python3 - "$W/$name.json" "$PEAK" "${OOM:-0}" "$W/$name.steps.json" <<'PY'
import json, sys
p, peak, oom = sys.argv[1], int(sys.argv[2]), int(sys.argv[3] or 0)
try: o = json.load(open(p))
except Exception: o = {}
o["cg_peak"], o["oom_kills"] = peak, oom
try: o["steps"] = json.load(open(sys.argv[4]))
except Exception: o["steps"] = []
json.dump(o, open(p, "w"))
PY
}

CLIENT_ARGS=()
for c in $CLIENTS; do
  for side in hypura ${LLAMA_SERVER:+llama}; do
    [[ $side == llama && $c -gt ${LLAMA_MAX_CLIENTS:-1000} ]] && continue
    if [[ $side == hypura ]]; then round hypura "$c" "hypura-$c" "${HY_ARGS[@]}"; else round llama "$c" "llama-$c"; fi
    python3 - "$W/$side-$c.json" "$side" "$c" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])) if sys.argv[1] else {}
side, c = sys.argv[2], sys.argv[3]
f = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"
print(f"{side:7s} {c:>2s} clients: {f(o.get('tok_s'))} tok/s aggregate ({o.get('tokens', 0)} tokens, {o.get('ok', 0)}/{o.get('requests', 0)} ok, "
      f"{f(o.get('wall_s'))} s; after the first tokens {f(o.get('gen_tok_s'))} tok/s), "
      f"TTFT p50 {f(o.get('ttft_p50'))} s p95 {f(o.get('ttft_p95'))} s, cgroup peak {o.get('cg_peak', 0) >> 20} MiB, "
      f"oom kills {o.get('oom_kills', 0)}" + (f", errors {o['errors']}" if o.get("errors") else ""))
PY
  done
  grep -o 'slot [0-9]* of [0-9]* ([0-9]* busy)' "$W/hypura-$c.log" | sed 's/.*(\([0-9]*\) busy)/\1/' | sort -n | tail -1 |
    sed "s/^/hypura  $c clients: most slots busy when a request joined: /"
  python3 - "$W/hypura-$c.json" "$c" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
parts = []
for st in o.get("steps", []):
    n, k = st["generating"], st["steps"]
    if not k: continue
    t = f"{'prompt steps' if n == 0 else f'{n} generating'}: {k} x {st['seconds'] / k:.2f} s, {st['read_bytes'] / k / 2**20:.0f} MiB read, stalls {st['stall_seconds'] / k:.2f} s"
    if "expert_union_per_layer" in st: t += f", experts {st['expert_union_per_layer']:.1f}/layer"
    parts.append(t)
if parts: print(f"hypura  {sys.argv[2]} clients: steps by sequences: " + "; ".join(parts))
PY
done

# identity: the first IDENTITY_N prompts (every round numbers its prompts from 0), one at
# a time, on a fresh server without the prompt cache
cmax=$(echo $CLIENTS | tr ' ' '\n' | sort -n | tail -1)
if [[ $IDENTITY == 1 && -f $W/hypura-$cmax.json ]]; then
  REQS_SAVE=$REQS; REQS=$(( REQS * cmax < IDENTITY_N ? REQS * cmax : IDENTITY_N ))
  round hypura 1 alone --no-prompt-cache "${HY_ARGS[@]}"
  REQS=$REQS_SAVE
fi

HY_ARGS_STR="${HY_ARGS[*]}" python3 - "$W" "$CLIENTS" "$OUT" "$M" "$CAP_MIB" "$NGEN" "$REQS" "$SHARE" "$T" <<'PY'
import json, os, sys
w, clients, out, model, cap, ngen, reqs, share, threads = sys.argv[1:10]
clients = [int(c) for c in clients.split()]
def load(p):
    try: return json.load(open(p))
    except Exception: return None
res = {"model": os.path.basename(model), "hypura_args": os.environ.get("HY_ARGS_STR", ""), "cap_mib": int(cap), "tokens_per_request": int(ngen), "requests_per_client": int(reqs),
       "context_per_sequence": int(share), "threads": int(threads), "rounds": {}}
for c in clients:
    res["rounds"][c] = {s: load(f"{w}/{s}-{c}.json") for s in ("hypura", "llama")}
h1 = (res["rounds"].get(1, {}).get("hypura") or {}).get("tok_s")
for c in clients:
    h, l = res["rounds"][c]["hypura"], res["rounds"][c]["llama"]
    line = f"{c:>2d} clients: hypura {h['tok_s']:.2f} tok/s" if h else f"{c:>2d} clients: hypura -"
    if h and h1: line += f" = {h['tok_s'] / h1:.2f}x its single client"
    if h and l and l.get("tok_s"): line += f"; llama-server {l['tok_s']:.2f} tok/s, hypura/llama-server = {h['tok_s'] / l['tok_s']:.2f}x"
    print(line)
    g1 = (res["rounds"].get(1, {}).get("hypura") or {}).get("gen_tok_s")
    if h and h.get("gen_tok_s"):
        line = f"    after the first tokens: hypura {h['gen_tok_s']:.2f} tok/s"
        if g1: line += f" = {h['gen_tok_s'] / g1:.2f}x its single client"
        if l and l.get("gen_tok_s"): line += f"; llama-server {l['gen_tok_s']:.2f} tok/s, ratio {h['gen_tok_s'] / l['gen_tok_s']:.2f}x"
        print(line)
alone = load(f"{w}/alone.json")
res["identity"] = {}
for c in clients:
    batched = load(f"{w}/hypura-{c}.json")
    if c < 2 or not alone or not batched: continue
    bt, at = batched.get("texts", {}), alone.get("texts", {})
    # the alone server numbered the same prompts from 0 as well
    keys = [k for k in bt if k in at]
    differ = [k for k in keys if bt[k] != at[k]]
    res["identity"][c] = {"compared": len(keys), "differ": len(differ), "differing": differ}
    print(f"identity: {len(differ)} of {len(keys)} answers of the {c}-client round differ from the same prompt served alone")
for c in clients:
    for s in ("hypura", "llama"):
        if res["rounds"][c][s]: res["rounds"][c][s].pop("texts", None)
json.dump(res, open(out, "w"), indent=1)
print(f"results: {out}")
PY
