#!/usr/bin/env bash
# hypura serve works in every streaming mode: dense-FFN-streaming and
# expert-streaming servers answer /api/generate (raw, greedy) with exactly the
# text `hypura run` gives for the same file and budget flags.
set -uo pipefail
HY_BIN=$1 WORK=$2/serve_streaming
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data
. "$(dirname "$0")/serve_lib.sh"
fail=0
"$HY_BIN/hypura-mkmodel" -o "$WORK/dense.gguf" --dim 256 --layers 4 --ff 768 --seed 4 --quiet >/dev/null
"$HY_BIN/hypura-mkmodel" -o "$WORK/moe.gguf" --dim 256 --layers 4 --ff 512 --experts 8 --top-k 2 --skew 1 --seed 4 --quiet >/dev/null
for name in dense moe; do
  want=dense-FFN-streaming; [[ $name == moe ]] && want=expert-streaming
  : >"$WORK/$name.log" # before the server starts: its own redirection truncates the log only once it runs
  "$HY_BIN/hypura" serve "$WORK/$name.gguf" --port 0 -c 256 --mode stream -q >"$WORK/$name.log" 2>&1 &
  pid=$!
  port=$(serve_port "$WORK/$name.log" $pid 100) || { echo "$name: server did not start"; cat "$WORK/$name.log"; kill $pid; exit 1; }
  got=$(curl -s "http://127.0.0.1:$port/api/generate" \
        -d '{"model":"'$name'","prompt":"Far over the misty mountains","raw":true,"stream":false,"options":{"temperature":0,"num_predict":12}}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["response"])')
  # /api/ps counts the decode steps by how many sequences they generated for: this one
  # request's steps read the streamed weights (dense), or exactly top-k = 2 routed experts
  # per layer (one token a step)
  steps=$(curl -s "http://127.0.0.1:$port/api/ps" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["models"][0]["parallel"]["steps"]))')
  python3 - "$name" "$steps" <<'PY' || fail=1
import json, sys
name, steps = sys.argv[1], json.loads(sys.argv[2])
one = [s for s in steps if s["generating"] == 1]
ok = len(one) == 1 and one[0]["steps"] >= 10 and one[0]["read_bytes"] > 0
if name == "moe": ok = ok and abs(one[0].get("expert_union_per_layer", 0) - 2) < 1e-9
else: ok = ok and "expert_union_per_layer" not in one[0]
print(("ok" if ok else "WRONG") + f" {name}: steps by sequences {steps}")
sys.exit(0 if ok else 1)
PY
  kill -TERM $pid; wait $pid; rc=$?
  ref=$("$HY_BIN/hypura" run "$WORK/$name.gguf" -p "Far over the misty mountains" -n 12 --temp 0 -c 256 --mode stream 2>/dev/null)
  grep -q "$want" "$WORK/$name.log" || { echo "$name: server did not plan $want"; fail=1; }
  [[ $rc -eq 0 ]] || { echo "$name: server exit $rc on SIGTERM"; fail=1; }
  if [[ -n "$got" && "$got" == "$ref" ]]; then echo "ok $name ($want): [$got]"; else echo "DIFFER $name: serve [$got] run [$ref]"; fail=1; fi
done

# a MoE's steps for several sequences read the union of their routed experts:
# between top-k and min(n x top-k, experts) per layer
: >"$WORK/union.log"
"$HY_BIN/hypura" serve "$WORK/moe.gguf" --port 0 -c 256 --parallel 4 --mode stream -q >"$WORK/union.log" 2>&1 &
pid=$!
port=$(serve_port "$WORK/union.log" $pid 100) || { echo "union: server did not start"; cat "$WORK/union.log"; kill $pid; exit 1; }
for i in 1 2 3 4; do
  curl -s "http://127.0.0.1:$port/api/generate" -o /dev/null \
    -d '{"model":"moe","prompt":"Request '$i' of four","raw":true,"stream":false,"options":{"temperature":0,"num_predict":64}}' &
done
wait $(jobs -p | grep -v "^$pid$")
steps=$(curl -s "http://127.0.0.1:$port/api/ps" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["models"][0]["parallel"]["steps"]))')
kill -TERM $pid; wait $pid
python3 - "$steps" <<'PY' || fail=1
import json, sys
steps = json.loads(sys.argv[1])
gen = [s for s in steps if s["generating"] >= 1]
ok = any(s["generating"] >= 2 for s in gen)
for s in gen:
    n, u = s["generating"], s["expert_union_per_layer"]
    ok = ok and 2 - 1e-9 <= u <= min(2 * n, 8) + 1e-9
print(("ok" if ok else "WRONG") + " moe, 4 requests at once: routed experts per layer by sequences " +
      ", ".join(f"{s['generating']}: {s['expert_union_per_layer']:.2f}" for s in gen))
sys.exit(0 if ok else 1)
PY
exit $fail
