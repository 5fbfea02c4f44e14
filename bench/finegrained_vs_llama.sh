#!/usr/bin/env bash
# Issue 12: fine-grained MoE models (today's layouts) under memory caps of about
# 0.55x and 0.4x of the file, cold page cache, same threads:
#   llama.cpp mmap --no-repack (its best case when the cap is below the file)
#   against hypura's automatic plan, first run (no routing statistics yet) and
#   second run (the statistics the first one kept, page cache dropped again):
#   generation tok/s and the ratio, hypura's predicted tok/s, cache hit rate
#   against the share of selections the cache's slots can cover (the hot set
#   that fits, from the kept statistics), bytes read per token with the cache
#   and without it (the routed slices), prefetch accuracy; then prefill of a
#   ~512-token prompt under the larger cap, hypura vs llama.cpp.
# Models (made here once, ~10 s each): a Qwen3-30B-A3B-shaped qwen3moe (128
# experts, top-8, expert FFN 768, hidden 2048, Q4_K) and a gpt-oss-20b-shaped
# gpt-oss (32 experts, top-4, MXFP4 experts with biases, sinks), ~3.7 GB each,
# zipf routing. MODELS="q3 oss" picks; CAPS="0.55 0.40"; N_GEN=32.
# Needs root (cgroup v1 or v2). Writes bench/results/finegrained_vs_llama.json.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
T=${THREADS:-$(nproc)} N=${N_GEN:-32}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
P="The history of the printing press begins in"
LONG=$(python3 -c "import random; random.seed(1); w='the of and to in is was for on that with as by at from his her an which or were are this be had not but they have one their all we can more there when been has if who its other also into so some would only time them than these may new over'.split(); print(' '.join(random.choice(w) for _ in range(500)))")

make_model() {
  case $1 in
    q3) [[ -f $MODELS/q3.gguf ]] || "$BIN/hypura-mkmodel" -o "$MODELS/q3.gguf" --arch qwen3moe --dim 2048 --heads 32 \
          --kv-heads 4 --head-dim 128 --ff 6144 --experts 128 --top-k 8 --expert-ff 768 --type q4_k --routing zipf \
          --target-size 3.7G --quiet;;
    oss) [[ -f $MODELS/oss.gguf ]] || "$BIN/hypura-mkmodel" -o "$MODELS/oss.gguf" --arch gpt-oss --dim 2880 --heads 64 \
          --kv-heads 8 --head-dim 64 --experts 32 --top-k 4 --expert-ff 2880 --type q8_0 --routing zipf \
          --target-size 3.7G --quiet;;
  esac
  echo "$MODELS/$1.gguf"
}

# hypura_run LABEL CAP_BYTES MODEL ARGS...: one cold-cache run under the cap; appends a JSON line to $W/rows
hypura_run() {
  local label=$1 cap=$2 m=$3; shift 3
  drop_caches
  run_capped "$cap" "$W/o" "$W/e" env XDG_DATA_HOME="$W/data" "$BIN/hypura" run "$m" -p "$P" -n "$N" --temp 0 -c 1024 \
    -t "$T" --memory-budget "$((cap >> 20))M" --stats-json "$W/s.json" "$@"
  local tps; tps=$(hypura_gen_tps "$W/e"); tps=${tps:-0}
  echo "  hypura $label: exit $RC, $tps tok/s, peak $((CG_PEAK >> 20)) MiB; $(hypura_pred_line "$W/s.json")"
  grep -E "expert prefetch|expert I/O|plan:" "$W/e" | sed 's/^/     /'
  python3 - "$W/s.json" "$W/data" "$label" "$RC" "$tps" "$CG_PEAK" >> "$W/rows" <<'PY'
import json, sys, glob, os
path, data, label, rc, tps, peak = sys.argv[1:]
try: d = json.load(open(path))
except Exception: d = {}
st = d.get("stream", {}); pr = d.get("prediction", {}); xc = pr.get("expert_cache") or {}
h, mi = st.get("expert_hits", 0), st.get("expert_misses", 0)
passes = max(st.get("passes", 0), 1)
row = {"label": label, "exit": int(rc), "gen_tps": float(tps), "predicted_tps": d.get("predicted_tok_s", 0),
       "mode": d.get("mode"), "cgroup_peak_mib": int(peak) >> 20, "hit_rate": h / (h + mi) if h + mi else None,
       "predicted_hit_rate": xc.get("hit_rate"), "hit_rate_source": xc.get("hit_rate_source"),
       "slots_per_layer": xc.get("slots_per_layer"), "experts_per_layer": xc.get("experts_per_layer"),
       "read_per_pass_mib": st.get("bytes_read", 0) / passes / 2**20,
       "routed_per_pass_mib": st.get("expert_routed_bytes", 0) / passes / 2**20,
       "prefetches": st.get("expert_prefetches"), "prefetch_used": st.get("expert_prefetch_hits"),
       "prefetch_wasted": st.get("expert_prefetch_wasted"), "prefetch_off": st.get("expert_prefetch_off")}
# generation alone (the prompt's reads taken off): what the prediction is of
g = d.get("generation") or {}
gh, gm = g.get("expert_hits", 0), g.get("expert_misses", 0)
row["gen_hit_rate"] = gh / (gh + gm) if gh + gm else None
row["gen_read_per_token_mib"] = g.get("bytes_read", 0) / max(d.get("gen_tokens", 0), 1) / 2**20 if g else None
row["plan_predicted_tps"] = pr.get("plan_tok_s") or d.get("predicted_tok_s", 0)
row["measured_over_predicted"] = float(tps) / row["predicted_tps"] if row["predicted_tps"] else None
# the hot set that fits: the share of the kept selections the N most frequent experts
# of each layer cover, N = the cache's slots per layer (what an ideal frequency cache hits)
files = [f for f in glob.glob(os.path.join(data, "hypura", "coact", "*.json")) if not f.endswith(".policy.json")]
if files and xc.get("slots_per_layer"):
    c = json.load(open(files[0])); n = int(xc["slots_per_layer"])
    cov = []
    for layer in c.get("layers", []):
        f = layer.get("freq", [])
        tot = sum(f)
        if tot: cov.append(sum(sorted(f, reverse=True)[:n]) / tot)
    row["hot_set_share_fits"] = sum(cov) / len(cov) if cov else None
print(json.dumps(row))
PY
  tail -1 "$W/rows" | python3 -c "import json,sys; r=json.load(sys.stdin); print('     hits %s, hot set that fits %s; read %.1f MiB per token with the cache, %.1f MiB routed (no cache)' % (('%.1f%%' % (100*r['hit_rate'])) if r['hit_rate'] is not None else 'n/a', ('%.1f%%' % (100*r['hot_set_share_fits'])) if r.get('hot_set_share_fits') else 'n/a', r['read_per_pass_mib'], r['routed_per_pass_mib']))"
}

: > "$W/all"
for name in ${MODELS_SEL:-q3 oss}; do
  M=$(make_model "$name")
  size=$(stat -c %s "$M")
  bw=$("$BIN/hypura" iobench "$MODELS" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq_read_gbps"])')
  for f in ${CAPS:-0.55 0.40}; do
    cap=$(python3 -c "print(int($size * $f) >> 20 << 20)")
    echo "== $name: $(basename "$M") $((size >> 20)) MiB, cap $((cap >> 20)) MiB ($f x), storage $bw GB/s"
    : > "$W/rows"
    rm -rf "$W/data"
    drop_caches
    run_capped "$cap" "$W/o" "$W/e" "$LLAMA_BIN/llama-completion" -m "$M" -p "$P" -n "$N" --temp 0 -no-cnv --no-warmup \
      -c 1024 -t "$T" -nr
    ll=$(llama_eval_tps "$W/e"); ll=${ll:-0}
    echo "  llama.cpp mmap --no-repack: exit $RC, $ll tok/s, peak $((CG_PEAK >> 20)) MiB"
    hypura_run "first run" "$cap" "$M"
    hypura_run "second run (kept statistics)" "$cap" "$M"
    python3 - "$name" "$f" "$cap" "$bw" "$ll" "$W/rows" >> "$W/all" <<'PY'
import json, sys
name, f, cap, bw, ll, rows = sys.argv[1:]
rows = [json.loads(l) for l in open(rows)]
out = {"model": name, "cap_fraction": float(f), "cap_mib": int(cap) >> 20, "storage_gbps": float(bw),
       "llama_mmap_tps": float(ll), "hypura": rows}
for r in rows:
    ratio = r["gen_tps"] / float(ll) if float(ll) > 0 else None
    r["ratio_vs_llama"] = ratio
    print(f"  {r['label']}: {r['gen_tps']:.2f} tok/s = {ratio:.2f}x llama.cpp" if ratio else f"  {r['label']}: llama.cpp gave no figure",
          file=sys.stderr)
print(json.dumps(out))
PY
  done
  # prefill: a ~512-token prompt under the larger cap
  caps=${CAPS:-0.55 0.40}
  cap=$(python3 -c "print(int($size * ${caps%% *}) >> 20 << 20)")
  drop_caches
  run_capped "$cap" "$W/o" "$W/e" "$LLAMA_BIN/llama-completion" -m "$M" -p "$LONG" -n 1 --temp 0 -no-cnv --no-warmup -c 1024 \
    -t "$T" -nr
  lpre=$(sed -n 's/.*prompt eval time = .*, *\([0-9.]*\) tokens per second.*/\1/p' "$W/e" | tail -1)
  drop_caches
  run_capped "$cap" "$W/o" "$W/e" env XDG_DATA_HOME="$W/data" "$BIN/hypura" run "$M" -p "$LONG" -n 1 --temp 0 -c 1024 \
    -t "$T" --memory-budget "$((cap >> 20))M"
  hpre=$(sed -n 's/.*prompt \([0-9]*\) tokens, \([0-9.]*\) tok\/s.*/\2/p' "$W/e"); ptoks=$(sed -n 's/.*prompt \([0-9]*\) tokens.*/\1/p' "$W/e")
  echo "  prefill, $ptoks-token prompt under $((cap >> 20)) MiB: hypura ${hpre:-0} tok/s, llama.cpp ${lpre:-0} tok/s" \
       "($(python3 -c "print('%.2fx' % (${hpre:-0} / ${lpre:-0})) if float('${lpre:-0}') > 0 else print('n/a')"))"
  echo "{\"model\": \"$name\", \"prefill_tokens\": ${ptoks:-0}, \"prefill_cap_mib\": $((cap >> 20)), \"hypura_prefill_tps\": ${hpre:-0}, \"llama_prefill_tps\": ${lpre:-0}}" >> "$W/all"
done
python3 -c "import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))" "$W/all" \
  > "$RESULTS/finegrained_vs_llama.json"
echo "results: $RESULTS/finegrained_vs_llama.json"
