#!/usr/bin/env bash
# Expert-streaming of today's fine-grained MoE layouts (hypura-mkmodel --arch) never
# changes the math: every generated step's logits equal the resident run's (same
# kernels: --no-repack) at the default streaming budget and at the minimum budget
# `hypura estimate` reports (the cache evicts all the time), with io_uring and
# pread, and for a prompt longer than one batch; only routed slices are read.
#   qwen3moe: Q4_K, attention q/k norms, 32 experts top-4 (zipf routing)
#   gpt-oss:  MXFP4 experts with per-expert biases (their slices stream too),
#             Q8_0 attention with biases and sinks, sliding window (zipf routing)
#   qwen2moe: Q8_0, a shared expert beside 16 routed ones top-4 (skewed routing)
# usage: expert_identity_arch.sh HY_BIN WORKDIR ARCH
set -euo pipefail
HY_BIN=$1 ARCH=$3 WORK=$2/expert_identity_$3
source "$(dirname "$0")/expert_lib.sh"
m=$WORK/$ARCH.gguf
mk=("$HY_BIN/hypura-mkmodel" -o "$m" --arch "$ARCH" --layers 4 --seed 9 --quiet)
case $ARCH in
  qwen3moe) "${mk[@]}" --dim 256 --heads 4 --kv-heads 2 --head-dim 64 --experts 32 --top-k 4 --expert-ff 256 \
              --type q4_k --routing zipf ;;
  gpt-oss)  "${mk[@]}" --dim 256 --heads 8 --kv-heads 2 --head-dim 64 --experts 32 --top-k 4 --expert-ff 256 \
              --type q8_0 --routing zipf ;;
  qwen2moe) "${mk[@]}" --dim 256 --heads 4 --kv-heads 4 --experts 16 --top-k 4 --expert-ff 256 --shared-ff 512 \
              --type q8_0 --skew 1 ;;
  *) echo "unknown arch $ARCH"; exit 2 ;;
esac >/dev/null
"$HY_BIN/hypura" inspect "$m" | head -3
p="In a hole in the ground there lived a hobbit"
run "$m" -p "$p" -n 24 --no-repack --dump-logits "$WORK/ref.bin" >/dev/null
min=$(min_budget "$m")
tight="--mode stream --memory-budget ${min}M"
echo "minimum budget ${min} MiB"
for cfg in "--mode stream" "$tight" "$tight --io pread"; do
  run "$m" -p "$p" -n 24 $cfg --dump-logits "$WORK/x.bin" >/dev/null
  same_logits "$ARCH [$cfg]" "$WORK/ref.bin" "$WORK/x.bin" expert-streaming
done
# the tight run evicted, and read less than the whole expert tensors
ev=$(sed -n 's/.* \([0-9]*\) evictions.*/\1/p' "$WORK/last.err")
cut=$(sed -n 's/.*the routed slices are .* (\([0-9.]*\)% less).*/\1/p' "$WORK/last.err")
[[ ${ev:-0} -gt 0 ]] || { echo "$ARCH: the tight cache never evicted"; fail=1; }
python3 -c "import sys; sys.exit(0 if float('${cut:-0}') >= 50 else 1)" ||
  { echo "$ARCH: routed slices only ${cut:-?}% less than whole expert tensors (decode alone: 87.5% for top-4 of 32, 75% of 16)"; fail=1; }
# a prompt longer than one batch: each batch reads the union of its experts once
long=$(printf 'word %.0s' $(seq 1 150))
run "$m" -p "$long" -n 4 -b 64 --no-repack --dump-logits "$WORK/ref2.bin" >/dev/null
run "$m" -p "$long" -n 4 -b 64 $tight --dump-logits "$WORK/x2.bin" >/dev/null
same_logits "$ARCH multi-batch prompt [$tight]" "$WORK/ref2.bin" "$WORK/x2.bin" expert-streaming
exit $fail
