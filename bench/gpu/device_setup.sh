#!/usr/bin/env bash
# Builds hypura and the pinned llama.cpp with CUDA on a machine that cannot
# fetch anything (the `device` tool's GPU machines). Inputs, carried in .device/
# (gitignored): llama-src.tgz (a trimmed source tree of the pinned llama.cpp)
# and Debian 12 .debs of libjansson, liburing and pkgconf, unpacked into a
# private prefix. Idempotent: a second call only checks.
#   bench/gpu/device_setup.sh            -> prints the env file to source
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV="$ROOT/.device"
PFX=/opt/hydeps
LL=/opt/llama.cpp
LB=$LL/build-cuda
JOBS=$(nproc)
log() { printf '[device-setup] %s\n' "$*" >&2; }

if [[ ! -f $PFX/.done ]]; then
  mkdir -p $PFX
  for f in "$DEV"/*.deb; do dpkg -x "$f" $PFX; done
  touch $PFX/.done
fi
LIBD=$PFX/usr/lib/x86_64-linux-gnu
# the .pc files name /usr: point them at the prefix
for pc in $LIBD/pkgconfig/*.pc; do sed -i -e "s|^prefix=.*|prefix=$PFX/usr|" -e "s|=/usr/|=$PFX/usr/|" "$pc"; done
ln -sf pkgconf $PFX/usr/bin/pkg-config
cat > $PFX/env.sh <<ENV
export PATH=$PFX/usr/bin:\$PATH
export PKG_CONFIG_PATH=$LIBD/pkgconfig
export PKG_CONFIG_LIBDIR=$LIBD/pkgconfig
export LD_LIBRARY_PATH=$LIBD:$LB/bin\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
ENV
. $PFX/env.sh

if [[ ! -f $LB/.built ]] && compgen -G "$DEV/cudabin.part.*" >/dev/null; then
  # a CUDA build saved by an earlier machine of this session (device_all.sh): headers from the source
  mkdir -p $LL $LB/bin && tar xzf "$DEV/llama-src.tgz" -C $LL
  cat "$DEV"/cudabin.part.* | xz -d | tar xf - -C $LB/bin && touch $LB/.built && log "using the carried CUDA build"
fi
if [[ ! -f $LB/.built ]]; then
  mkdir -p $LL && tar xzf "$DEV/llama-src.tgz" -C $LL
  mkdir -p $LL/models && cp "$DEV/ggml-vocab-llama-spm.gguf" $LL/models/
  log "building llama.cpp with CUDA (sm_90) with $JOBS jobs"
  t0=$(date +%s)
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S $LL -B $LB "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF >$LL/cmake.log 2>&1 || { tail -30 $LL/cmake.log; exit 1; }
  cmake --build $LB -j $JOBS --target llama llama-bench llama-completion >$LL/build.log 2>&1 || { tail -40 $LL/build.log; exit 1; }
  touch $LB/.built
  log "llama.cpp built in $(( $(date +%s) - t0 )) s"
fi
# hypura-mkmodel's default tokenizer
[[ -f $LL/models/ggml-vocab-llama-spm.gguf ]] || { mkdir -p $LL/models && cp "$DEV/ggml-vocab-llama-spm.gguf" $LL/models/; }
B="$ROOT/build-gpu"
mkdir -p "$B"
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CPP_DIR=$LL -DLLAMA_BUILD_DIR=$LB >"$B/cmake.log" 2>&1 ||
  { tail -30 "$B/cmake.log" >&2; exit 1; }
cmake --build "$B" -j $JOBS --target hypura hypura-mkmodel >"$B/build.log" 2>&1 || { grep -E "error|undefined|cannot" "$B/build.log" | head -20 >&2; exit 1; }
log "hypura built in $B"
echo $PFX/env.sh
