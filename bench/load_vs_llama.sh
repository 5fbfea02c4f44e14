#!/usr/bin/env bash
# Issue 12: how long a model that fits takes to load. hypura run's resident load,
# with repacking (the default) and without, against llama-completion from the
# same pinned build (mmap + repack, llama.cpp's defaults), interleaved, with the
# page cache warm (the file read just before each run) and/or cold (all caches
# dropped before each run: root only).
#   load time: hypura's load_s (--stats-json: model, context, every weight in
#   place); llama.cpp's from its log's timestamps, from "load the model" to the
#   threadpool's init right after common_init (model + context). Wall, user and
#   system time of each whole run (-n 1, no warm-up) are printed beside them.
# usage: bench/load_vs_llama.sh [MODEL] [ROUNDS]
#   MODEL   default $MODELS/fg-llama.gguf (a 3.7 GiB MoE, llama layout, 64 experts top-8, Q4_K: made if missing)
#   env: CACHE=warm|cold|both (default warm), PAUSE=seconds between runs (default 5: on a VM, memory
#        freed by one run and reused by the next at once costs less to touch than memory the host took
#        back), THREADS (default nproc), HYPURA=path of another hypura binary (a before/after comparison)
# Prints each run, the medians and the ratios hypura/llama.cpp; writes
# bench/results/load_vs_llama.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
M=${1:-$MODELS/fg-llama.gguf} R=${2:-3}
T=${THREADS:-$(nproc)} PAUSE=${PAUSE:-5} CACHE=${CACHE:-warm}
HY=${HYPURA:-$BIN/hypura}
if [[ ! -f $M ]]; then
  [[ $M == "$MODELS/fg-llama.gguf" ]] || { echo "no model $M" >&2; exit 2; }
  "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --heads 16 --kv-heads 4 --ff 768 --experts 64 --top-k 8 \
    --type q4_k --target-size 3.7G --seed 5 --quiet
fi
case $CACHE in warm) caches=(warm) ;; cold) caches=(cold) ;; both) caches=(warm cold) ;;
  *) echo "CACHE must be warm, cold or both" >&2; exit 2 ;; esac
if [[ " ${caches[*]} " == *" cold "* && $(id -u) -ne 0 ]]; then echo "cold loads need root (drop_caches)" >&2; exit 2; fi
export HYPURA_NO_PERSIST_STATS=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
P="The history of"

prepare() { if [[ $1 == warm ]]; then cat "$M" >/dev/null; else drop_caches; fi; }
# seconds between two lines of llama.cpp's log ("M.SS.mmm.uuu I text" timestamps)
llama_load_s() {
  python3 - "$1" <<'PY'
import re, sys
ts = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(\d+)\.(\d+)\.(\d+)\.(\d+) ", line)
    if not m: continue
    t = int(m[1]) * 60 + int(m[2]) + int(m[3]) / 1e3 + int(m[4]) / 1e6
    if "load the model" in line and "a" not in ts: ts["a"] = t
    if "threadpool init" in line and "b" not in ts: ts["b"] = t
print(f"{ts['b'] - ts['a']:.2f}" if "a" in ts and "b" in ts else "nan")
PY
}
# run KIND CACHE: one run; sets LOAD WALL USR SYS
run() {
  local kind=$1 cache=$2
  prepare "$cache"
  case $kind in
    llama) /usr/bin/time -f "%e %U %S" -o "$TMP/time" "$LLAMA_BIN/llama-completion" -m "$M" -p "$P" -n 1 \
             --no-warmup -no-cnv --temp 0 -t "$T" >/dev/null 2>"$TMP/err" || { tail -3 "$TMP/err" >&2; return 1; }
           LOAD=$(llama_load_s "$TMP/err") ;;
    repack|no-repack)
           rm -f "$TMP/s.json"
           /usr/bin/time -f "%e %U %S" -o "$TMP/time" "$HY" run "$M" -p "$P" -n 1 --no-warmup --temp 0 -t "$T" \
             --$kind --stats-json "$TMP/s.json" >/dev/null 2>"$TMP/err" || { tail -3 "$TMP/err" >&2; return 1; }
           LOAD=$(python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['load_s']:.2f}\")" "$TMP/s.json") ;;
  esac
  read -r WALL USR SYS < "$TMP/time"
  sleep "$PAUSE"
}

declare -A loads walls
kinds=(llama repack no-repack)
echo "model $(basename "$M") ($(( $(stat -c %s "$M") >> 20 )) MiB), $T threads, $R rounds, pause ${PAUSE}s; hypura: $HY"
for cache in "${caches[@]}"; do
  for i in $(seq "$R"); do
    # rotate the order each round: no kind always follows the same one
    for k in $(seq 0 2); do
      kind=${kinds[$(( (k + i) % 3 ))]}
      run "$kind" "$cache"
      loads[$cache.$kind]+="$LOAD " walls[$cache.$kind]+="$WALL "
      printf '%-5s round %d %-18s load %6s s | run %6s s (user %s s, system %s s)\n' "$cache" "$i" \
        "$([[ $kind == llama ]] && echo llama.cpp || echo "hypura --$kind")" "$LOAD" "$WALL" "$USR" "$SYS"
    done
  done
done
json="{\"model\": \"$(basename "$M")\", \"bytes\": $(stat -c %s "$M"), \"threads\": $T, \"rounds\": $R"
for cache in "${caches[@]}"; do
  echo "== $cache page cache: medians of $R (load | whole run)"
  declare -A med
  for kind in "${kinds[@]}"; do
    med[$kind]=$(tr ' ' '\n' <<<"${loads[$cache.$kind]}" | grep -v '^$' | median)
    w=$(tr ' ' '\n' <<<"${walls[$cache.$kind]}" | grep -v '^$' | median)
    printf '  %-18s load %6.2f s | run %6.2f s   [%s]\n' \
      "$([[ $kind == llama ]] && echo llama.cpp || echo "hypura --$kind")" "${med[$kind]}" "$w" "${loads[$cache.$kind]% }"
    json+=", \"${cache}_${kind//-/_}_load_s\": ${med[$kind]}, \"${cache}_${kind//-/_}_run_s\": $w"
  done
  for kind in repack no-repack; do
    r=$(python3 -c "print(round(${med[$kind]}/${med[llama]},3))")
    echo "  ratio hypura --$kind / llama.cpp (load): $r"
    json+=", \"${cache}_ratio_${kind//-/_}\": $r"
  done
done
echo "$json}" > "$RESULTS/load_vs_llama.json"
echo "wrote $RESULTS/load_vs_llama.json"
