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

# The VRAM expert cache (--gpu-xcache): MoE layers whose experts stay in RAM compute
# them on the GPU from slot windows. Reference: the same model with every tensor on the
# GPU (the experts computed by the same kernels from whole tensors); the cached run keeps
# the output head, attention and K/V on the GPU too (the least GPU budget that holds
# them all, found from the plan), and its experts in pinned RAM, with the smallest cache
# the plan accepts (top-k slots per layer: misses every token) and a larger one. The
# prompt (11 tokens) goes through the whole-layer area (batched kernels), decode through
# the slots (remapped ids). Mixtral-like (8 experts top-2) and qwen3moe (32 experts top-4;
# a down projection of 256 columns, not a multiple of the kernels' 512-column padding).
"$HY_BIN/hypura-mkmodel" -o "$WORK/vq3.gguf" --arch qwen3moe --layers 4 --dim 256 --heads 4 --kv-heads 2 --head-dim 64 \
  --experts 32 --top-k 4 --expert-ff 256 --type q4_k --routing zipf --seed 9 --quiet >/dev/null
for m in "$WORK/moe.gguf" "$WORK/vq3.gguf"; do
  km=$(basename "$m" .gguf)
  base=""
  for mb in $(seq 36 2 160); do
    g=$("$HY_BIN/hypura" estimate "$m" -c 256 --gpu-budget ${mb}M 2>&1 | grep "GPU:")
    if grep -q "attention + K/V of \([0-9]*\) of \1 layers, experts of 0 layers" <<<"$g"; then base=$mb; break; fi
  done
  [[ -n $base ]] || { echo "FAIL vxc $km: no GPU budget holds all attention without experts"; fail=1; continue; }
  run "$m" -p "$p" --gpu-budget 400M --mode resident --no-repack --dump-logits "$WORK/vref.bin" >"$WORK/vref.txt" ||
    { echo "FAIL vxc $km: all-GPU reference run: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
  "$HY_BIN/hypura" run "$m" -p x -n 1 -c 256 --gpu-budget $((base + 1))M --gpu-xcache 1M 2>"$WORK/last.err" >/dev/null
  need=$(sed -n 's/.*holds fewer than [0-9]* experts per layer; at least \([0-9.]*\) MiB.*/\1/p' "$WORK/last.err")
  [[ -n $need ]] || { echo "FAIL vxc $km: a 1 MiB cache was not refused with the size it needs: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
  for x in $(python3 -c "import math; print(math.ceil($need + 0.1), math.ceil($need * 2))"); do
    got=$(run "$m" -p "$p" --gpu-budget $((base + x))M --gpu-xcache ${x}M --dump-logits "$WORK/vx.bin") ||
      { echo "FAIL vxc $km --gpu-xcache ${x}M: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
    line=$(grep -o 'VRAM expert cache: [0-9]* layers x.*' "$WORK/last.err")
    if cmp -s "$WORK/vref.bin" "$WORK/vx.bin" && [[ "$got" == "$(cat "$WORK/vref.txt")" ]] && [[ -s $WORK/vx.bin ]]; then
      echo "ok vxc $km --gpu-budget $((base + x))M --gpu-xcache ${x}M: logits identical to all-GPU [$line]"
    else
      echo "FAIL vxc $km --gpu-budget $((base + x))M --gpu-xcache ${x}M: logits differ from all-GPU [$line]"; fail=1
      # where: the prompt (batched, whole-layer area) or decode (slots)
      python3 - "$WORK/vref.bin" "$WORK/vx.bin" <<'PY'
import sys
a, b = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read()
n = min(len(a), len(b)); first = next((i for i in range(0, n, 4) if a[i:i+4] != b[i:i+4]), None)
print("   first differing byte", first, "of", n)
PY
    fi
  done
  # the NVMe tier under the cache: expert-streaming at its least memory budget, the misses
  # of the windows served from the RAM expert cache or read from the file (hy_vxc.h)
  x=$(python3 -c "import math; print(math.ceil($need + 0.1))")
  g=$((base + x))
  min=$("$HY_BIN/hypura" estimate "$m" -c 256 --gpu-budget ${g}M --mode stream --memory-budget 1M 2>&1 |
        sed -n 's/.*the minimum is \([0-9.]*\) MiB.*/\1/p')
  mb=$(python3 -c "print(round(${min:-0} + 0.1, 1))")M
  got=$(run "$m" -p "$p" --gpu-budget ${g}M --gpu-xcache ${x}M --mode stream --memory-budget $mb --dump-logits "$WORK/vx.bin") ||
    { echo "FAIL vxc+nvme $km --memory-budget $mb: $(tail -1 "$WORK/last.err")"; fail=1; continue; }
  line=$(grep -o 'VRAM expert cache: [0-9]* layers x.*' "$WORK/last.err")
  under=$(grep -o 'under it: RAM expert cache.*' "$WORK/last.err")
  if cmp -s "$WORK/vref.bin" "$WORK/vx.bin" && [[ "$got" == "$(cat "$WORK/vref.txt")" ]] && [[ -n $under ]]; then
    echo "ok vxc+nvme $km --gpu-budget ${g}M --gpu-xcache ${x}M --memory-budget $mb: logits identical to all-GPU [$line] [$under]"
  else
    echo "FAIL vxc+nvme $km --gpu-budget ${g}M --gpu-xcache ${x}M --memory-budget $mb: logits differ from all-GPU [$line] [$under]"; fail=1
  fi
done
exit $fail
