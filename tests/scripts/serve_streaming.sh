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
  kill -TERM $pid; wait $pid; rc=$?
  ref=$("$HY_BIN/hypura" run "$WORK/$name.gguf" -p "Far over the misty mountains" -n 12 --temp 0 -c 256 --mode stream 2>/dev/null)
  grep -q "$want" "$WORK/$name.log" || { echo "$name: server did not plan $want"; fail=1; }
  [[ $rc -eq 0 ]] || { echo "$name: server exit $rc on SIGTERM"; fail=1; }
  if [[ -n "$got" && "$got" == "$ref" ]]; then echo "ok $name ($want): [$got]"; else echo "DIFFER $name: serve [$got] run [$ref]"; fail=1; fi
done
exit $fail
