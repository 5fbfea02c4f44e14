#!/usr/bin/env bash
# Remote tiers keep the math: a run whose last layers live on ggml-rpc-server
# processes (two of them, CPU backend, on 127.0.0.1) gives the resident run's
# logits bit for bit (--no-repack: the servers' CPU buffers are not repacked,
# as a streamed run's are not) and the same text; with the local part resident
# and streamed (dense-FFN and expert-streaming), with the split set by hand and
# chosen by the plan. Also: the plan prints every tier and the prediction.
set -euo pipefail
HY_BIN=$1 LLAMA_BIN=$2 WORK=$3/rpc_identity
source "$(dirname "$0")/rpc_lib.sh"
rpc_require
start_rpc; A=127.0.0.1:$RPC_PORT
start_rpc; B=127.0.0.1:$RPC_PORT
P="Once upon a time, in a land far away"
run() { timeout 120 "$HY_BIN/hypura" run "$@" -p "$P" -n 12 --temp 0 -c 256 -t 2 2>"$WORK/last.err"; }
"$HY_BIN/hypura-mkmodel" -o "$WORK/dense.gguf" --dim 256 --layers 6 --ff 768 --type q8_0 --seed 3 --quiet >/dev/null
"$HY_BIN/hypura-mkmodel" -o "$WORK/moe.gguf" --dim 256 --layers 4 --ff 1024 --experts 8 --top-k 2 --skew 1 \
  --type q8_0 --seed 9 --quiet >/dev/null

# check NAME MODEL SPLIT MODE_WANTED ARGS...: the split run against the model's resident reference
check() {
  local name=$1 m=$2 split=$3 want=$4; shift 4
  local txt
  if [[ -n $split ]]; then
    txt=$(HYPURA_RPC_LAYERS=$split run "$m" --rpc "$A,$B" --plan --dump-logits "$WORK/s.bin" "$@") || {
      bad "$name: the run failed"; cat "$WORK/last.err"; return; }
  else
    txt=$(run "$m" --rpc "$A,$B" --plan --dump-logits "$WORK/s.bin" "$@") || { bad "$name: the run failed"; cat "$WORK/last.err"; return; }
  fi
  grep -q "$want" "$WORK/last.err" || { bad "$name: not $want"; cat "$WORK/last.err"; }
  local nrem
  nrem=$(sed -n 's/.*remote: \([0-9]*\) of [0-9]* layers remote.*/\1/p' "$WORK/last.err")
  [[ -n $nrem && $nrem -gt 0 ]] || { bad "$name: no layer went remote"; grep remote "$WORK/last.err"; return; }
  if cmp -s "$WORK/ref-$(basename "$m").bin" "$WORK/s.bin" && [[ "$txt" == "$(cat "$WORK/ref-$(basename "$m").txt")" ]]; then
    ok "$name: $nrem layers remote, $(stat -c %s "$WORK/s.bin") bytes of logits identical"
  else
    bad "$name: logits or text differ from the resident run"
  fi
}
for m in "$WORK/dense.gguf" "$WORK/moe.gguf"; do
  run "$m" --no-repack --dump-logits "$WORK/ref-$(basename "$m").bin" >"$WORK/ref-$(basename "$m").txt"
  grep -q full-resident "$WORK/last.err" || true
done
check "dense, resident here, 2+2 layers on two servers" "$WORK/dense.gguf" 2,2 full-resident --no-repack
check "dense, streamed here, 2+1 layers on two servers" "$WORK/dense.gguf" 2,1 dense-FFN-streaming --mode stream --lookahead 1
check "dense, one layer on the second server only" "$WORK/dense.gguf" 0,1 full-resident --no-repack
check "MoE, expert-streaming here, 1+1 layers on two servers" "$WORK/moe.gguf" 1,1 expert-streaming --mode stream
check "MoE, resident here, 2+1 layers on two servers" "$WORK/moe.gguf" 2,1 full-resident --no-repack
# the plan's own choice: a budget this machine alone cannot run the model in
# (a model whose per-layer weights weigh against the fixed costs)
m2=$WORK/dense2.gguf
"$HY_BIN/hypura-mkmodel" -o "$m2" --dim 512 --layers 8 --ff 2048 --type q8_0 --seed 5 --quiet >/dev/null
run "$m2" --no-repack --dump-logits "$WORK/ref-dense2.gguf.bin" >"$WORK/ref-dense2.gguf.txt"
min=$("$HY_BIN/hypura" estimate "$m2" -c 256 2>&1 | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
[[ -n $min ]] || { bad "no minimum budget in estimate's output"; exit 1; }
budget=$(( ${min%.*} - 8 ))M
if timeout 60 "$HY_BIN/hypura" run "$m2" -p x -n 1 -c 256 --memory-budget "$budget" >/dev/null 2>"$WORK/alone.err"; then
  bad "the model ran alone under $budget (the minimum is ${min} MiB)"
else
  ok "alone, $budget is refused: $(tail -1 "$WORK/alone.err" | cut -c1-90)"
fi
check "dense, the plan's own split under a $budget budget" "$m2" "" "layers remote" --memory-budget "$budget" --no-repack
grep -q "this machine alone cannot run it" "$WORK/last.err" && ok "the plan says why" || bad "the plan does not say why it split"
# estimate: every tier and the prediction, as JSON too
timeout 60 "$HY_BIN/hypura" estimate "$WORK/dense.gguf" -c 256 --rpc "$A,$B" --json >"$WORK/est.json" 2>"$WORK/est.err"
if python3 - "$WORK/est.json" "$A" "$B" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); r = j["remote"]
eps = [d["endpoint"] for d in r["devices"]]
assert eps == sys.argv[2:4], eps
for d in r["devices"]:
    assert d["mem_total"] > 0 and d["rtt_s"] > 0 and d["upload_gbps"] > 0 and d["matvec_gbps"] > 0, d
assert r["pred_tok_s"] > 0 and r["link_rtt_s"] > 0 and not r["link_assumed"], r
assert j["prediction"]["tok_s"] == r["pred_tok_s"], (j["prediction"]["tok_s"], r["pred_tok_s"])
print(f"  {len(eps)} devices, rtt {r['link_rtt_s']*1e3:.3f} ms, {r['link_gbps']:.2f} GB/s, {r['pred_tok_s']:.1f} tok/s predicted")
PY
then ok "estimate --json lists both devices, the measured link and the prediction"
else bad "estimate --json"; cat "$WORK/est.err"; fi
# profile lists each remote device and measures the link
if timeout 60 "$HY_BIN/hypura" profile --no-storage --quick --json --rpc "$A,$B" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["remote"]
assert len(r) == 2 and all(d["network"] == "loopback" and d["mem_total"] > 0 and d["mem_free"] > 0 and d["rtt_s"] > 0
                           and d["upload_gbps"] > 0 and d["matvec_gbps"] > 0 for d in r), r
for d in r: print("  %s %s: rtt %.3f ms, %.2f GB/s up" % (d["endpoint"], d["device"], d["rtt_s"] * 1e3, d["upload_gbps"]))'
then ok "profile --rpc lists both devices with the link's figures"
else bad "profile --rpc"; fi
# what-ifs on paper: a slower link predicts less
for l in 1gbe 10gbe 25gbe; do
  HYPURA_RPC_LAYERS=3 timeout 60 "$HY_BIN/hypura" estimate "$WORK/dense.gguf" -c 256 --rpc-assume 1G --rpc-link $l --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["remote"]["pred_tok_s"])' >"$WORK/pred-$l" || bad "estimate --rpc-assume --rpc-link $l"
done
if python3 -c 'import sys; a,b,c=(float(open(f"'"$WORK"'/pred-{l}").read()) for l in ("1gbe","10gbe","25gbe")); sys.exit(0 if 0<a<b<c else 1)'; then
  ok "predicted tok/s grows with the link: $(cat "$WORK/pred-1gbe") < $(cat "$WORK/pred-10gbe") < $(cat "$WORK/pred-25gbe")"
else bad "predictions by link: $(cat "$WORK"/pred-*)"; fi
exit $fail
