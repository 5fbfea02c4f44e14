# Helpers shared by the expert-streaming identity scripts (expert_identity.sh,
# expert_identity_arch.sh); sourced after HY_BIN and WORK are set.
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data
mkdir -p "$WORK"
fail=0

# run MODEL ARGS...: greedy `hypura run` (stderr in $WORK/last.err)
run() { "$HY_BIN/hypura" run "$@" --temp 0 -c 256 -t 2 2>"$WORK/last.err"; }

# min_budget MODEL: the least memory budget (whole MiB) `hypura estimate` accepts
# for streaming the model: every slice the cache holds is evicted again and again
min_budget() {
  local min
  min=$("$HY_BIN/hypura" estimate "$1" -c 256 --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
  [[ -n $min ]] || { echo "no minimum in the plan of $1" >&2; return 1; }
  echo $(( ${min%.*} + 1 ))
}

# same_logits LABEL REF.bin X.bin WANT: the run just made ($WORK/last.err) was in mode
# WANT and its logits equal the reference's, bit for bit
same_logits() {
  grep -q "$4" "$WORK/last.err" || { echo "$1: not $4"; cat "$WORK/last.err"; fail=1; }
  if cmp -s "$2" "$3"; then
    echo "ok $1: logits identical; $(grep -o 'experts: [0-9]* routed.*evictions' "$WORK/last.err" || grep -o 'streamed [^,]*' "$WORK/last.err")"
  else
    echo "DIFFER $1"; fail=1
  fi
}
