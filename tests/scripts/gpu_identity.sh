#!/usr/bin/env bash
# GPU tier: a run that streams what is not on the GPU must give the same logits,
# bit for bit, as a run with the same GPU placement and the rest loaded resident
# (--no-repack: the CPU-side weights use the same kernels in both). Dense
# (layer groups stream) and MoE (experts stream; the routers run on the GPU and
# their choices are read back). Skips (77) without a GPU.
#   gpu_identity.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/gpu_identity
mkdir -p "$WORK"
if ! "$HY_BIN/hypura" profile --quick 2>/dev/null | grep -q "^GPU 0"; then
  echo "skip: no GPU (ggml finds no GPU device in this build)"; exit 77
fi
fail=0
run() { "$HY_BIN/hypura" run "$@" -n 12 --temp 0 -c 256 2>"$WORK/last.err"; }
p="The quick brown fox jumps over the lazy dog because"
for kind in dense moe; do
  m="$WORK/$kind.gguf"
  # budgets: the output head and compute buffer take ~47 MB here; then attention
  # of some or all layers; then FFN / expert layers, with at least one left to stream
  if [[ $kind == dense ]]; then args=(--dim 512 --layers 6 --ff 1536); budgets="48M 56M"
  else args=(--dim 512 --layers 6 --ff 768 --experts 8 --top-k 2 --skew 0.5); budgets="48M 56M 64M"; fi
  [[ -f $m ]] || "$HY_BIN/hypura-mkmodel" -o "$m" "${args[@]}" --heads 8 --kv-heads 4 --type q4_k --seed 5 --quiet >/dev/null
  for gb in $budgets; do
    plan=$("$HY_BIN/hypura" run "$m" -p x -n 1 -c 256 --gpu-budget $gb --mode stream --plan 2>&1)
    gline=$(grep "GPU:" <<<"$plan" | head -1)
    min=$(sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p' <<<"$plan")
    ref=$(run "$m" -p "$p" --gpu-budget $gb --mode resident --no-repack --dump-logits "$WORK/ref.bin") || { echo "FAIL $kind $gb: resident run: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
    got=$(run "$m" -p "$p" --gpu-budget $gb --mode stream --memory-budget $(( ${min%.*} + 1 ))M --dump-logits "$WORK/s.bin") || { echo "FAIL $kind $gb: streamed run: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
    grep -q "GPU:" <<<"$gline" || { echo "FAIL $kind $gb: the plan uses no GPU"; fail=1; }
    if cmp -s "$WORK/ref.bin" "$WORK/s.bin" && [[ "$ref" == "$got" ]] && [[ -s $WORK/s.bin ]]; then
      echo "ok $kind gpu-budget=$gb: $(stat -c %s "$WORK/s.bin") bytes of logits identical [${gline#  }]"
    else
      echo "FAIL $kind gpu-budget=$gb: logits differ [${gline#  }]"; fail=1
    fi
  done
done
exit $fail
