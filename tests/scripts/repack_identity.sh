#!/usr/bin/env bash
# A full-resident run with repacking loads the tensors libllama would repack into
# hypura's HYPURA_REPACK buffers (CPU_REPACK's layout, our memory, filled by the
# load's worker threads from the page cache or with direct I/O). Its logits must
# equal libllama's own load of the same file (hypura run --naive: mmap + repack,
# llama.cpp's defaults) bit for bit, step by step: the same tensors repacked, by
# the same function, from the same bytes. Dense and MoE layouts and the quant
# types with repacked kernels; the file cold (direct I/O) and cached (copied from
# the page cache); one worker thread and the default.
# usage: repack_identity.sh HY_BIN WORKDIR
set -uo pipefail
HY_BIN=$1 WORK=$2/repack_identity
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 HYPURA_NO_PERSIST_STATS=1 XDG_CACHE_HOME=$WORK/cache
fail=0
p="In a hole in the ground there lived a hobbit"

mk() { "$HY_BIN/hypura-mkmodel" -o "$WORK/$1.gguf" --seed 7 --quiet "${@:2}" >/dev/null; }
mk dense-q4_0 --dim 512 --layers 2 --ff 1024 --type q4_0
mk dense-q4_k --dim 512 --layers 2 --ff 1024 --type q4_k
mk dense-q8_0 --dim 512 --layers 2 --ff 1024 --type q8_0
mk dense-q6_k --dim 512 --layers 2 --ff 1024 --type q6_k
mk moe-q4_k --dim 512 --layers 2 --ff 512 --experts 8 --top-k 2 --type q4_k
mk qwen3moe --arch qwen3moe --layers 2 --dim 256 --heads 4 --kv-heads 2 --head-dim 64 --experts 32 --top-k 4 \
  --expert-ff 256 --type q4_k
mk gpt-oss --arch gpt-oss --layers 2 --dim 256 --heads 8 --kv-heads 2 --head-dim 64 --experts 32 --top-k 4 \
  --expert-ff 256 --type q8_0
mk qwen2moe --arch qwen2moe --layers 2 --dim 256 --heads 4 --kv-heads 4 --experts 16 --top-k 4 --expert-ff 256 \
  --shared-ff 512 --type q8_0

# drop one file from the page cache (not the machine's whole cache)
uncache() { python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/s.json" "$1"; }

check() { # NAME MODEL [env...]: --naive's logits against the default resident run's ($PREP runs in between)
  local name=$1 m=$2
  shift 2
  if ! "$HY_BIN/hypura" run "$m" -p "$p" -n 12 --temp 0 -c 256 -t 2 --naive --dump-logits "$WORK/ref.bin" \
      >/dev/null 2>"$WORK/ref.err"; then
    echo "FAIL $name: --naive run failed: $(tail -1 "$WORK/ref.err")"; fail=1; return
  fi
  ${PREP:+$PREP "$m"}
  if ! env "$@" "$HY_BIN/hypura" run "$m" -p "$p" -n 12 --temp 0 -c 256 -t 2 --dump-logits "$WORK/x.bin" \
      --stats-json "$WORK/s.json" >/dev/null 2>"$WORK/x.err"; then
    echo "FAIL $name: run failed: $(tail -1 "$WORK/x.err")"; fail=1; return
  fi
  local how cached direct
  how=$(field repack) cached=$(field load_cached_bytes) direct=$(field load_direct_bytes)
  [[ $how == hypura ]] || { echo "FAIL $name: repacked by '$how', not through HYPURA_REPACK"; fail=1; }
  if [[ ! -s $WORK/x.bin ]] || ! cmp -s "$WORK/ref.bin" "$WORK/x.bin"; then
    echo "FAIL $name: logits differ from libllama's own load ($(stat -c %s "$WORK/x.bin") vs $(stat -c %s "$WORK/ref.bin") bytes)"
    fail=1
  else
    echo "ok $name: logits identical; loaded $((cached >> 10)) KiB from the page cache, $((direct >> 10)) KiB direct"
  fi
  LAST_CACHED=$cached LAST_DIRECT=$direct
}

for m in dense-q4_0 dense-q4_k dense-q8_0 dense-q6_k moe-q4_k qwen3moe gpt-oss qwen2moe; do
  check "$m" "$WORK/$m.gguf"
done
# the two sources of the load, and a single worker
m=$WORK/moe-q4_k.gguf
PREP=uncache check "moe-q4_k, file not cached" "$m" HYPURA_LOAD_THREADS=4
[[ ${LAST_DIRECT:-0} -gt 0 ]] || { echo "FAIL: nothing read with direct I/O from an uncached file"; fail=1; }
warm() { cat "$1" >/dev/null; }
PREP=warm check "moe-q4_k, file cached, one worker" "$m" HYPURA_LOAD_THREADS=1
[[ ${LAST_CACHED:-0} -gt 0 ]] || { echo "FAIL: nothing copied from the page cache of a cached file"; fail=1; }
rm -f "$WORK"/*.gguf "$WORK"/*.bin
exit $fail
