#!/usr/bin/env bash
# GPU tier vs hand-tuned llama.cpp on the same machine, same run (issue #6).
# Needs a CUDA build (bench/gpu/device_setup.sh; HYPURA_BUILD_DIR=build-gpu).
#   bench/gpu_vs_llama.sh STAGE...     stages, in this order when several:
#     models    make the ~20 GB MoE and ~11 GB dense models (hypura-mkmodel)
#     moe       MoE, RAM unlimited: hypura's automatic plan (--gpu-budget) vs
#               llama-bench with -ngl/-ot/--n-cpu-moe/--fit-target configurations
#     dense     the same for the dense model
#     cap       both models under a memory cgroup below their size (NVMe tier)
#     identity  bit-identical logits, GPU tier streamed vs resident (same placement)
#     mem       where a run's memory goes (hypura and llama.cpp): RSS peaks, libllama's buffers
#     trace     the layer groups a streamed dense run loads and releases (HYPURA_STREAM_TRACE)
# A llama.cpp configuration counts only if its peak VRAM (nvidia-smi) is at most
# hypura's peak (+2 %): the same card budget. The sweep runs each configuration
# once (16 threads, load mode mmap/none, --no-host 0/1: pinned host buffers or
# repacked CPU weights); the two fastest within that VRAM then
# run ROUNDS times interleaved with hypura (this machine's speed drifts by 15 %
# between minutes), and the ratio is of medians. The capped runs use the best
# uncapped configuration (and llama.cpp's load modes mmap/none, --no-host 0/1).
# Env: GPU_BUDGET (4G), MOE_CAP (10G), DENSE_CAP (7G; each a list of caps),
# N_GEN (32), REPS (1), ROUNDS (3), SWEEP (1; 0: rounds over an earlier sweep's rows),
# IDENT_DENSE_CAP, TRACE_CAP. Results: bench/results/gpu_vs_llama.jsonl.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
GPU_BUDGET=${GPU_BUDGET:-4G}
MOE_CAP=${MOE_CAP:-10G}
DENSE_CAP=${DENSE_CAP:-7G}
N_GEN=${N_GEN:-32}
REPS=${REPS:-1}
set -f # -ot patterns pass through word splitting unglobbed
MOE="$MODELS/gpu-moe-20g.gguf"
DENSE="$MODELS/gpu-dense-11g.gguf"
OUTJ="$RESULTS/gpu_vs_llama.jsonl"
TMP=$(mktemp -d)
PROMPT="Write a short story about a lighthouse keeper who finds a message in a bottle."
export HYPURA_NO_PERSIST_STATS=1

record() { local r=${1//\\/\\\\}; echo "$r" >>"$OUTJ"; }
bytes() { numfmt --from=iec "${1%B}"; }

# hypura NAME MODEL args... : tok/s of generation -> HTPS, VRAM peak MiB -> VRAM
hypura_run() {
  local name=$1 model=$2; shift 2
  vram_start
  rm -f "$TMP/h.json"
  "$BIN/hypura" run "$model" -p "$PROMPT" -n $N_GEN --temp 0 -c 512 --stats-json "$TMP/h.json" "$@" \
    >"$TMP/h.out" 2>"$TMP/h.err"
  local rc=$?
  vram_stop
  HTPS=$(hypura_json_tps "$TMP/h.json")
  grep -E "^plan:|tiers:|GPU:|experts:|streaming:" "$TMP/h.err" | sed 's/^/    /'
  [[ $rc -eq 0 ]] || { echo "    hypura failed (rc $rc): $(tail -2 "$TMP/h.err")"; HTPS=0; }
  printf '  %-44s %8.2f tok/s  VRAM %6s MiB\n' "hypura $name" "$HTPS" "$VRAM"
  echo "    $(hypura_pred_line "$TMP/h.json")"
  record "{\"stage\":\"$STAGE\",\"who\":\"hypura\",\"config\":\"$name $*\",\"tok_s\":$HTPS,\"pred_tok_s\":$(hypura_json_pred "$TMP/h.json"),\"vram_mib\":$VRAM}"
}

# llama_bench NAME MODEL args... : best tok/s over the tests of one invocation -> LTPS
llama_bench() {
  local name=$1 model=$2; shift 2
  vram_start
  "$LLAMA_BIN/llama-bench" -m "$model" -p 0 -n $N_GEN -r $REPS -o json "$@" >"$TMP/l.json" 2>"$TMP/l.err"
  local rc=$?
  vram_stop
  LTPS=$(python3 - "$TMP/l.json" <<'PY' 2>/dev/null || echo 0
import json, sys
r = json.load(open(sys.argv[1]))
best = max(r, key=lambda t: t["avg_ts"])
print(round(best["avg_ts"], 3), "t=%s" % best.get("n_threads"), "lm=%s" % best.get("load_mode", best.get("use_mmap")),
      "nh=%d" % int(best.get("no_host", 0)))
PY
)
  [[ $rc -eq 0 && -n $LTPS ]] || { LTPS="0 failed(rc=$rc):$(tail -1 "$TMP/l.err" | tr -d '"' | cut -c1-80)"; }
  printf '  %-44s %8s tok/s  VRAM %6s MiB  (%s)\n' "llama $name" "${LTPS%% *}" "$VRAM" "${LTPS#* }"
  record "{\"stage\":\"$STAGE\",\"who\":\"llama\",\"name\":\"$name\",\"config\":\"$name $*\",\"tok_s\":${LTPS%% *},\"vram_mib\":$VRAM,\"detail\":\"${LTPS#* }\"}"
  LVRAM=$VRAM
}

# top llama.cpp configurations of a sweep within hypura's VRAM (+2 %): "name<TAB>detail" lines
top_configs() { # HYPURA_VRAM N
  python3 - "$OUTJ" "$STAGE" "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
st, hv, n = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
ll = [r for r in rows if r["stage"] == st and r["who"] == "llama" and "name" in r and "(round " not in r["name"]]
ok = sorted([r for r in ll if r["vram_mib"] <= hv * 1.02 and r["tok_s"] > 0], key=lambda r: -r["tok_s"])
for r in ok[:n]: print(r["name"] + "\t" + r["detail"])
over = [r for r in ll if r["vram_mib"] > hv * 1.02 and r["tok_s"] > 0]
print(f"  sweep: {len(ll)} llama.cpp configurations, {len(ok)} within hypura's VRAM ({hv:.0f} MiB)"
      + (f"; fastest over it: {max(over, key=lambda r: r['tok_s'])['name']}" if over else ""), file=sys.stderr)
PY
}

# Interleaved rounds: hypura, then each top configuration (its best -t/-lm of
# the sweep), ROUNDS times; medians and the ratio. CONF[name] holds the args.
rounds() { # MODEL HYPURA_VRAM
  local model=$1 hv=$2 tops line name det t lm
  mapfile -t tops < <(top_configs "$hv" 2)
  declare -A med
  local hy=() ; declare -A got
  for r in $(seq 1 ${ROUNDS:-3}); do
    hypura_run "auto (round $r)" "$model" --gpu-budget $GPU_BUDGET >/dev/null; hy+=("$HTPS")
    for line in "${tops[@]}"; do
      name=${line%%$'\t'*}; det=${line#*$'\t'}
      t=$(sed -n 's/.*t=\([0-9]*\).*/\1/p' <<<"$det"); lm=$(sed -n 's/.*lm=\([a-z]*\).*/\1/p' <<<"$det")
      nh=$(sed -n 's/.*nh=\([01]\).*/\1/p' <<<"$det")
      llama_bench "$name (round $r)" "$model" ${CONF[$name]} -t ${t:-16} -lm ${lm:-none} --no-host ${nh:-0} >/dev/null
      got[$name]+="${LTPS%% *} "
    done
  done
  local hm=$(printf '%s\n' "${hy[@]}" | median) best=0 bname=""
  echo "  hypura auto: ${hy[*]} -> median $hm tok/s"
  for line in "${tops[@]}"; do
    name=${line%%$'\t'*}
    local m=$(printf '%s\n' ${got[$name]} | median)
    echo "  llama $name ($line): ${got[$name]}-> median $m tok/s"
    if python3 -c "import sys; sys.exit(0 if $m > $best else 1)"; then best=$m; bname=$name; fi
  done
  python3 -c "print('  RATIO $STAGE: hypura median $hm / best llama.cpp median $best ($bname) = %.3f' % ($hm / $best if $best > 0 else float('inf')))"
  record "{\"stage\":\"$STAGE\",\"who\":\"summary\",\"hypura_median\":$hm,\"llama_best\":\"$bname\",\"llama_median\":$best}"
  echo "$bname" >"$RESULTS/gpu_best_$STAGE.name"; echo "${CONF[$bname]}" >"$RESULTS/gpu_best_$STAGE.args"
  for line in "${tops[@]}"; do [[ ${line%%$'\t'*} == "$bname" ]] && echo "${line#*$'\t'}" >"$RESULTS/gpu_best_$STAGE.detail"; done
}

gpu_free_mib() { nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits | head -1; }

stage_models() {
  [[ -f $MOE ]] || "$BIN/hypura-mkmodel" -o "$MOE" --dim 4096 --layers 32 --ff 11264 --heads 32 --kv-heads 8 \
      --experts 8 --top-k 2 --skew 0.5 --type q4_k --ctx 4096 --seed 11 --quiet
  [[ -f $DENSE ]] || "$BIN/hypura-mkmodel" -o "$DENSE" --dim 6144 --layers 48 --ff 16384 --heads 48 --kv-heads 8 \
      --type q4_k --ctx 4096 --seed 12 --quiet
  ls -la "$MOE" "$DENSE"
}

declare -A CONF
sweep() { # NAME MODEL ARGS... : one sweep entry, remembered for the rounds
  local name=$1 model=$2; shift 2
  CONF[$name]="$*"
  [[ ${SWEEP:-1} == 0 ]] && return # rounds only, over the sweep rows already in the results
  llama_bench "$name" "$model" "$@" -lm mmap,none -t 16 --no-host 0,1
}

stage_moe() {
  echo "== MoE $(du -h "$MOE" | cut -f1), GPU budget $GPU_BUDGET, RAM unlimited"
  hypura_run "auto" "$MOE" --gpu-budget $GPU_BUDGET; local hv=$VRAM
  local fit=$(( $(gpu_free_mib) - $(bytes $GPU_BUDGET) / 1048576 ))
  sweep "-ngl 99 -ot exps=CPU" "$MOE" -ngl 99 -ot "exps=CPU"
  for n in 28 27 26; do sweep "-ngl 99 -ncmoe $n" "$MOE" -ngl 99 -ncmoe $n; done
  sweep "-fitt $fit (fit to $GPU_BUDGET)" "$MOE" -fitt $fit
  sweep "-ngl 6" "$MOE" -ngl 6
  rounds "$MOE" "$hv"
}

stage_dense() {
  echo "== dense $(du -h "$DENSE" | cut -f1), GPU budget $GPU_BUDGET, RAM unlimited"
  hypura_run "auto" "$DENSE" --gpu-budget $GPU_BUDGET; local hv=$VRAM
  local fit=$(( $(gpu_free_mib) - $(bytes $GPU_BUDGET) / 1048576 ))
  for k in 16 18; do sweep "-ngl $k" "$DENSE" -ngl $k; done
  # attention of every layer on the GPU, the FFN of the first N layers on the CPU
  for n in 42 40; do
    sweep "-ngl 99 -ot ffn(0..$((n-1)))=CPU" "$DENSE" -ngl 99 -ot "blk\.($(seq -s'|' 0 $((n - 1))))\.ffn_(up|gate|down)=CPU"
  done
  sweep "-fitt $fit (fit to $GPU_BUDGET)" "$DENSE" -fitt $fit
  rounds "$DENSE" "$hv"
}

capped() { # NAME CAP cmd... (cold cache, fresh cgroup): prints tok/s source files
  drop_caches
  run_capped "$(bytes $2)" "$TMP/c.out" "$TMP/c.err" "${@:3}"
  echo "    cgroup peak $((CG_PEAK / 1048576)) MiB, OOM kills ${CG_OOM:-?}, rc $RC"
}

stage_cap() {
  local NG=$N_GEN; N_GEN=16
  for which in ${CAP_MODELS:-moe dense}; do
    local m=$MOE caps=$MOE_CAP extra=(-ngl 99 -ot "exps=CPU") nh=0
    [[ $which == dense ]] && { m=$DENSE; caps=$DENSE_CAP; extra=(-ngl 18); }
    local fallback=("${extra[@]}") # the default configuration: fewer CPU weights than a faster one may keep
    # the best configuration of the uncapped rounds, when they ran
    [[ -s $RESULTS/gpu_best_$which.args ]] && read -ra extra <"$RESULTS/gpu_best_$which.args"
    [[ -s $RESULTS/gpu_best_$which.detail ]] && nh=$(sed -n 's/.*nh=\([01]\).*/\1/p' "$RESULTS/gpu_best_$which.detail")
    for cap in $caps; do
      echo "== $which under a $cap memory cgroup (cold cache), GPU budget $GPU_BUDGET"
      rm -f "$TMP/hc.json"
      capped hypura $cap "$BIN/hypura" run "$m" -p "$PROMPT" -n $N_GEN --temp 0 -c 512 --gpu-budget $GPU_BUDGET \
        --memory-budget $cap --stats-json "$TMP/hc.json"
      grep -E "^plan:|tiers:|GPU:|experts:|streaming:|streamed|peak memory" "$TMP/c.err" | sed 's/^/    /'
      local ht=$(hypura_json_tps "$TMP/hc.json")
      echo "  hypura auto: $ht tok/s; $(hypura_pred_line "$TMP/hc.json")"
      record "{\"stage\":\"cap-$which\",\"who\":\"hypura\",\"config\":\"auto $cap\",\"tok_s\":$ht,\"pred_tok_s\":$(hypura_json_pred "$TMP/hc.json"),\"cg_peak\":$CG_PEAK,\"oom\":${CG_OOM:-0}}"
      local best=0
      # load modes: mmap (page cache, evictable) and none (anonymous) with and without the GPU's pinned host buffers
      local variants=("best mmap ${nh:-0}" "best none 0" "best none 1")
      [[ "${fallback[*]}" != "${extra[*]}" ]] && variants+=("fallback none 0" "fallback none 1")
      for v in "${variants[@]}"; do
        set -- $v
        local args=("${extra[@]}"); [[ $1 == fallback ]] && args=("${fallback[@]}")
        capped llama $cap "$LLAMA_BIN/llama-bench" -m "$m" -p 0 -n $N_GEN -r 1 -o json "${args[@]}" -lm $2 --no-host $3 -t 16
        local lt=$(python3 -c "import json;print(round(json.load(open('$TMP/c.out'))[0]['avg_ts'],3))" 2>/dev/null || echo 0)
        echo "  llama ${args[*]} -lm $2 --no-host $3: $lt tok/s $( [[ $lt == 0 ]] && tail -1 "$TMP/c.err" | cut -c1-100)"
        record "{\"stage\":\"cap-$which\",\"who\":\"llama\",\"config\":\"${args[*]} -lm $2 --no-host $3 $cap\",\"tok_s\":$lt,\"cg_peak\":$CG_PEAK,\"oom\":${CG_OOM:-0}}"
        best=$(python3 -c "print(max($best,$lt))")
      done
      python3 -c "b=$best; h=$ht; print('  RATIO cap-$which $cap: hypura %s / best llama %s = %s' % (h, b, ('%.2f' % (h/b)) if b > 0 else 'inf (llama failed)'))"
    done
  done
  N_GEN=$NG
}

# memory of one process, sampled every 0.1 s: peaks of RssAnon/RssFile/RssShmem (MiB)
mem_watch() { # OUT ERR cmd... -> prints the peaks and the compute/KV/model buffer lines of libllama's log
  local out=$1 err=$2; shift 2
  "$@" >"$out" 2>"$err" & local pid=$! a=0 f=0 sh=0 x y z
  while kill -0 $pid 2>/dev/null; do
    read -r x y z < <(awk '/^RssAnon/{a=$2}/^RssFile/{f=$2}/^RssShmem/{s=$2}END{print a+0, f+0, s+0}' /proc/$pid/status 2>/dev/null)
    (( ${x:-0} > a )) && a=$x; (( ${y:-0} > f )) && f=$y; (( ${z:-0} > sh )) && sh=$z
    sleep 0.1
  done
  wait $pid; local rc=$?
  echo "    rc $rc, peak RssAnon $((a / 1024)) MiB, RssFile $((f / 1024)) MiB, RssShmem $((sh / 1024)) MiB"
  grep -E "compute buffer size|KV buffer size|model buffer size|output buffer size|generation [0-9]+ tokens|peak memory|tiers:|^plan:|fixed:|memory:" "$err" | sed 's/^/      /' | head -40
}

# where the memory of a GPU-tier run goes, hypura and llama.cpp side by side (the plan's fixed costs)
stage_mem() {
  local m=$DENSE
  echo "== memory of the dense model's runs, GPU budget $GPU_BUDGET, RAM unlimited"
  echo "  hypura --mode resident --gpu-budget $GPU_BUDGET"
  HYPURA_LLAMA_LOG=1 mem_watch "$TMP/m.out" "$TMP/m.err" "$BIN/hypura" run "$m" -p "$PROMPT" -n 16 --temp 0 -c 512 \
    --gpu-budget $GPU_BUDGET --mode resident --plan
  echo "  hypura --mode resident --gpu-budget 0"
  HYPURA_LLAMA_LOG=1 mem_watch "$TMP/m.out" "$TMP/m.err" "$BIN/hypura" run "$m" -p "$PROMPT" -n 4 --temp 0 -c 512 \
    --gpu-budget 0 --mode resident --plan
  echo "  llama-bench -ngl 18 -lm none -t 16"
  mem_watch "$TMP/m.out" "$TMP/m.err" "$LLAMA_BIN/llama-bench" -m "$m" -p 0 -n 16 -r 1 -ngl 18 -lm none -t 16 -v
  echo "  llama-bench -ngl 18 -lm none -t 16 -nopo 1"
  mem_watch "$TMP/m.out" "$TMP/m.err" "$LLAMA_BIN/llama-bench" -m "$m" -p 0 -n 16 -r 1 -ngl 18 -lm none -t 16 -nopo 1
  for cap in ${MEM_CAPS:-7G}; do
    echo "  hypura auto under $cap, -v"
    capped hypura $cap "$BIN/hypura" run "$m" -p "$PROMPT" -n 8 --temp 0 -c 512 --gpu-budget $GPU_BUDGET \
      --memory-budget $cap -v
    grep -E "^plan:|tiers:|fixed:|streaming:|^\[hypura\]|^\[token" "$TMP/c.err" | head -24 | sed 's/^/    /'
    echo "  hypura --mode resident under $cap (budget 64G so that the plan allows it)"
    capped hypura $cap "$BIN/hypura" run "$m" -p "$PROMPT" -n 8 --temp 0 -c 512 --gpu-budget $GPU_BUDGET \
      --memory-budget 64G --mode resident
    grep -E "generation|peak memory" "$TMP/c.err" | sed 's/^/    /'
  done
}

# which layer groups a streamed GPU-tier run loads and releases, in order (HYPURA_STREAM_TRACE)
stage_trace() {
  local cap=${TRACE_CAP:-6.5G}
  echo "== stream trace: dense under a $cap budget, GPU budget $GPU_BUDGET, 3 tokens"
  HYPURA_STREAM_TRACE=1 "$BIN/hypura" run "$DENSE" -p "$PROMPT" -n 3 --temp 0 -c 512 --gpu-budget $GPU_BUDGET \
    --memory-budget $cap >/dev/null 2>"$TMP/t.err"
  grep -E "^plan:|streaming:|^\[hypura\] streamed" "$TMP/t.err" | sed 's/^/    /'
  grep -c "^\[stream\] load" "$TMP/t.err" | sed 's/^/    group loads: /'
  grep "^\[stream\]" "$TMP/t.err" | head -${TRACE_LINES:-60} | sed 's/^/    /'
}

stage_identity() {
  "$ROOT/tests/scripts/gpu_identity.sh" "$BIN" "$TMP"
  echo "== identity on the big models (8 tokens): streamed under a cap vs resident, same GPU placement"
  for which in moe dense; do
    local m=$MOE cap=${MOE_CAP%% *}; [[ $which == dense ]] && { m=$DENSE; cap=${IDENT_DENSE_CAP:-${DENSE_CAP%% *}}; }
    "$BIN/hypura" run "$m" -p "$PROMPT" -n 8 --temp 0 -c 512 --gpu-budget $GPU_BUDGET --mode resident --no-repack \
      --dump-logits "$TMP/r.bin" >"$TMP/r.txt" 2>"$TMP/r.err" || echo "  resident failed: $(tail -1 "$TMP/r.err")"
    "$BIN/hypura" run "$m" -p "$PROMPT" -n 8 --temp 0 -c 512 --gpu-budget $GPU_BUDGET --memory-budget $cap \
      --dump-logits "$TMP/s.bin" >"$TMP/s.txt" 2>"$TMP/s.err" || echo "  streamed failed: $(tail -1 "$TMP/s.err")"
    grep -E "^plan:" "$TMP/s.err" | sed 's/^/    streamed /'
    if [[ -s $TMP/s.bin ]] && cmp -s "$TMP/r.bin" "$TMP/s.bin"; then
      echo "  ok $which: $(stat -c %s "$TMP/s.bin") bytes of logits identical"
    else echo "  FAIL $which: logits differ"; fi
  done
}

for STAGE in "$@"; do
  case $STAGE in
    models|moe|dense|cap|identity|mem|trace) "stage_$STAGE" ;;
    *) echo "unknown stage $STAGE (models moe dense cap identity)"; exit 2 ;;
  esac
done
rm -rf "$TMP"
