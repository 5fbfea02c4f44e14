#!/usr/bin/env bash
# Issue 2: a ~3 GB dense Q4_K model that fits in RAM. hypura run's generation tok/s
# against llama-bench from the same pinned build, same threads, in one run.
# Prints the ratios; writes bench/results/resident_vs_llama.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
T=${THREADS:-$(nproc)} N=${N_GEN:-32} R=${REPS:-3}
M="$MODELS/dense-3g-q4k.gguf"
[[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k --target-size 3G --seed 5 --quiet
cat "$M" > /dev/null   # warm page cache: this benchmark is about compute, not storage
lb=$("$LLAMA_BIN/llama-bench" -m "$M" -p 0 -n $N -t $T -r $R -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')
declare -A tps
for mode in repack no-repack; do
  vals=()
  for i in $(seq $R); do
    "$BIN/hypura" run "$M" -p "The history of" -n $N --temp 0 -t $T -c 512 --$mode >/dev/null 2>/tmp/hy-bench.err
    vals+=("$(hypura_gen_tps /tmp/hy-bench.err)")
  done
  tps[$mode]=$(printf '%s\n' "${vals[@]}" | median)
  echo "hypura --$mode: ${vals[*]} tok/s (median ${tps[$mode]})"
done
echo "llama-bench tg$N: $lb tok/s (mean of $R)"
r1=$(python3 -c "print(round(${tps[repack]}/$lb,3))"); r2=$(python3 -c "print(round(${tps[no-repack]}/$lb,3))")
echo "ratio hypura(--repack)/llama-bench = $r1   (same kernels as llama-bench's default)"
echo "ratio hypura(default, no repack)/llama-bench = $r2"
cat > "$RESULTS/resident_vs_llama.json" <<J
{"model": "$(basename "$M")", "bytes": $(stat -c %s "$M"), "threads": $T, "n_gen": $N,
 "llama_bench_tps": $lb, "hypura_repack_tps": ${tps[repack]}, "hypura_norepack_tps": ${tps[no-repack]},
 "ratio_repack": $r1, "ratio_norepack": $r2}
J
