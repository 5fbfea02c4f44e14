#!/usr/bin/env bash
# hypura run's greedy output equals llama-completion's (same pinned build, same
# file, same prompt), for each weight type and with repacking off and on.
set -euo pipefail
HY_BIN=$1 LLAMA_BIN=$2 WORK=$3/run_vs_llama
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache
prompt="The capital of France is"
fail=0
for type in q8_0 q4_0 q4_k f16; do
  m=$WORK/m-$type.gguf
  "$HY_BIN/hypura-mkmodel" -o "$m" --dim 512 --layers 3 --ff 1024 --type $type --seed 7 --quiet >/dev/null
  for rp in no-repack repack; do
    if [[ $rp == repack ]]; then lflag=""; else lflag="-nr"; fi
    llama() { "$LLAMA_BIN/llama-completion" -m "$m" -p "$prompt" -n 24 --temp 0 -no-cnv --no-warmup -c 256 -t 2 $lflag 2>"$WORK/llama.err"; }
    ref=$(llama) || { echo "llama-completion failed ($type $rp):"; tail -n 5 "$WORK/llama.err"; fail=1; }
    got=$("$HY_BIN/hypura" run "$m" -p "$prompt" -n 24 --temp 0 -c 256 -t 2 --$rp 2>"$WORK/hypura.err") \
      || { echo "hypura run failed ($type $rp):"; tail -5 "$WORK/hypura.err"; fail=1; }
    # llama-completion echoes the prompt (with the tokenizer's leading space). Under
    # load its output has twice lacked its last token (the reference, not hypura, was
    # short); the reference alone is then taken once more, and the mismatch still fails.
    if [[ "$ref" != " $prompt$got" && "$ref" != "$prompt$got" && ( " $prompt$got" == "$ref"* || "$prompt$got" == "$ref"* ) ]]; then
      echo "note $type $rp: llama-completion's text is a prefix of hypura's; running it again"
      ref=$(llama) || fail=1
    fi
    if [[ "$ref" != " $prompt$got" && "$ref" != "$prompt$got" ]]; then
      echo "MISMATCH $type $rp"; echo "  llama : [$ref]"; echo "  hypura: [$got]"; fail=1
      tail -n 3 "$WORK/llama.err" "$WORK/hypura.err"
    else
      echo "ok $type $rp: [${got:0:60}...]"
    fi
    [[ -n "$got" ]] || { echo "empty output for $type"; fail=1; }
  done
done
exit $fail
