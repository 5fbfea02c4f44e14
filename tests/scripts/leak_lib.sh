# Shared by leak_run.sh and leak_serve.sh: LeakSanitizer on every hypura process
# (hypura and hypura-mkmodel of a -DHYPURA_SANITIZE=ON build), one report file per
# process (log_path), and a check that
#   - no file holds a sanitizer error (leak, ASan, UBSan), and
#   - every process went through exit(): with atexit=1 ASan prints its exit stats from
#     an atexit handler registered next to the leak check, so a process that ended
#     otherwise (killed, _exit) is counted as unchecked instead of passing silently.
# Usage: source it; leak_start DIR; run things (count them with leak_expect N);
# leak_check NAME (exit status 0/1; resets the count and the reports).

# $1: the CMake value of HYPURA_SANITIZE: anything else than ON skips (77)
leak_require_sanitized() {
  case "${1:-}" in
    ON|on|1|TRUE|true|YES|yes) ;;
    *) echo "skip: needs a build with -DHYPURA_SANITIZE=ON (scripts/test-sanitize.sh runs one)"; exit 77 ;;
  esac
}

leak_start() {
  LEAK_REP=$1/sanitize-reports
  LEAK_N=0
  rm -rf "$LEAK_REP"; mkdir -p "$LEAK_REP"
  local supp
  supp="$(cd "$(dirname "${BASH_SOURCE[0]}")/../sanitize" && pwd)/lsan.supp"
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:atexit=1:log_path=$LEAK_REP/asan"
  export LSAN_OPTIONS="suppressions=$supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LEAK_REP/ubsan"
}

leak_expect() { LEAK_N=$((LEAK_N + ${1:-1})); }

leak_check() {
  local name=$1 f bad=() exited=0 files=()
  shopt -s nullglob
  files=("$LEAK_REP"/*)
  shopt -u nullglob
  for f in "${files[@]}"; do
    if grep -qE 'ERROR: (Leak|Address)Sanitizer|runtime error|SUMMARY: ' "$f"; then bad+=("$f"); fi
    if grep -q 'AddressSanitizer exit stats' "$f"; then exited=$((exited + 1)); fi
  done
  if ((${#bad[@]})); then
    for f in "${bad[@]}"; do echo "--- $f"; grep -v '^Stats: ' "$f"; done
    echo "FAIL $name: ${#bad[@]} process(es) with sanitizer reports (above)"
    rm -f "${files[@]}"; LEAK_N=0
    return 1
  fi
  rm -f "${files[@]}"
  if ((exited != LEAK_N)); then
    echo "FAIL $name: $exited of $LEAK_N processes reached LeakSanitizer's exit check"
    LEAK_N=0
    return 1
  fi
  echo "ok $name: $exited processes exited through LeakSanitizer's check, no leak, no ASan/UBSan report"
  LEAK_N=0
}
