#!/usr/bin/env bash
# Remote tiers, when things go wrong (issue 16). ggml-rpc aborts the process on
# any connection failure and waits forever on a silent server; hypura must turn
# each case into a clear error naming the endpoint, in bounded time:
#  - a server killed mid-run: exit 3, "lost the RPC server at HOST:PORT";
#  - a server stopped mid-run (SIGSTOP): cut off after HYPURA_RPC_TIMEOUT, exit 3; stopped
#    while the run starts: a named error (exit 1 or 3), never a hang;
#  - bad endpoints refused before libggml sees them: malformed, unresolvable,
#    refused, a port that is not an RPC server, a server busy with another
#    client; an endpoint off loopback/private networks is warned about;
#  - serve: a server killed under a request, and one killed while serve is idle;
#    serve starts again without it and answers the next requests.
# Every command runs under `timeout`: a hang is a failure, never a stuck ctest.
set -uo pipefail
HY_BIN=$1 LLAMA_BIN=$2 WORK=$3/rpc_faults
source "$(dirname "$0")/rpc_lib.sh"
rpc_require
M=$WORK/m.gguf
"$HY_BIN/hypura-mkmodel" -o "$M" --dim 256 --layers 6 --ff 768 --type q8_0 --seed 3 --quiet >/dev/null
P="Once upon a time, in a land far away"

# mid_run SIGNAL: a long generation with 3 layers on one server; the server gets SIGNAL after 2 s
mid_run() {
  local sig=$1 t0 rc
  start_rpc
  local ep=127.0.0.1:$RPC_PORT pid=$RPC_PID
  rm -f "$WORK/mid.out" "$WORK/mid.err" # an earlier run's text must not pass for this one's
  HYPURA_RPC_TIMEOUT=2 HYPURA_RPC_LAYERS=3 timeout 90 "$HY_BIN/hypura" run "$M" -p "$P" -n 1900 -c 2048 --temp 0 -t 2 \
    --rpc "$ep" >"$WORK/mid.out" 2>"$WORK/mid.err" &
  local run=$!
  for _ in $(seq 600); do [[ -s $WORK/mid.out ]] && break; kill -0 $run 2>/dev/null || break; sleep 0.1; done
  sleep 0.5
  kill -0 $run 2>/dev/null || { bad "$sig: the run ended before the fault"; tail -3 "$WORK/mid.err"; return; }
  t0=$(date +%s.%N)
  kill -"$sig" "$pid"
  wait $run; rc=$?
  local dt; dt=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
  [[ -s $WORK/mid.out ]] || bad "$sig: no text before the fault"
  if [[ $rc == 3 ]] && grep -q "lost the RPC server at $ep" "$WORK/mid.err"; then
    ok "$sig mid-run: exit 3 after ${dt} s: $(grep "lost the RPC server" "$WORK/mid.err" | cut -c1-110)"
  else
    bad "$sig mid-run: exit $rc"; tail -4 "$WORK/mid.err"
  fi
  [[ $sig == STOP ]] && { grep -q "has not answered for" "$WORK/mid.err" || bad "STOP: no stall message"; }
  grep -q "core dumped\|Aborted" "$WORK/mid.err" && bad "$sig: an abort reached the user"
  kill -CONT "$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null
}
mid_run KILL
mid_run STOP

# a server stopped while the run starts (its handshake, the link's measurement or the
# weights being sent, whichever the moment hits): a named error in bounded time, never a hang
start_rpc
ep=127.0.0.1:$RPC_PORT
t0=$(date +%s)
HYPURA_RPC_TIMEOUT=2 HYPURA_RPC_LAYERS=4 timeout 90 "$HY_BIN/hypura" run "$M" -p "$P" -n 8 -c 256 -t 2 --rpc "$ep" \
  >/dev/null 2>"$WORK/early.err" &
early=$!
sleep 0.3
kill -STOP "$RPC_PID"
wait $early; rc=$?
kill -CONT "$RPC_PID"; kill -9 "$RPC_PID"
if [[ $rc == 3 || $rc == 1 ]] && grep -q "$ep" "$WORK/early.err" && [[ $(( $(date +%s) - t0 )) -lt 30 ]]; then
  ok "stopped at the start: exit $rc in $(( $(date +%s) - t0 )) s: $(grep "$ep" "$WORK/early.err" | tail -1 | cut -c1-100)"
else
  bad "stopped at the start: exit $rc"; tail -3 "$WORK/early.err"
fi

# refused: refuse EXPECT ENDPOINT [what]
refuse() {
  local want=$1 ep=$2 t0 rc
  t0=$(date +%s)
  timeout 60 "$HY_BIN/hypura" run "$M" -p hi -n 2 -c 256 --rpc "$ep" >/dev/null 2>"$WORK/ref.err"; rc=$?
  if [[ $rc == 1 ]] && grep -qE "$want" "$WORK/ref.err"; then
    ok "refused $ep in $(( $(date +%s) - t0 )) s: $(grep -v warning "$WORK/ref.err" | tail -1 | cut -c1-120)"
  else
    bad "$ep: exit $rc, want 1 and /$want/"; cat "$WORK/ref.err"
  fi
}
refuse "want HOST:PORT" "127.0.0.1"
refuse "port must be 1-65535" "127.0.0.1:70000"
refuse "not a size" "127.0.0.1:5@lots"
refuse "cannot resolve" "no-such-host.invalid:50052"
port=$(free_port)
refuse "127.0.0.1:$port .*cannot connect: Connection refused" "127.0.0.1:$port"
# a port that accepts and never answers (not an RPC server); the port files start empty (an
# earlier run's would pass for this one's)
rm -f "$WORK/silent.port" "$WORK/http.port"
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4); print(s.getsockname()[1], flush=True)
c = [s.accept() for _ in range(1)]; time.sleep(60)' >"$WORK/silent.port" &
silent=$!; RPC_PIDS+=("$silent")
for _ in $(seq 200); do [[ -s $WORK/silent.port ]] && break; sleep 0.1; done
refuse "no answer to the RPC handshake" "127.0.0.1:$(cat "$WORK/silent.port")"
# a port that answers something else
python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4); print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.recv(64); c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"); c.close(); time.sleep(30)' >"$WORK/http.port" &
RPC_PIDS+=("$!")
for _ in $(seq 200); do [[ -s $WORK/http.port ]] && break; sleep 0.1; done
refuse "not a ggml-rpc-server" "127.0.0.1:$(cat "$WORK/http.port")"
# a server busy with another client (ggml-rpc-server serves one at a time)
start_rpc
exec 7<>/dev/tcp/127.0.0.1/$RPC_PORT
refuse "busy with another client" "127.0.0.1:$RPC_PORT"
exec 7>&-
# off loopback and private networks: warned about (192.0.2.1 is TEST-NET-1: nothing answers)
timeout 60 "$HY_BIN/hypura" estimate "$M" -c 256 --rpc 192.0.2.1:50052 >/dev/null 2>"$WORK/pub.err"
grep -q "not on loopback or a private network.*no authentication" "$WORK/pub.err" &&
  ok "a public endpoint is warned about: $(grep -o 'RPC endpoint 192.0.2.1:50052 ([^)]*) is not on loopback or a private network' "$WORK/pub.err")" ||
  { bad "no warning for a public endpoint"; cat "$WORK/pub.err"; }
timeout 60 "$HY_BIN/hypura" estimate "$M" -c 256 --rpc 127.0.0.1:1 >/dev/null 2>"$WORK/lo.err"
grep -q "not on loopback" "$WORK/lo.err" && bad "loopback warned about" || ok "no warning for loopback"

# serve: a server killed under a request
start_rpc
ep=127.0.0.1:$RPC_PORT victim=$RPC_PID
sport=$(free_port)
: >"$WORK/serve.log"
HYPURA_RPC_LAYERS=3 timeout 120 "$HY_BIN/hypura" serve "$M" --port "$sport" -c 2048 --parallel 1 -t 2 \
  --rpc "$ep" >"$WORK/serve.log" 2>&1 &
srv=$!
up() { curl -s -m 2 "http://127.0.0.1:$sport/api/version" >/dev/null; }
for _ in $(seq 300); do up && break; sleep 0.1; done
gen() { curl -s -m 60 "http://127.0.0.1:$sport/api/generate" -d "{\"model\":\"m\",\"prompt\":\"$P\",\"stream\":false,\"options\":{\"num_predict\":$1,\"temperature\":0}}"; }
r1=$(gen 8)
echo "$r1" | grep -q '"response"' && ok "serve with a remote tier answers" || { bad "serve: first request: $r1"; tail -5 "$WORK/serve.log"; }
gen 1500 >"$WORK/long.json" 2>&1 &
lg=$!
sleep 1.5
kill -9 "$victim"
wait $lg; echo "  the request under the fault got: $(head -c 120 "$WORK/long.json")"
for _ in $(seq 300); do up && break; sleep 0.1; done
r3=$(gen 8)
if echo "$r3" | grep -q '"response"' && kill -0 $srv 2>/dev/null; then
  ok "serve answers again after losing $ep"
else
  bad "serve after the fault: $r3"; tail -8 "$WORK/serve.log"
fi
grep -q "lost the RPC server at $ep" "$WORK/serve.log" && grep -q "RPC endpoint $ep was lost: serving without it" "$WORK/serve.log" &&
  ok "serve's log names the endpoint and says it goes on without it" || { bad "serve's log"; tail -12 "$WORK/serve.log"; }
kill $srv 2>/dev/null; wait $srv 2>/dev/null

# serve: a server killed while serve is idle: noticed at once, serve restarts without it, and
# the next request is answered (it does not have to fail first)
start_rpc
ep=127.0.0.1:$RPC_PORT victim=$RPC_PID
sport=$(free_port)
: >"$WORK/serve2.log"
HYPURA_RPC_LAYERS=3 timeout 120 "$HY_BIN/hypura" serve "$M" --port "$sport" -c 2048 --parallel 1 -t 2 \
  --rpc "$ep" >"$WORK/serve2.log" 2>&1 &
srv=$!
for _ in $(seq 300); do up && break; sleep 0.1; done
r1=$(gen 4)
echo "$r1" | grep -q '"response"' || { bad "serve (idle case): first request: $r1"; tail -5 "$WORK/serve2.log"; }
kill -9 "$victim"
for _ in $(seq 100); do grep -q "serving without it" "$WORK/serve2.log" && break; sleep 0.1; done
for _ in $(seq 300); do up && break; sleep 0.1; done
r2=$(gen 4)
if echo "$r2" | grep -q '"response"' && grep -q "lost the RPC server at $ep: .*while idle" "$WORK/serve2.log"; then
  ok "serve noticed the idle loss of $ep, restarted without it and answered the next request"
else
  bad "serve, idle loss: $r2"; tail -8 "$WORK/serve2.log"
fi
kill $srv 2>/dev/null; wait $srv 2>/dev/null
exit $fail
