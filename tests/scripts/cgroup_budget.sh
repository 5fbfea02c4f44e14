#!/usr/bin/env bash
# Hard memory budget: a model much larger than a cgroup memory cap streams to
# the end inside that cap: not OOM-killed, peak usage of the group <= cap, and
# the same greedy text as the resident run outside the cap.
#   KIND=dense (default): a dense model about 2x the cap, dense-FFN-streaming
#   KIND=moe: a MoE model >= 2.5x the cap, expert-streaming
# Skips (77) where no memory cgroup can be made (not root, no v1/v2 controller).
set -uo pipefail
HY_BIN=$1 KIND=${3:-dense} WORK=$2/cgroup_budget_$KIND
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache
# the MoE cap is larger: the expert cache must hold a whole layer of experts,
# the expert cache charged per slot (hy_plan_xslot_cost) and per arena
if [[ $KIND == moe ]]; then CAP_MIB=${HY_TEST_CAP_MIB:-448}; else CAP_MIB=${HY_TEST_CAP_MIB:-320}; fi
CAP=$((CAP_MIB * 1024 * 1024))
if [[ $KIND == moe ]]; then
  shape="--experts 8 --top-k 2 --skew 1"; ratio_x10=26; mode=expert-streaming
else
  shape=""; ratio_x10=20; mode=dense-FFN-streaming
fi
m=$WORK/$KIND.gguf
"$HY_BIN/hypura-mkmodel" -o "$m" --dim 1024 --ff 2816 --heads 8 --kv-heads 4 --type q8_0 $shape \
  --target-size $((CAP_MIB * ratio_x10 / 10 + 16))M --seed 11 --quiet >/dev/null || exit 1
size=$(stat -c %s "$m")
echo "$KIND model $((size >> 20)) MiB, cap $CAP_MIB MiB"
(( size * 10 >= CAP * (ratio_x10 - 1) )) || { echo "model is not ${ratio_x10}/10 x the cap"; exit 1; }
"$HY_BIN/hypura" profile >/dev/null 2>&1   # measured outside the cap, cached
prompt="In the beginning"
ref=$("$HY_BIN/hypura" run "$m" -p "$prompt" -n 8 --temp 0 -c 256 -t 2 2>/dev/null) || exit 1

# make a group: v1 or v2
CG=""
if [[ -w /sys/fs/cgroup/memory ]]; then
  CG=/sys/fs/cgroup/memory/hypura-test-$KIND-$$
  mkdir "$CG" 2>/dev/null && echo $CAP > "$CG/memory.limit_in_bytes" || CG=""
  V=1
elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  CG=/sys/fs/cgroup/hypura-test-$KIND-$$
  mkdir "$CG" 2>/dev/null && echo $CAP > "$CG/memory.max" && echo 0 > "$CG/memory.swap.max" 2>/dev/null || true
  [[ -f $CG/memory.max ]] || CG=""
  V=2
fi
if [[ -z $CG ]]; then echo "SKIP: cannot create a memory cgroup here (need root and a memory controller)"; exit 77; fi
cleanup() { rmdir "$CG" 2>/dev/null || true; }
trap cleanup EXIT

echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
out=$(sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" \
      "$HY_BIN/hypura" run "$m" -p "$prompt" -n 8 --temp 0 -c 256 -t 2 --memory-budget ${CAP_MIB}M 2>"$WORK/err")
rc=$?
cat "$WORK/err"
if [[ $V == 1 ]]; then
  peak=$(cat "$CG/memory.max_usage_in_bytes"); ooms=$(awk '/oom_kill /{print $2}' "$CG/memory.oom_control")
else
  peak=$(cat "$CG/memory.peak" 2>/dev/null || echo 0); ooms=$(awk '/oom_kill /{print $2}' "$CG/memory.events")
fi
echo "exit $rc, cgroup peak $((peak >> 20)) MiB of $CAP_MIB MiB, oom kills ${ooms:-0}"
fail=0
[[ $rc -eq 0 ]] || { echo "FAIL: run failed (exit $rc)"; fail=1; }
[[ ${ooms:-0} -eq 0 ]] || { echo "FAIL: OOM-killed"; fail=1; }
(( peak <= CAP )) || { echo "FAIL: peak over the cap"; fail=1; }
grep -q "$mode" "$WORK/err" || { echo "FAIL: not $mode"; fail=1; }
# loading read only the resident weights, not the streamed ones
python3 - "$WORK/err" <<'PY' || fail=1
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"load read ([0-9.]+) (B|KiB|MiB|GiB) from storage \(resident weights ([0-9.]+) (B|KiB|MiB|GiB)\)", t)
u = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
if not m: print("FAIL: no load figure"); sys.exit(1)
got, res = float(m[1]) * u[m[2]], float(m[3]) * u[m[4]]
print(f"load read {got/2**20:.1f} MiB for {res/2**20:.1f} MiB of resident weights")
sys.exit(0 if got <= res * 1.05 + 4 * 2**20 else 1)
PY
[[ "$out" == "$ref" ]] || { echo "FAIL: text differs from the resident run: [$out] vs [$ref]"; fail=1; }
# an impossible budget is refused up front, naming the minimum
msg=$("$HY_BIN/hypura" run "$m" -p x -n 1 --memory-budget 64M 2>&1 >/dev/null); r2=$?
echo "64M budget: exit $r2: $msg"
[[ $r2 -ne 0 ]] && grep -q "minimum is" <<<"$msg" || { echo "FAIL: impossible budget not refused clearly"; fail=1; }
exit $fail
