#!/usr/bin/env bash
# `hypura serve --repack` on a streamed dense Q4_K model: the weights the plan
# keeps resident use ggml's repacked kernels, which compute rows in groups of 4
# (a GEMM) and the rest one by one (a GEMV), rounding differently. The batcher
# pads every step with throwaway rows to a multiple of 4 (hy_batch.h, pad_rows),
# so a lone request takes the GEMM too. Asserted: 8 concurrent greedy requests
# all complete with their token count, the steps /api/ps reports are padded,
# and the same prompts served alone (a --parallel 1 server, padded too) are
# complete. Measured and printed, not asserted: how many of the 8 batched
# answers differ from alone (ggml's AVX-512 GEMM takes 16 rows at a time and
# the 4-row rest with 256-bit code, so a row's path can still depend on where
# it sits in a large step: README, "Batched answers equal answers alone").
# usage: serve_repack.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/serve_repack
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 HYPURA_NO_PERSIST_STATS=1 XDG_CACHE_HOME=$WORK/cache
source "$(dirname "$0")/serve_lib.sh"
fail=0
M=$WORK/m.gguf
"$HY_BIN/hypura-mkmodel" -o "$M" --dim 512 --layers 4 --ff 1536 --type q4_k --seed 11 --quiet >/dev/null
min=$("$HY_BIN/hypura" estimate "$M" -c 512 --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
[[ -n $min ]] || { echo "no minimum budget in the plan"; exit 1; }
SCHED=(--mode stream --memory-budget "$((${min%.*} + 8))M" --repack -c 512 -t 2)
N=16
# serve PARALLEL NAME: start, 8 prompts (concurrently when PARALLEL > 1), answers in $WORK/NAME.i, steps in NAME.ps
serve() {
  local par=$1 name=$2 pid port i c=()
  : >"$WORK/$name.log"
  "$HY_BIN/hypura" serve "$M" --port 0 --parallel "$par" "${SCHED[@]}" >"$WORK/$name.log" 2>&1 &
  pid=$!
  port=$(serve_port "$WORK/$name.log" $pid 300) || { cat "$WORK/$name.log"; echo "FAIL $name: no server"; kill $pid; fail=1; return; }
  grep -q "dense-FFN-streaming" "$WORK/$name.log" || { echo "FAIL $name: did not stream"; fail=1; }
  for i in 0 1 2 3 4 5 6 7; do
    curl -s -m 120 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
      -d "{\"model\":\"m\",\"prompt\":\"Request $i: $((i * 7919)) and then\",\"max_tokens\":$N,\"temperature\":0}" \
      >"$WORK/$name.$i" &
    c+=($!)
    [[ $par == 1 ]] && wait $!
  done
  wait "${c[@]}"
  curl -s -m 30 "http://127.0.0.1:$port/api/ps" >"$WORK/$name.ps"
  kill -TERM $pid; wait $pid || { echo "FAIL $name: server exit $?"; fail=1; }
}
serve 8 batched
serve 1 alone
python3 - "$WORK" "$N" <<'PY' || fail=1
import json, sys
w, n = sys.argv[1], int(sys.argv[2])
bad = 0
def text(name, i):
    global bad
    try:
        o = json.load(open(f"{w}/{name}.{i}"))
        c = o["choices"][0]
        if o["usage"]["completion_tokens"] != n:
            print(f"FAIL {name} {i}: {o['usage']['completion_tokens']} tokens, not {n}"); bad = 1
        return c["text"]
    except Exception as e:
        print(f"FAIL {name} {i}: {e}"); bad = 1; return None
b = [text("batched", i) for i in range(8)]
a = [text("alone", i) for i in range(8)]
differ = sum(1 for x, y in zip(a, b) if x is None or x != y)
print(f"measured: {differ} of 8 batched answers differ from alone (--repack, streamed)")
for name in ("batched", "alone"):
    ps = json.load(open(f"{w}/{name}.ps"))["models"][0]["parallel"]
    rows = [s for s in ps.get("steps", []) if s.get("steps")]
    print(f"ok {name}: " + ", ".join(f"{s['generating']} generating x {s['steps']}" for s in rows))
sys.exit(bad)
PY
exit $fail
