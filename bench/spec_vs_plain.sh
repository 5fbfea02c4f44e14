#!/usr/bin/env bash
# Issue 14: speculative decoding on a streamed target. A ~3 GB dense Q4_K model
# under a 1.5 GiB cgroup cap, cold page cache each run: hypura run plain, with
# an early-exit draft (the target's first DRAFT_LAYERS blocks, mkmodel
# --draft-of) and with an unrelated draft (another seed, same vocabulary):
# tok/s, acceptance, tokens per target pass, whether the greedy text equals
# plain decoding's; and llama.cpp's llama-speculative-simple (pinned build,
# compiled here against its libraries) with the early-exit pair under the same cap.
#
# Random-weight models: every block writes a random direction into the residual
# stream, so how much an early exit agrees with the full model is set by how
# much the later blocks move the stream. The target is made with --layer-scale
# LAYER_SCALE (default 0.1: all blocks together move it by 0.1 of the
# embedding's rms); the acceptance it gives is measured and reported, it says
# little about real model pairs. Needs root (cgroup). Writes
# bench/results/spec_vs_plain.json (OUT= to write elsewhere).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
T=${THREADS:-$(nproc)} N=${N_GEN:-24}
CAP_MIB=${CAP_MIB:-1536}; CAP=$((CAP_MIB << 20))
LS=${LAYER_SCALE:-0.1} DL=${DRAFT_LAYERS:-4} KMAX=${DRAFT_MAX:-8}
OUTF=${OUT:-$RESULTS/spec_vs_plain.json}
M="$MODELS/dense-${TARGET_SIZE:-3G}-q4k-ls${LS}.gguf"
D="${M%.gguf}-draft${DL}.gguf"
U="$MODELS/unrelated-draft-q4k.gguf"
[[ -f $M ]] || "$BIN/hypura-mkmodel" -o "$M" --dim 2048 --ff 5632 --heads 16 --kv-heads 4 --type q4_k --target-size ${TARGET_SIZE:-3G} \
  --seed 5 --layer-scale "$LS" --quiet
[[ -f $D ]] || "$BIN/hypura-mkmodel" -o "$D" --draft-of "$M" --layers "$DL" --quiet
[[ -f $U ]] || "$BIN/hypura-mkmodel" -o "$U" --dim 512 --layers 4 --ff 1536 --heads 8 --kv-heads 4 --type q4_k --seed 77 --quiet
P="The history of the printing press"
W=$(mktemp -d)
echo "target $(( $(stat -c %s "$M") >> 20 )) MiB (layer scale $LS), early-exit draft $(( $(stat -c %s "$D") >> 20 )) MiB" \
     "($DL blocks), unrelated draft $(( $(stat -c %s "$U") >> 20 )) MiB; cap $CAP_MIB MiB, $N tokens, $T threads"

hy() { # name, extra args
  local name=$1; shift
  drop_caches
  run_capped $CAP $W/o-$name $W/e-$name "$BIN/hypura" run "$M" -p "$P" -n $N --temp 0 -c 512 -t $T \
    --memory-budget ${CAP_MIB}M --stats-json $W/s-$name.json "$@"
  echo "$name: exit $RC, oom kills ${CG_OOM:-0}, peak $((CG_PEAK >> 20)) MiB, $(hypura_json_tps $W/s-$name.json) tok/s"
  grep -E "^\[hypura\] speculative|^plan:|draft model:" $W/e-$name | sed 's/^/    /'
  [[ $RC == 0 ]] || tail -3 $W/e-$name | sed 's/^/    /'
  eval "${name}_rc=$RC ${name}_peak=$CG_PEAK ${name}_oom=${CG_OOM:-0}"
}
hy plain
hy early --draft "$D" --draft-max $KMAX
hy unrelated --draft "$U" --draft-max $KMAX

# llama.cpp's own: llama-speculative-simple of the pinned build, compiled against its libraries;
# without repacking (-nr), as bench/stream_vs_llama.sh's "llama.cpp mmap": repacked weights are
# anonymous memory, the whole target's of it, which the cap cannot hold
SPS="${HYPURA_BUILD_DIR:-$ROOT/build}/llama-extra/llama-speculative-simple"
LSRC="$(sed -n 's/^LLAMA_CPP_DIR:PATH=//p' "${HYPURA_BUILD_DIR:-$ROOT/build}/CMakeCache.txt")"
if [[ ! -x $SPS ]]; then
  mkdir -p "$(dirname "$SPS")"
  (cd "$LSRC" && g++ -std=c++17 -O2 -o "$SPS" examples/speculative-simple/speculative-simple.cpp -Iinclude -Icommon \
     -Iggml/include -Ivendor -L"$LLAMA_BIN" -lllama-common -lllama -lggml -lggml-base -Wl,-rpath,"$LLAMA_BIN" -pthread) \
    2>$W/sps-build.err || { echo "llama-speculative-simple: not built (see below), skipped"; tail -3 $W/sps-build.err; }
fi
l_tps=0 l_acc=None l_rc=None l_peak=0
if [[ -x $SPS ]]; then
  drop_caches
  run_capped $CAP $W/o-llama $W/e-llama timeout 900 "$SPS" -m "$M" -md "$D" -p "$P" -n $N --temp 0 -c 512 -t $T \
    --spec-type draft-simple --spec-draft-n-max $KMAX -nr
  l_rc=$RC l_peak=$CG_PEAK
  l_tps=$(sed -n 's/.*decoded .* speed: *\([0-9.]*\) t\/s.*/\1/p' $W/e-llama | tail -1); l_tps=${l_tps:-0}
  l_acc=$(sed -n 's/.*accept *= *\([0-9.]*\)%.*/\1/p' $W/e-llama | tail -1); l_acc=${l_acc:-None}
  echo "llama-speculative-simple: exit $RC, oom kills ${CG_OOM:-0}, peak $((CG_PEAK >> 20)) MiB, $l_tps tok/s (decode," \
       "prompt included), acceptance ${l_acc}%"
fi

python3 - "$W" "$OUTF" <<PY
import json, sys
w, out = sys.argv[1], sys.argv[2]
def load(n):
    try: return json.load(open(f"{w}/s-{n}.json"))
    except Exception: return {}
plain_text = open(f"{w}/o-plain").read()
r = {"model": "$(basename "$M")", "layer_scale": $LS, "draft_layers": $DL, "cap_mib": $CAP_MIB, "n_gen": $N,
     "threads": $T, "draft_max": $KMAX}
p = load("plain"); base = p.get("gen_tps", 0)
r["plain"] = {"exit": $plain_rc, "peak": $plain_peak, "tps": base, "mode": p.get("mode")}
for n in ("early", "unrelated"):
    s = load(n); x = s.get("speculative", {})
    same = open(f"{w}/o-{n}").read() == plain_text
    r[n] = {"exit": globals().get("rc_" + n), "tps": s.get("gen_tps", 0), "speedup": s.get("gen_tps", 0) / base if base else None,
            "acceptance": x.get("acceptance"), "tokens_per_pass": x.get("tokens_per_pass"), "drafted": x.get("drafted"),
            "accepted": x.get("accepted"), "draft_bytes": x.get("draft_bytes"), "same_text_as_plain": same}
    print(f"{n:10s}: {r[n]['tps']:.3f} tok/s = {r[n]['speedup'] or 0:.2f}x plain ({base:.3f}), acceptance "
          f"{100*(x.get('acceptance') or 0):.1f}%, {x.get('tokens_per_pass') or 0:.2f} tokens per target pass, "
          f"greedy text {'equal to' if same else 'DIFFERENT from'} plain")
r["early"]["exit"], r["unrelated"]["exit"] = $early_rc, $unrelated_rc
r["early"]["peak"], r["unrelated"]["peak"] = $early_peak, $unrelated_peak
r["llama_speculative_simple"] = {"exit": $l_rc, "peak": $l_peak, "tps": $l_tps, "acceptance_pct": $l_acc}
if $l_tps and base: print(f"llama-speculative-simple: {$l_tps:.3f} tok/s; hypura early-exit / it = {r['early']['tps'] / $l_tps:.2f}x")
json.dump(r, open(out, "w"), indent=1)
PY
rm -rf "$W"
