# Shared by the remote-tier tests (tests/scripts/rpc_*.sh); sourced after
# HY_BIN, LLAMA_BIN and WORK are set. Starts ggml-rpc-server processes of the
# pinned build on 127.0.0.1 (never beyond loopback) and stops them on exit.
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data HYPURA_NO_PERSIST_STATS=1
unset HYPURA_RPC HYPURA_RPC_LAYERS HYPURA_RPC_TIMEOUT HYPURA_RPC_LOST HYPURA_MEMORY_BUDGET
mkdir -p "$WORK"
RPC_SERVER=$LLAMA_BIN/ggml-rpc-server
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
RPC_PIDS=()
cleanup_rpc() { local p; for p in "${RPC_PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done; return 0; }
trap cleanup_rpc EXIT

# skip (77) where the pinned build has no RPC backend
rpc_require() {
  [[ -x $RPC_SERVER ]] || { echo "skip: $RPC_SERVER is missing (llama.cpp built without GGML_RPC=ON)"; exit 77; }
  "$HY_BIN/hypura-mkmodel" -o "$WORK/probe.gguf" --dim 64 --layers 2 --ff 128 --type q8_0 --quiet >/dev/null
  if timeout 30 "$HY_BIN/hypura" estimate "$WORK/probe.gguf" --rpc 127.0.0.1:1 2>&1 | grep -q "no RPC backend"; then
    echo "skip: the libggml hypura runs on has no RPC backend"; exit 77
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_rpc: starts a server on a free loopback port; sets RPC_PORT and RPC_PID
start_rpc() {
  local i
  RPC_PORT=$(free_port)
  OMP_WAIT_POLICY=passive "$RPC_SERVER" -H 127.0.0.1 -p "$RPC_PORT" -t 1 >"$WORK/rpc-$RPC_PORT.log" 2>&1 &
  RPC_PID=$!
  RPC_PIDS+=("$RPC_PID")
  for ((i = 0; i < 100; i++)); do
    ss -ltn 2>/dev/null | grep -q "127.0.0.1:$RPC_PORT " && return 0
    kill -0 "$RPC_PID" 2>/dev/null || { echo "ggml-rpc-server did not start:"; cat "$WORK/rpc-$RPC_PORT.log"; return 1; }
    sleep 0.1
  done
  echo "ggml-rpc-server is not listening on $RPC_PORT"; return 1
}
