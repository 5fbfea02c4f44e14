#!/usr/bin/env bash
# hypura bench: both runs complete, the JSON result and PNG chart are written,
# the figures are real (positive tok/s, peaks), and a baseline that cannot fit
# is refused unless --force.
set -euo pipefail
HY_BIN=$1 WORK=$2/bench_smoke
rm -rf "$WORK"; mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache
m=$WORK/m.gguf
"$HY_BIN/hypura-mkmodel" -o "$m" --dim 256 --layers 3 --ff 512 --quiet >/dev/null
"$HY_BIN/hypura" bench "$m" -n 8 -c 256 --mode stream --out "$WORK/res" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
j=$(ls "$WORK"/res/bench-*.json); ls "$WORK"/res/bench-*.png >/dev/null
python3 - "$j" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = d["runs"]
assert len(runs) == 2, runs
for r in runs:
    assert r["exit"] == 0 and r["gen_tps"] > 0 and r["peak_bytes"] > 0, r
assert "streamed" in runs[1]["stats"], runs[1]
print("ok:", [(r["name"], round(r["gen_tps"], 1)) for r in runs])
PY
# a baseline that cannot fit the memory given is refused (the plan itself streams fine)
m2=$WORK/m2.gguf
"$HY_BIN/hypura-mkmodel" -o "$m2" --dim 1024 --layers 6 --ff 2816 --heads 8 --kv-heads 4 --quiet >/dev/null
if "$HY_BIN/hypura" bench "$m2" -n 2 -c 256 --memory-budget 200M --out "$WORK/res2" 2>"$WORK/err2"; then
  echo "expected a refusal"; exit 1; fi
grep -q "force" "$WORK/err2" || { cat "$WORK/err2"; exit 1; }
echo "ok: refusal names --force"
