#!/usr/bin/env bash
# A truncated model file at load time: cut in the header, cut in the tensor
# data, and cut while the model is being loaded (reads slowed by the fault hook
# so the cut lands mid-load). `hypura run` and `hypura serve` in streaming
# modes must exit 1 with one line naming the file and the truncation: no crash
# (loading reads through libllama's mapping of the file, where a missing page
# is SIGBUS), no hang.
# usage: faults_load.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/faults_load
source "$(dirname "$0")/faults_lib.sh"

# expect_fail NAME CMD...: exit 1, exactly one "hypura CMD: " error line matching $RE
expect_fail() {
  local name=$1 rc line n
  shift
  timeout 60 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  rc=$?
  n=$(grep -cE '^hypura (run|serve): ' "$WORK/$name.err")
  line=$(grep -E '^hypura (run|serve): ' "$WORK/$name.err" | head -1)
  if [[ $rc -eq 1 && $n -eq 1 ]] && grep -qE "$RE" <<<"$line"; then ok "$name: exit 1; [$line]"
  else bad "$name: exit $rc, $n error lines, want /$RE/"; tail -3 "$WORK/$name.err" | sed 's/^/    /'; fi
}

for kind in dense experts; do
  M=$WORK/$kind.gguf
  make_model $kind "$M"
  size=$(stat -c %s "$M")
  data=$("$HY_BIN/hypura" inspect "$M" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_offset"])')
  for cut in 64 $((data / 2)) $((data + 4096)) $((size - 1000)); do
    head -c $cut "$M" >"$WORK/cut.gguf"
    RE="$(printf '%s' "$WORK/cut.gguf" | sed 's/[].[*^$+?(){}|\\/]/\\&/g'): (truncated|.*past end of file)"
    expect_fail "$kind run, file cut at $cut of $size bytes" \
      "$HY_BIN/hypura" run "$WORK/cut.gguf" -p hi -n 4 -c 256 --mode stream
    [[ $cut -eq $((size - 1000)) ]] &&
      expect_fail "$kind serve, file cut at $cut of $size bytes" \
        "$HY_BIN/hypura" serve "$WORK/cut.gguf" --port 0 -c 256 --mode stream
  done
done

# cut while loading: every read takes >= 100 ms, the cut comes 1 s in
M=$WORK/dense.gguf
min=$("$HY_BIN/hypura" estimate "$M" -c 256 --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
data=$("$HY_BIN/hypura" inspect "$M" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_offset"])')
for cmd in run serve; do
  cp "$M" "$WORK/live.gguf"
  if [[ $cmd == run ]]; then args=(-p hi -n 4); else args=(--port 0); fi
  RE="$(printf '%s' "$WORK/live.gguf" | sed 's/[].[*^$+?(){}|\\/]/\\&/g') was truncated while (loading|in use)"
  (sleep 1; truncate -s $((data + 8192)) "$WORK/live.gguf") &
  cutter=$!
  HYPURA_IO_FAULT=delay_ms=100 expect_fail "dense $cmd, file cut while loading" \
    "$HY_BIN/hypura" $cmd "$WORK/live.gguf" "${args[@]}" -c 256 --mode stream --memory-budget "$((${min%.*} + 1))M"
  wait $cutter
  grep -q "io fault injection active" "$WORK/dense $cmd, file cut while loading.err" || bad "$cmd: the delay was not applied"
done
rm -f "$WORK"/*.gguf
exit $fail
