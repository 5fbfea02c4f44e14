#!/usr/bin/env bash
# Issue 4: a ~4 GB MoE model (8 experts, top-2) under a 1.5 GiB cgroup cap, cold
# page cache, same threads, with router skew on and off:
#   llama.cpp mmap (no repack), hypura dense-style streaming of the experts
#   (--mode dense), hypura expert-streaming (direct I/O, and the page-cache variant):
#   generation tok/s, bytes read per token, cache hit rate, tok/s against the I/O
#   bound of the bytes actually read; prefill tok/s on a 512-token prompt; each decoding
#   hypura run's predicted tok/s (and cache hit rate) next to the measured (--stats-json).
# Needs root (cgroup v1). Writes bench/results/moe_vs_llama.json.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
T=${THREADS:-$(nproc)} N=${N_GEN:-16}
CAP_MIB=${CAP_MIB:-1536}; CAP=$((CAP_MIB << 20))
W=$(mktemp -d)
iobw() { "$BIN/hypura" iobench "$MODELS" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq_read_gbps"])'; }
P="The history of the printing press begins in"
LONG=$(python3 -c "import random; random.seed(1); w='the of and to in is was for on that with as by at from his her an which or were are this be had not but they have one their all we can more there when been has if who its other also into so some would only time them than these may new over'.split(); print(' '.join(random.choice(w) for _ in range(560)))")
echo '{' > "$RESULTS/moe_vs_llama.json"
first=1
for skew in 1 0; do
  M="$MODELS/moe-4g-s$skew.gguf"
  [[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --ff 2816 --heads 16 --kv-heads 4 --experts 8 --top-k 2 \
      --skew $skew --type q4_k --target-size 4G --seed 21 --quiet
  bw=$(iobw)
  echo "== skew $skew: $(basename "$M") $(( $(stat -c %s "$M") >> 20 )) MiB, cap $CAP_MIB MiB, storage $bw GB/s"
  declare -A tps io hit pred
  # llama.cpp mmap without repack (its defaults repack into RAM and are OOM-killed under the cap)
  drop_caches
  run_capped $CAP $W/o $W/e "$LLAMA_BIN/llama-completion" -m "$M" -p "$P" -n $N --temp 0 -no-cnv --no-warmup -c 1024 -t $T -nr
  tps[llama]=$(llama_eval_tps $W/e); tps[llama]=${tps[llama]:-0}
  echo "  llama.cpp mmap no-repack: exit $RC, ${tps[llama]} tok/s, peak $((CG_PEAK>>20)) MiB"
  for cfg in dense experts pagecache; do
    case $cfg in
      dense) args="--mode dense";;
      experts) args="--io auto";;
      pagecache) args="--io pagecache";;
    esac
    rm -rf "$W/data"
    drop_caches
    rm -f $W/s.json
    run_capped $CAP $W/o $W/e env XDG_DATA_HOME=$W/data "$BIN/hypura" run "$M" -p "$P" -n $N --temp 0 -c 1024 -t $T \
      --memory-budget ${CAP_MIB}M --stats-json $W/s.json $args
    tps[$cfg]=$(hypura_gen_tps $W/e); tps[$cfg]=${tps[$cfg]:-0}
    pred[$cfg]=$(hypura_json_pred $W/s.json)
    io[$cfg]=$(sed -n 's/.*streamed [^(]*(\([0-9.]* [KMG]iB\) per pass).*/\1/p' $W/e)
    hit[$cfg]=$(sed -n 's/.*routed slices, \([0-9.]*\)% cache hits.*/\1/p' $W/e)
    echo "  hypura $cfg: exit $RC, ${tps[$cfg]} tok/s, ${io[$cfg]} read per token, hits ${hit[$cfg]:-n/a}%, peak $((CG_PEAK>>20)) MiB"
    grep -E "expert I/O" $W/e | sed 's/^/     /'
    echo "     $(hypura_pred_line $W/s.json)"
  done
  # prefill: a 512-token prompt under the cap, expert-streaming
  drop_caches
  run_capped $CAP $W/o $W/e "$BIN/hypura" run "$M" -p "$LONG" -n 1 --temp 0 -c 1024 -t $T --memory-budget ${CAP_MIB}M
  pre=$(sed -n 's/.*prompt \([0-9]*\) tokens, \([0-9.]*\) tok\/s.*/\2/p' $W/e); ptoks=$(sed -n 's/.*prompt \([0-9]*\) tokens.*/\1/p' $W/e)
  echo "  prefill: $ptoks-token prompt at ${pre:-0} tok/s (expert-streaming, under the cap; the plan predicts decode only)"
  python3 - "$skew" "$bw" "${tps[llama]}" "${tps[dense]}" "${tps[experts]}" "${tps[pagecache]}" "${pre:-0}" "$first" "$RESULTS/moe_vs_llama.json" \
    "${pred[dense]}" "${pred[experts]}" "${pred[pagecache]}" <<'PY'
import sys, json
skew, bw, ll, de, ex, pc, pre, first, out, pde, pex, ppc = sys.argv[1:]
bw, ll, de, ex, pc, pre, pde, pex, ppc = map(float, (bw, ll, de, ex, pc, pre, pde, pex, ppc))
print(f"  expert-streaming / llama.cpp mmap = {ex/ll:.2f}x (target >= 5)" if ll > 0 else "  llama.cpp produced no figure")
print(f"  expert-streaming / dense-style = {ex/de:.2f}x" if de > 0 else "")
print(f"  page-cache variant / direct I/O = {pc/ex:.2f}x" if ex > 0 else "")
with open(out, "a") as f:
    if first != "1": f.write(",\n")
    f.write(json.dumps(f"skew{skew}") + ": " + json.dumps({"storage_gbps": bw, "llama_mmap_tps": ll, "dense_style_tps": de,
            "experts_direct_tps": ex, "experts_pagecache_tps": pc, "prefill_tps": pre,
            "predicted_tps": {"dense_style": pde, "experts_direct": pex, "experts_pagecache": ppc}}))
PY
  first=0
done
echo '}' >> "$RESULTS/moe_vs_llama.json"
rm -rf "$W"
