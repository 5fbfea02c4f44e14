#!/usr/bin/env bash
# The fault table for `hypura run` in a streaming mode (KIND dense: dense-FFN-
# streaming; experts: expert-streaming of a MoE model with a cache too small to
# hold every expert, so slices are read all through the generation). Faults
# come from the I/O layer's hook (HYPURA_IO_FAULT, src/io/hy_io.h) or from the
# model file itself (truncated or renamed over while the run reads it).
#
# Errors must be one line "hypura run: ..." naming the tensor, the file, the
# offset and the problem, exit status 1 (not a signal, not a hang), and nothing
# computed on a failed read may reach the output: the logits of every step the
# failed run produced (--dump-logits) and its text are a prefix of the resident
# reference's. Faults the reader absorbs (EAGAIN, a slow device, a rename) give
# logits bit-identical to the reference.
# usage: faults_run.sh HY_BIN WORKDIR dense|experts
set -uo pipefail
HY_BIN=$1 KIND=$3 WORK=$2/faults_run_$3
source "$(dirname "$0")/faults_lib.sh"
M=$WORK/model.gguf
make_model "$KIND" "$M"
N=40
RUN=(run -n $N --temp 0 -c 256 -t 2)
MODE=$(want_mode "$KIND")
# the smallest budget the plan accepts: every FFN group (every expert tensor)
# streams and is evicted again within each pass
min=$("$HY_BIN/hypura" estimate "$M" -c 256 --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
[[ -n $min ]] || { echo "no minimum budget in the plan"; exit 1; }
SCHED=(--mode stream --memory-budget "$((${min%.*} + 1))M")
re_esc() { printf '%s' "$1" | sed 's/[].[*^$+?(){}|\\/]/\\&/g'; }

timeout 120 "$HY_BIN/hypura" "${RUN[@]}" "$M" -p "$PROMPT" --no-repack --dump-logits "$WORK/ref.bin" \
  >"$WORK/ref.txt" 2>"$WORK/ref.err" || { cat "$WORK/ref.err"; echo "reference run failed"; exit 1; }
ref_steps=$(($(stat -c %s "$WORK/ref.bin") / VOCAB_BYTES))

# srun NAME MODEL FAULT [args]: a streamed run in the background ($pid); files $WORK/NAME.*
srun_bg() {
  local name=$1 model=$2 fault=$3
  shift 3
  HYPURA_IO_FAULT=$fault timeout 120 "$HY_BIN/hypura" "${RUN[@]}" "$model" -p "$PROMPT" "${SCHED[@]}" "$@" \
    --dump-logits "$WORK/$name.bin" --stats-json "$WORK/$name.json" >"$WORK/$name.txt" 2>"$WORK/$name.err" &
  pid=$!
}
srun() { srun_bg "$@"; wait $pid; rc=$?; }
finish() { wait $pid; rc=$?; }

# expect_same NAME: completed, streamed, bit-identical to the reference
expect_same() {
  local name=$1 why=""
  [[ $rc -eq 0 ]] || why="exit $rc: $(grep -v '^\[hypura\]\|^plan\|^  ' "$WORK/$name.err" | tail -2)"
  [[ -z $why ]] && ! grep -q "$MODE" "$WORK/$name.err" && why="did not plan $MODE"
  [[ -z $why ]] && ! cmp -s "$WORK/$name.bin" "$WORK/ref.bin" && why="logits differ from the reference"
  [[ -z $why ]] && ! cmp -s "$WORK/$name.txt" "$WORK/ref.txt" && why="text differs from the reference"
  if [[ -z $why ]]; then ok "$KIND $name: completed, $ref_steps steps of logits bit-identical to the resident run"
  else bad "$KIND $name: $why"; fi
}

# expect_error NAME REGEX: exit 1 with exactly one error line matching REGEX;
# what was produced before the error is a prefix of the reference
expect_error() {
  local name=$1 re=$2 why="" lines line steps
  lines=$(grep -c '^hypura run: ' "$WORK/$name.err")
  line=$(grep '^hypura run: ' "$WORK/$name.err" | head -1)
  steps=$(($(stat -c %s "$WORK/$name.bin") / VOCAB_BYTES))
  if [[ $rc -eq 124 ]]; then why="hung (killed after 120 s)"
  elif [[ $rc -ne 1 ]]; then why="exit status $rc (want 1)"
  elif [[ $lines -ne 1 ]]; then why="$lines error lines (want 1)"
  elif ! grep -qE "$re" <<<"$line"; then why="error line [$line] does not match /$re/"
  elif grep -qE 'GGML_ASSERT|Segmentation|core dumped|terminate called' "$WORK/$name.err"; then why="crash trace in stderr"
  elif ! grep -q "$MODE" "$WORK/$name.err"; then why="did not plan $MODE"
  elif ! is_prefix "$WORK/$name.bin" "$WORK/ref.bin"; then why="logits before the error differ from the reference"
  elif ! is_prefix "$WORK/$name.txt" "$WORK/ref.txt"; then why="text before the error is not a prefix of the reference"
  fi
  if [[ -z $why ]]; then ok "$KIND $name: exit 1 after $steps good steps; [$line]"
  else bad "$KIND $name: $why"; sed 's/^/    /' "$WORK/$name.err" | tail -5; fi
}

# where to inject: a tensor the plan streams (on these tiny models a dense plan
# streams few groups: each streamed tensor costs a 2 MiB huge-page slot)
PICK=ffn_up; [[ $KIND == experts ]] && PICK=blk.1.ffn_down_exps
T=$("$HY_BIN/hypura" estimate "$M" -c 256 "${SCHED[@]}" --tensors | awk '$3 == "NVMe" {print $1}' | grep "$PICK" | head -1)
[[ -n $T ]] || { echo "the plan streams no $PICK tensor"; exit 1; }
if [[ $KIND == dense ]]; then WHAT="reading '$(re_esc $T)'"
else WHAT="reading expert [0-7] of '$(re_esc $T)'"; fi
TOFF=$(tensor offset "$M" $T)
TSIZE=$(tensor size "$M" $T)
# reads are page-aligned outward, so the pages at a tensor's ends are read with
# its neighbours too: fault the inside, away from them
FOFF=$((TOFF + 8192)) FLEN=$((TSIZE - 16384))
MRE=$(re_esc "$M")

# 1. no fault: the streamed run equals the resident reference
srun none "$M" ""
expect_same none
# 2. EIO anywhere in the tensor: the run stops with the read's error
srun eio "$M" "eio@$FOFF+$FLEN"
expect_error eio "^hypura run: $WHAT: EIO reading $MRE at offset [0-9]+ \(Input/output error\)$"
# 3. short read (the file seems to end inside the tensor)
srun short "$M" "short@$((TOFF + TSIZE / 2))"
expect_error short "^hypura run: $WHAT: short read at offset [0-9]+ of $MRE: end of file [0-9]+ bytes early$"
# 4. EAGAIN on the first attempt of every request of the whole file: retried, same logits
srun eagain "$M" "eagain@0+1G"
expect_same eagain
# 5. a slow device: every request takes at least 15 ms; same logits, slower
srun delay "$M" "delay_ms=15"
expect_same delay
read -r b0 b1 p1 < <(python3 -c 'import json,sys; j=[json.load(open(f))["stream"] for f in sys.argv[1:]]
print(j[0]["io_busy_s"], j[1]["io_busy_s"], j[1]["passes"])' "$WORK/none.json" "$WORK/delay.json")
# the reads of a pass wait for each other's results, so each pass that reads
# is busy >= 15 ms; most passes read here (the pool / cache is the smallest)
if python3 -c "import sys; sys.exit(0 if $b1 >= 0.015 * $p1 / 2 and $b1 > $b0 else 1)"; then
  ok "$KIND delay: I/O busy $b1 s over $p1 passes (without the delay: $b0 s)"
else bad "$KIND delay: I/O busy $b1 s over $p1 passes, without the delay $b0 s: the delay did not reach the run"; fi
if [[ $KIND == experts ]]; then
  # 6. a fault inside generation: one expert's slice of the last layer; the steps
  # before the first read of it are computed, the rest never is
  L=blk.3.ffn_gate_exps.weight
  LOFF=$(tensor offset "$M" $L)
  STRIDE=$(tensor expert_stride "$M" $L)
  best=-1 beste=-1
  for e in 0 1 2 3 4 5 6 7; do
    srun "mid$e" "$M" "eio@$((LOFF + e * STRIDE + STRIDE / 2))"
    if [[ $rc -eq 0 ]]; then
      expect_same "mid$e"   # never routed: nothing was faulty
    else
      expect_error "mid$e" "^hypura run: reading expert $e of '$(re_esc $L)': EIO reading $MRE at offset [0-9]+"
      st=$(($(stat -c %s "$WORK/mid$e.bin") / VOCAB_BYTES))
      [[ $st -gt $best ]] && best=$st beste=$e
    fi
  done
  if [[ $best -ge 1 ]]; then ok "$KIND mid-generation: expert $beste failed at step $best, earlier steps identical"
  else bad "$KIND mid-generation: no expert fault hit after the prompt (best $best)"; fi
fi
# 7. the model file truncated while the run reads it (after the first tokens)
cp "$M" "$WORK/trunc.gguf"
srun_bg trunc "$WORK/trunc.gguf" "delay_ms=20"
if wait_for "$WORK/trunc.txt" . 60; then
  truncate -s "$((TOFF + TSIZE / 2))" "$WORK/trunc.gguf"
  finish
  # (the first read past the new end may be of any streamed tensor after it)
  expect_error trunc "^hypura run: reading [^:]*: $(re_esc "$WORK/trunc.gguf") was truncated while in use \($((TOFF + TSIZE / 2)) bytes now, [0-9]+ when opened\): short read at offset [0-9]+$"
  steps=$(($(stat -c %s "$WORK/trunc.bin") / VOCAB_BYTES))
  [[ $steps -ge 1 ]] || bad "$KIND trunc: failed before the truncation ($steps steps)"
else
  finish
  bad "$KIND trunc: no text within 60 s (exit $rc)"
fi
# 8. the model file replaced (renamed over) while the run reads it: the open
# descriptor keeps the file that was loaded, so the run completes unchanged
cp "$M" "$WORK/ren.gguf"
make_model "$KIND" "$WORK/other.gguf" 77
srun_bg ren "$WORK/ren.gguf" "delay_ms=20"
if wait_for "$WORK/ren.txt" . 60; then
  mv -f "$WORK/other.gguf" "$WORK/ren.gguf"
  finish
  expect_same ren
else
  finish
  bad "$KIND ren: no text within 60 s (exit $rc)"
fi
rm -f "$WORK"/*.gguf "$WORK"/*.bin
exit $fail
