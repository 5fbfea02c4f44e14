#!/usr/bin/env bash
# Soak (issue #7; not part of CI): `hypura serve` on a synthetic model larger
# than its memory budget, in dense-FFN-streaming (or expert-streaming), under
# CLIENTS concurrent streaming clients (the `ollama` npm client) for DURATION
# seconds. Samples the server's RSS every few seconds. Every response must be
# complete and equal to `hypura run`'s greedy text for its prompt. Prints
# requests completed, errors, incomplete responses, RSS min/max/final against
# the budget and tok/s; JSON summary in bench/results/soak.json. Exit 1 on any
# error or incomplete response, RSS above the budget, or a server that died.
# The server generates PARALLEL requests together (continuous batching; the
# others queue). Requests that started before the deadline are finished, so
# the run takes a little longer.
#
# usage: bench/soak.sh            (env: DURATION=600 CLIENTS=32 KIND=dense|experts
#                                   NUM_PREDICT=16 BUDGET=auto PARALLEL=8 SERVE_CTX=512 HYPURA_BUILD_DIR=build)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../tests/scripts/serve_lib.sh"
DURATION=${DURATION:-600} CLIENTS=${CLIENTS:-32} KIND=${KIND:-dense} NUM_PREDICT=${NUM_PREDICT:-16} PARALLEL=${PARALLEL:-8}
WORK=$(mktemp -d /tmp/hypura-soak.XXXXXX)
trap 'kill $spid 2>/dev/null; kill $mon 2>/dev/null; rm -rf "$WORK"' EXIT
export HYPURA_NO_STORAGE_PROFILE=1 HYPURA_NO_PERSIST_STATS=1 XDG_CACHE_HOME=$WORK/cache
command -v node >/dev/null && [[ -d $ROOT/tests/node/node_modules/ollama ]] ||
  { echo "soak: node and tests/node/node_modules/ollama are needed (scripts/setup.sh installs them)"; exit 1; }

M=$MODELS/soak-$KIND.gguf
if [[ ! -s $M ]]; then
  if [[ $KIND == experts ]]; then
    "$BIN/hypura-mkmodel" -o "$M" --dim 768 --layers 8 --ff 2048 --experts 8 --top-k 2 --skew 1 --type q8_0 --seed 5 --quiet
  else
    "$BIN/hypura-mkmodel" -o "$M" --dim 1024 --layers 16 --ff 5632 --type q8_0 --seed 5 --quiet
  fi || { echo "soak: cannot make the model"; exit 1; }
fi
size=$(stat -c %s "$M")
CTX=512
min=$("$BIN/hypura" estimate "$M" -c $CTX --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
[[ -n $min ]] || { echo "soak: no minimum budget in the plan"; exit 1; }
# a budget under the model's size: halfway between the plan's minimum and the file
if [[ ${BUDGET:-auto} == auto ]]; then BUDGET_B=$(( (${min%.*} * 1048576 + size) / 2 )); else BUDGET_B=$(python3 -c "
import re,sys; m=re.fullmatch(r'([0-9.]+)([KMG]?)', '$BUDGET'); print(int(float(m[1]) * {'':1,'K':1<<10,'M':1<<20,'G':1<<30}[m[2]]))"); fi
[[ $BUDGET_B -lt $size ]] || { echo "soak: the budget ($BUDGET_B) is not under the model's size ($size)"; exit 1; }
SCHED=(--mode stream --memory-budget "$BUDGET_B" -c $CTX -t 2)
echo "soak: model $M ($((size >> 20)) MiB), budget $((BUDGET_B >> 20)) MiB (plan minimum ${min} MiB), $CLIENTS clients, ${DURATION} s"

# reference texts: `hypura run`, greedy, raw prompt, same budget
prompts=("Once upon a time" "The quick brown fox" "In the beginning the universe was" "Here is a list of fruits:")
refs="["
for p in "${prompts[@]}"; do
  t=$(timeout 300 "$BIN/hypura" run "$M" -p "$p" -n "$NUM_PREDICT" --temp 0 "${SCHED[@]}" 2>"$WORK/ref.err") ||
    { cat "$WORK/ref.err"; echo "soak: reference run failed"; exit 1; }
  refs+=$(python3 -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "text": sys.argv[2]}))' "$p" "$t"),
done
printf '%s' "${refs%,}]" >"$WORK/refs.json"

: >"$WORK/serve.log" # before the server starts: its own redirection truncates the log only once it runs
HYPURA_BATCH_TRACE=1 "$BIN/hypura" serve "$M" --port 0 --parallel "$PARALLEL" "${SCHED[@]}" ${SERVE_CTX:+-c "$SERVE_CTX"} >"$WORK/serve.log" 2>&1 &
spid=$!
port=$(serve_port "$WORK/serve.log" $spid 600) || { cat "$WORK/serve.log"; echo "soak: the server did not start"; exit 1; }
grep -m1 "^plan:" "$WORK/serve.log"

# RSS every 2 s (VmRSS of the server process)
(while kill -0 $spid 2>/dev/null; do
  echo "$(date +%s.%N) $(awk '/^VmRSS:/{print $2 * 1024}' /proc/$spid/status 2>/dev/null)"
  sleep 2
done) >"$WORK/rss.txt" &
mon=$!

node "$ROOT/bench/soak_client.mjs" "http://127.0.0.1:$port" "$(basename "$M" .gguf)" "$CLIENTS" "$DURATION" \
  "$NUM_PREDICT" "$WORK/refs.json" >"$WORK/clients.json"
crc=$?
alive=1
kill -0 $spid 2>/dev/null || alive=0
final=$(awk '/^VmRSS:/{print $2 * 1024}' /proc/$spid/status 2>/dev/null || echo 0)
kill -TERM $spid 2>/dev/null
wait $spid
src=$?
kill $mon 2>/dev/null
wait $mon 2>/dev/null
gc=$(grep -c 'grave freed for room' "$WORK/serve.log")
echo "soak: the batcher's holding sequence was freed for room $gc times (a full cache: the requests running then may differ from run)"

python3 - "$WORK/clients.json" "$WORK/rss.txt" "$BUDGET_B" "$size" "$final" "$alive" "$src" "$crc" \
  "$RESULTS/soak.json" "$KIND" "$M" "$(grep -m1 '^plan:' "$WORK/serve.log")" <<'EOF'
import json, sys
cj, rssf, budget, size, final, alive, src, crc, out, kind, model, plan = sys.argv[1:13]
budget, size, final = int(budget), int(size), int(final or 0)
try:
    c = json.load(open(cj))
except Exception as e:
    c = {"requests": 0, "completed": 0, "errors": 1, "incomplete": 0, "tok_s": 0, "samples": [f"client output unreadable: {e}"]}
rss = [int(l.split()[1]) for l in open(rssf) if len(l.split()) == 2]
mib = lambda b: b / 1048576
r = {"kind": kind, "model": model, "model_bytes": size, "budget_bytes": budget, "plan": plan,
     "rss_samples": len(rss), "rss_min": min(rss, default=0), "rss_max": max(rss, default=0), "rss_final": final,
     "server_alive_at_end": alive == "1", "server_exit_on_sigterm": int(src), **c}
fails = []
if c["errors"]: fails.append(f"{c['errors']} errors")
if c["incomplete"]: fails.append(f"{c['incomplete']} incomplete responses")
if not c["completed"]: fails.append("no request completed")
if r["rss_max"] > budget: fails.append(f"RSS {mib(r['rss_max']):.1f} MiB above the budget {mib(budget):.1f} MiB")
if alive != "1": fails.append("the server died")
if int(src) != 0: fails.append(f"server exit {src} on SIGTERM")
r["ok"] = not fails
r["failures"] = fails
json.dump(r, open(out, "w"), indent=1)
print(f"soak: {c.get('clients')} clients, {c.get('seconds', 0):.0f} s: {c['requests']} requests, {c['completed']} completed, "
      f"{c['errors']} errors, {c['incomplete']} incomplete")
print(f"soak: RSS min {mib(r['rss_min']):.1f} / max {mib(r['rss_max']):.1f} / final {mib(final):.1f} MiB "
      f"({len(rss)} samples) vs budget {mib(budget):.1f} MiB (model {mib(size):.1f} MiB)")
lat = c.get("latency_ms", {})
print(f"soak: {c['tok_s']:.2f} tok/s generated in total; request latency p50 {lat.get('p50', 0) / 1000:.1f} s, "
      f"p95 {lat.get('p95', 0) / 1000:.1f} s, max {lat.get('max', 0) / 1000:.1f} s (queued behind the others)")
for s in c.get("samples", []): print("  sample:", s)
print("soak:", "OK" if not fails else "FAILED: " + "; ".join(fails), f"(summary in {out})")
sys.exit(0 if not fails else 1)
EOF
