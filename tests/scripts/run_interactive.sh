#!/usr/bin/env bash
# hypura run --interactive: two user turns through the model's chat template,
# /exit ends the session; each reply is the greedy continuation of the
# formatted conversation (checked against a --prompt run of the same text).
set -euo pipefail
HY_BIN=$1 WORK=$2/run_interactive
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache
m=$WORK/m.gguf
"$HY_BIN/hypura-mkmodel" -o "$m" --dim 256 --layers 2 --ff 512 --quiet >/dev/null
out=$(printf 'Hello there\nTell me more\n/exit\n' | "$HY_BIN/hypura" run "$m" -i --temp 0 -n 8 -c 512 --system "Be brief." 2>"$WORK/err")
n_stats=$(grep -c "generation 8 tokens" "$WORK/err" || true)
[[ $n_stats -eq 2 ]] || { echo "expected 2 replies of 8 tokens, stats lines: $n_stats"; cat "$WORK/err"; exit 1; }
# the first reply equals a plain run of the chatml-formatted first turn (the
# model has no template of its own, so libllama's chatml is used)
first=$(head -1 <<<"$out")
p=$'<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n'
ref=$("$HY_BIN/hypura" run "$m" -p "$p" --temp 0 -n 8 -c 512 2>/dev/null)
[[ "$first" == "$ref" ]] || { echo "first reply [$first] != [$ref]"; exit 1; }
echo "ok: two turns, first reply matches the formatted prompt: [$first]"
