# Helpers shared by the fault-table tests (tests/scripts/faults_*.sh); sourced
# after HY_BIN and WORK are set. Every command runs under `timeout`, so a hang
# is a failure (exit 124), never a stuck ctest.
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data
# co-activation statistics would make the expert cache (hence which reads a
# fault hits) depend on earlier runs: keep every run alike
export HYPURA_NO_PERSIST_STATS=1
unset HYPURA_IO_FAULT HYPURA_MEMORY_BUDGET
mkdir -p "$WORK"
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
VOCAB_BYTES=$((32000 * 4)) # one step of --dump-logits (mkmodel's vocabulary)
PROMPT="Once upon a time, in a land far away"

# make_model KIND PATH [SEED]: the tiny models of the fault table (another seed:
# same shape, other weights)
make_model() {
  case $1 in
    dense) "$HY_BIN/hypura-mkmodel" -o "$2" --dim 256 --layers 5 --ff 768 --type q8_0 --seed "${3:-3}" --quiet >/dev/null ;;
    experts) "$HY_BIN/hypura-mkmodel" -o "$2" --dim 256 --layers 4 --ff 1024 --experts 8 --top-k 2 --skew 1 \
      --type q8_0 --seed "${3:-9}" --quiet >/dev/null ;;
  esac
}

# tensor FIELD MODEL NAME: a field (offset, size, expert_stride) of a tensor from `inspect --json`
tensor() {
  "$HY_BIN/hypura" inspect "$2" --json --tensors |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print([t for t in d["tensors"] if t["name"]==sys.argv[2]][0][sys.argv[1]])' "$1" "$3"
}

# the mode line a streamed run must print
want_mode() { [[ $1 == experts ]] && echo expert-streaming || echo dense-FFN-streaming; }

# is_prefix SMALL BIG: SMALL's bytes are the first bytes of BIG (an empty SMALL is)
is_prefix() {
  local n
  n=$(stat -c %s "$1")
  [[ $n -le $(stat -c %s "$2") ]] && cmp -s -n "$n" "$1" "$2"
}

# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN
wait_for() {
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
