#!/usr/bin/env bash
# A short libFuzzer run of one target, for CI: fuzz for SECONDS from the kept
# seeds and reproducers (new inputs go to a scratch directory, not the repo).
#
#   tests/fuzz/smoke.sh FUZZDIR TARGET [SECONDS]   (TARGET: gguf, plan or api)
#
# Exit 77 (ctest: skipped) when FUZZDIR has no fuzz_TARGET (clang or libFuzzer
# missing, see build.sh); otherwise libFuzzer's status: 0 clean, non-zero on a
# crash, leak, UB, failed invariant or timeout (the input is kept in FUZZDIR; libFuzzer's own
# error code, 77, would read as skipped).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:?usage: smoke.sh FUZZDIR TARGET [SECONDS]}" t="${2:?target}" secs="${3:-5}"
bin="$dir/fuzz_$t"
if [[ ! -x "$bin" ]]; then echo "no $bin (libFuzzer build skipped); skipped"; exit 77; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
seeds=("$HERE/corpus/$t")
[[ -d "$HERE/regress/$t" ]] && seeds+=("$HERE/regress/$t")
rc=0
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -error_exitcode=1 \
  -artifact_prefix="$dir/smoke-$t-" "$work" "${seeds[@]}" >"$work/log" 2>&1 || rc=$?
grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec)|invariant failed|ERROR|SUMMARY" "$work/log" || true
if ((rc)); then tail -40 "$work/log"; fi
exit "$rc"
