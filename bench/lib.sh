# shared helpers for the benchmark scripts (sourced)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${HYPURA_BUILD_DIR:-$ROOT/build}/bin"
LLAMA_BIN="$(sed -n 's/^LLAMA_BUILD_DIR:PATH=//p' "${HYPURA_BUILD_DIR:-$ROOT/build}/CMakeCache.txt")/bin"
RESULTS="$ROOT/bench/results"
MODELS="${BENCH_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/hypura/bench}"
mkdir -p "$RESULTS" "$MODELS"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# run_capped CAP_BYTES OUTFILE ERRFILE cmd... : runs cmd in a fresh memory
# cgroup (v1, or v2 where that is what the machine has); sets CG_PEAK (bytes),
# CG_OOM (kills) and RC
run_capped() {
  local cap=$1 out=$2 errf=$3; shift 3
  local cg
  if [[ -d /sys/fs/cgroup/memory ]]; then
    cg=/sys/fs/cgroup/memory/hypura-bench-$$-$RANDOM
    mkdir "$cg" || { echo "cannot create a memory cgroup (root needed)" >&2; return 1; }
    echo "$cap" > "$cg/memory.limit_in_bytes"
  else
    cg=/sys/fs/cgroup/hypura-bench-$$-$RANDOM
    echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    mkdir "$cg" || { echo "cannot create a memory cgroup (root needed)" >&2; return 1; }
    echo "$cap" > "$cg/memory.max"
    echo 0 > "$cg/memory.swap.max" 2>/dev/null
  fi
  sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$cg" "$@" >"$out" 2>"$errf"
  RC=$?
  if [[ -f $cg/memory.max_usage_in_bytes ]]; then
    CG_PEAK=$(cat "$cg/memory.max_usage_in_bytes")
    CG_OOM=$(awk '/oom_kill /{print $2}' "$cg/memory.oom_control")
  else
    CG_PEAK=$(cat "$cg/memory.peak" 2>/dev/null || echo 0)
    CG_OOM=$(awk '/^oom_kill /{print $2}' "$cg/memory.events")
  fi
  rmdir "$cg" 2>/dev/null || true
}

# tok/s of generation from llama-completion's perf line
llama_eval_tps() { sed -n 's/.*eval time = .*, *\([0-9.]*\) tokens per second.*/\1/p' "$1" | tail -1; }
# tok/s of generation from hypura run's stats line
hypura_gen_tps() { sed -n 's/.*generation [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p' "$1" | tail -1; }
# tok/s of generation from hypura run's --stats-json file (3 decimals), 0 when it is missing
hypura_json_tps() { python3 -c "import json,sys;print(round(json.load(open(sys.argv[1]))['gen_tps'],3))" "$1" 2>/dev/null || echo 0; }
# peak VRAM in use while a command runs (nvidia-smi every 100 ms into $TMP/vram): vram_start before
# it, vram_stop after, which sets VRAM (MiB; 0 without nvidia-smi)
vram_start() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$TMP/vram" 2>/dev/null & VPID=$!; sleep 0.3; }
vram_stop() { kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; VRAM=$(sort -n "$TMP/vram" | tail -1); VRAM=${VRAM:-0}; }
# "TG PP": the best generation and prompt tok/s of a llama-bench -o json file, "0 0" when unreadable
llama_bench_tg_pp() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "0 0"
import json, sys
r = json.load(open(sys.argv[1]))
tg = max([t["avg_ts"] for t in r if t["n_gen"] > 0] or [0]); pp = max([t["avg_ts"] for t in r if t["n_prompt"] > 0] or [0])
print(round(tg, 2), round(pp, 1))
PY
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# the plan's predicted generation tok/s from a --stats-json file (3 decimals), 0 when it is missing
hypura_json_pred() { python3 -c "import json,sys;print(round(json.load(open(sys.argv[1])).get('predicted_tok_s',0),3))" "$1" 2>/dev/null || echo 0; }
# one line from a --stats-json file: predicted (and its bound) against measured generation tok/s,
# and for expert-streaming the predicted against the measured cache hit rate
hypura_pred_line() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "predicted n/a (no stats JSON)"
import json, sys
d = json.load(open(sys.argv[1]))
p, m, t = d.get("prediction", {}), d.get("gen_tps", 0), d.get("predicted_tok_s", 0)
assumed = p.get("bound") == "io" and not p.get("storage_measured", True)
s = f"predicted {t:.2f} tok/s (bound by {p.get('bound', '?')}{', storage assumed' if assumed else ''}), measured {m:.2f} tok/s"
if p.get("none"): s = f"no prediction ({p['none']}), measured {m:.2f} tok/s"
if t > 0 and m > 0: s += f" ({m / t:.2f}x the prediction)"
if p.get("plan_tok_s"): s += f"; the plan's before the run {p['plan_tok_s']:.2f}"
if p.get("compute_scale_runs"): s += f"; compute x{p['compute_scale']:.2f} from {p['compute_scale_runs']} earlier runs ({p['compute_scale_source']})"
x = p.get("expert_cache")
if x:
    # the prediction is of generation: its hits, without the prompt's, where the run reported them
    st = d.get("generation") or d.get("stream", {}); h, mi = st.get("expert_hits", 0), st.get("expert_misses", 0)
    s += f"; cache hits predicted {100 * x['hit_rate']:.1f}% ({x['hit_rate_source']}), measured "
    s += f"{100 * h / (h + mi):.1f}%" if h + mi else "n/a"
print(s)
PY
}
