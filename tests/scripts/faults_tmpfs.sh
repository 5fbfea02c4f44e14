#!/usr/bin/env bash
# Storage check before streaming: a model on a filesystem without O_DIRECT falls
# back to buffered reads with ONE warning line naming the filesystem, and the
# streamed logits stay bit-identical to the resident run from the original file.
#  - /dev/shm (tmpfs): tmpfs takes O_DIRECT since Linux 6.6, so it may stream
#    directly (no warning); either way the logits are checked; then the refusal
#    is forced there (HYPURA_IO_FAULT=nodirect): one warning naming tmpfs.
#  - ramfs, mounted in a private mount namespace (unshare -m): refuses O_DIRECT
#    at open with EINVAL on every kernel: one warning naming ramfs.
# Dense-FFN-streaming and expert-streaming. Exit 77 when neither a writable
# tmpfs nor a ramfs mount is available.
# usage: faults_tmpfs.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/faults_tmpfs
source "$(dirname "$0")/faults_lib.sh"
SHM=/dev/shm/hypura-faults-$$
trap 'rm -rf "$SHM"' EXIT
have_shm=0 have_ramfs=0
mkdir -p "$SHM" 2>/dev/null && [[ $(stat -f -c %T "$SHM") == tmpfs ]] && touch "$SHM/x" 2>/dev/null && have_shm=1
mkdir -p "$WORK/ramfs"
unshare -m sh -c 'mount -t ramfs ramfs "$1"' sh "$WORK/ramfs" 2>/dev/null && have_ramfs=1
if [[ $have_shm -eq 0 && $have_ramfs -eq 0 ]]; then
  echo "skip: no writable tmpfs at /dev/shm and no ramfs mount (unshare -m) here"
  exit 77
fi

# check NAME FS: the run in $WORK/NAME.* completed with the reference's logits;
# FS: the filesystem the one warning must name, or "any" (0 or 1 warning)
check() {
  local name=$1 fs=$2 n why=""
  n=$(grep -c "refuses O_DIRECT" "$WORK/$name.err")
  if [[ $(cat "$WORK/$name.rc") -ne 0 ]]; then why="exit $(cat "$WORK/$name.rc")"
  elif ! grep -q "$MODE" "$WORK/$name.err"; then why="did not plan $MODE"
  elif ! cmp -s "$WORK/$name.bin" "$WORK/ref-$kind.bin"; then why="logits differ from the resident run"
  elif [[ $fs == any && $n -gt 1 ]]; then why="$n warnings"
  elif [[ $fs != any && $n -ne 1 ]]; then why="$n buffered-read warnings (want 1)"
  elif [[ $fs != any ]] && ! grep "refuses O_DIRECT" "$WORK/$name.err" | grep -q " is on $fs, "; then
    why="the warning does not name $fs: $(grep 'refuses O_DIRECT' "$WORK/$name.err")"
  elif [[ $n -eq 1 ]] && ! grep -q "buffered" <(grep '^\[hypura\] streamed' "$WORK/$name.err"); then
    why="warned, but the stats do not say buffered"
  fi
  local how
  how=$(grep -o '[a-z_+-]*, \(O_DIRECT\|buffered\)$' "$WORK/$name.err" | head -1)
  [[ -z $how && $kind == experts ]] && how="expert-streaming"
  if [[ -z $why ]]; then ok "$kind $name: logits identical ($how)${n:+, warnings: $n} $(grep -o 'is on [^,]*' "$WORK/$name.err" | head -1)"
  else bad "$kind $name: $why"; tail -3 "$WORK/$name.err" | sed 's/^/    /'; fi
}

for kind in dense experts; do
  M=$WORK/$kind.gguf
  make_model $kind "$M"
  MODE=$(want_mode $kind)
  min=$("$HY_BIN/hypura" estimate "$M" -c 256 --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
  RUN=(run -p "$PROMPT" -n 16 --temp 0 -c 256 -t 2)
  SCHED=(--mode stream --memory-budget "$((${min%.*} + 1))M")
  timeout 120 "$HY_BIN/hypura" "${RUN[@]}" "$M" --no-repack --dump-logits "$WORK/ref-$kind.bin" >/dev/null 2>"$WORK/ref.err" ||
    { cat "$WORK/ref.err"; bad "$kind: reference run failed"; continue; }
  if [[ $have_shm -eq 1 ]]; then
    cp "$M" "$SHM/$kind.gguf"
    timeout 120 "$HY_BIN/hypura" "${RUN[@]}" "$SHM/$kind.gguf" "${SCHED[@]}" --dump-logits "$WORK/shm.bin" \
      >/dev/null 2>"$WORK/shm.err"
    echo $? >"$WORK/shm.rc"
    check shm any
    HYPURA_IO_FAULT=nodirect timeout 120 "$HY_BIN/hypura" "${RUN[@]}" "$SHM/$kind.gguf" "${SCHED[@]}" \
      --dump-logits "$WORK/shm-nodirect.bin" >/dev/null 2>"$WORK/shm-nodirect.err"
    echo $? >"$WORK/shm-nodirect.rc"
    check shm-nodirect tmpfs
    rm -f "$SHM/$kind.gguf"
  fi
  if [[ $have_ramfs -eq 1 ]]; then
    R=$WORK/ramfs # the mount lives only as long as this namespace's shell
    unshare -m sh -c 'mount -t ramfs ramfs "$1" && cp "$2" "$1/m.gguf" && shift 2 && exec "$@"' sh "$R" "$M" \
      timeout 120 "$HY_BIN/hypura" "${RUN[@]}" "$R/m.gguf" "${SCHED[@]}" --dump-logits "$WORK/ramfs.bin" \
      >/dev/null 2>"$WORK/ramfs.err"
    echo $? >"$WORK/ramfs.rc"
    check ramfs ramfs
  fi
done
rm -f "$WORK"/*.gguf "$WORK"/*.bin
exit $fail
