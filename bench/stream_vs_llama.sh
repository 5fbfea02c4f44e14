#!/usr/bin/env bash
# Issue 3: a ~3 GB dense Q4_K model under a 1.5 GiB cgroup cap, cold page cache.
# llama.cpp defaults, llama.cpp mmap without repack, and hypura: tok/s and peak
# memory of each; hypura against the I/O bound (profile bandwidth / bytes per token).
# Needs root (cgroup v1). Writes bench/results/stream_vs_llama.json.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
T=${THREADS:-$(nproc)} N=${N_GEN:-8}
CAP_MIB=${CAP_MIB:-1536}; CAP=$((CAP_MIB << 20))
M="$MODELS/dense-3g-q4k.gguf"
[[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k --target-size 3G --seed 5 --quiet
P="The history of the printing press"
W=$(mktemp -d)
# storage bandwidth measured now, on the model's filesystem (before and after the runs; the mean is the bound)
iobw() { "$BIN/hypura" iobench "$(dirname "$M")" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq_read_gbps"])'; }
bw1=$(iobw)
echo "model $(( $(stat -c %s "$M") >> 20 )) MiB, cap $CAP_MIB MiB, storage $bw1 GB/s (iobench, before)"

drop_caches
run_capped $CAP $W/o1 $W/e1 "$LLAMA_BIN/llama-completion" -m "$M" -p "$P" -n $N --temp 0 -no-cnv --no-warmup -c 512 -t $T
d_rc=$RC d_peak=$CG_PEAK d_oom=$CG_OOM d_tps=$(llama_eval_tps $W/e1); d_tps=${d_tps:-0}
echo "llama.cpp defaults:        exit $d_rc, oom kills $d_oom, peak $((d_peak>>20)) MiB, ${d_tps} tok/s"

drop_caches
run_capped $CAP $W/o2 $W/e2 "$LLAMA_BIN/llama-completion" -m "$M" -p "$P" -n $N --temp 0 -no-cnv --no-warmup -c 512 -t $T -nr
m_rc=$RC m_peak=$CG_PEAK m_oom=$CG_OOM m_tps=$(llama_eval_tps $W/e2); m_tps=${m_tps:-0}
echo "llama.cpp mmap, no repack: exit $m_rc, oom kills $m_oom, peak $((m_peak>>20)) MiB, ${m_tps} tok/s"

drop_caches
run_capped $CAP $W/o3 $W/e3 "$BIN/hypura" run "$M" -p "$P" -n $N --temp 0 -c 512 -t $T --memory-budget ${CAP_MIB}M --stats-json $W/s3.json
h_rc=$RC h_peak=$CG_PEAK h_oom=$CG_OOM h_tps=$(hypura_gen_tps $W/e3); h_tps=${h_tps:-0}
cat $W/e3 | grep -E "plan:|tiers|streaming:|streamed|peak" | sed 's/^/    /'
bpt=$(sed -n 's/.*streaming: .*, \([0-9.]* [GM]iB\) read per token.*/\1/p' $W/e3)
bpt_bytes=$("$BIN/hypura" estimate "$M" -c 512 --memory-budget ${CAP_MIB}M --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["io_bytes_per_token"])')
echo "hypura:                    exit $h_rc, oom kills $h_oom, peak $((h_peak>>20)) MiB, ${h_tps} tok/s, $bpt per token"
echo "hypura:                    $(hypura_pred_line $W/s3.json)"
h_pred=$(hypura_json_pred $W/s3.json)
bw2=$(iobw); bw=$(python3 -c "print(($bw1+$bw2)/2)")
echo "storage $bw2 GB/s (iobench, after); bound uses the mean $bw GB/s"
bound=$(python3 -c "print($bw*1e9/$bpt_bytes)")
python3 - <<PY
import json
h=$h_tps; m=$m_tps; bound=$bound
st=json.load(open("$W/s3.json")); x=st["stream"]
gen_bytes = x["bytes_read"] * st["gen_tokens"] / max(1, x["passes"])   # generation passes only
eff = gen_bytes / st["gen_s"] / 1e9
print(f"read per pass {x['bytes_read']/max(1,x['passes'])/2**30:.2f} GiB; during generation {eff:.2f} GB/s; stalls {x['stall_s']:.2f} s")
print(f"I/O bound {bound:.3f} tok/s (iobench mean / bytes per token); hypura / bound = {h/bound:.3f} (target >= 0.85)")
print(f"hypura / llama.cpp mmap = {h/m:.2f}x (target >= 1.3)" if m > 0 else "llama.cpp mmap produced no figure")
import json
json.dump({"model":"$(basename "$M")","cap_mib":$CAP_MIB,"storage_gbps":$bw,"io_bytes_per_token":$bpt_bytes,
 "llama_default":{"exit":$d_rc,"oom_kills":${d_oom:-0},"peak":$d_peak,"tps":$d_tps},
 "llama_mmap_norepack":{"exit":$m_rc,"oom_kills":${m_oom:-0},"peak":$m_peak,"tps":$m_tps},
 "hypura":{"exit":$h_rc,"oom_kills":${h_oom:-0},"peak":$h_peak,"tps":$h_tps,"predicted_tps":$h_pred},
 "io_bound_tps":bound,"hypura_over_bound":h/bound,"hypura_over_llama_mmap":(h/m if m>0 else None)},
 open("$RESULTS/stream_vs_llama.json","w"), indent=1)
PY
rm -rf "$W"
