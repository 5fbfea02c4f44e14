#!/usr/bin/env bash
# LeakSanitizer (with ASan+UBSan) clean on served sessions:
#  1. a resident server: every read-only route, Ollama generate/chat (plain and
#     streamed), OpenAI chat/completions (plain and streamed), bad requests (bad JSON,
#     wrong model, unknown route), a streamed generation the client leaves after its
#     first line (the server logs it cancelled), then SIGTERM while idle;
#  2. a server stopped by SIGTERM in the middle of a streamed generation;
#  3. an expert-streaming server (MoE, --mode stream): generate and chat, SIGTERM.
# Each must exit 0 through the leak check with nothing reported.
# Skips (77) in a build without -DHYPURA_SANITIZE=ON.
set -uo pipefail
HY_BIN=$1 WORK=$2/leak_serve
. "$(dirname "$0")/leak_lib.sh"
. "$(dirname "$0")/serve_lib.sh"
leak_require_sanitized "${3:-}"
command -v curl >/dev/null || { echo "skip: curl is not installed"; exit 77; }
mkdir -p "$WORK"
export HYPURA_NO_STORAGE_PROFILE=1 XDG_CACHE_HOME=$WORK/cache XDG_DATA_HOME=$WORK/data
fail=0
"$HY_BIN/hypura-mkmodel" -o "$WORK/tiny.gguf" --dim 256 --layers 2 --ff 512 --type q8_0 --ctx 8192 --quiet >/dev/null || exit 1
"$HY_BIN/hypura-mkmodel" -o "$WORK/moe.gguf" --dim 256 --layers 4 --ff 512 --experts 8 --top-k 2 --skew 1 \
  --type q8_0 --quiet >/dev/null || exit 1
leak_start "$WORK"

PID="" PORT="" LOG=""
start() { # log name, serve arguments...
  LOG=$WORK/$1.log; shift
  : >"$LOG" # before the server starts: its own redirection truncates the log only once it runs
  "$HY_BIN/hypura" serve "$@" --port 0 -t 2 >"$LOG" 2>&1 &
  PID=$!
  leak_expect
  PORT=$(serve_port "$LOG" $PID 600) && return 0
  echo "FAIL: server did not start"; cat "$LOG"; kill $PID 2>/dev/null; wait $PID; exit 1
}
stop() { # name: SIGTERM, must exit 0 within 60 s
  kill -TERM $PID
  for _ in $(seq 600); do kill -0 $PID 2>/dev/null || break; sleep 0.1; done
  if kill -0 $PID 2>/dev/null; then echo "FAIL $1: still running 60 s after SIGTERM"; kill -KILL $PID; fail=1; fi
  wait $PID; local rc=$?
  [[ $rc -eq 0 ]] || { echo "FAIL $1: server exit $rc on SIGTERM"; tail -20 "$LOG"; fail=1; }
}
# method, path, expected status, body (optional); the body goes to $WORK/last.out
req() {
  local code
  code=$(curl -s -o "$WORK/last.out" -w '%{http_code}' -X "$1" "http://127.0.0.1:$PORT$2" \
         ${4:+-H 'content-type: application/json' --data-binary "$4"})
  if [[ "$code" != "$3" ]]; then echo "FAIL $1 $2: status $code, expected $3: $(head -c 300 "$WORK/last.out")"; fail=1
  else echo "$1 $2 -> $code ($(wc -c < "$WORK/last.out") bytes)"; fi
}
opts='"options":{"temperature":0,"num_predict":8}'
msgs='"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}]'

# 1. resident, every kind of request, a cancelled stream, SIGTERM idle
start resident "$WORK/tiny.gguf" -c 8192
req GET / 200
req GET /api/version 200
req GET /api/tags 200
req GET /api/ps 200
req GET /v1/models 200
req GET /v1/models/tiny 200
req POST /api/show 200 '{"model":"tiny"}'
req POST /api/generate 200 '{"model":"tiny","prompt":"Once upon a time","stream":false,'"$opts"'}'
req POST /api/generate 200 '{"model":"tiny","prompt":"Once upon a time","raw":true,"stream":true,'"$opts"'}'
grep -q '"done":true' "$WORK/last.out" || { echo "FAIL: streamed generate did not finish"; fail=1; }
req POST /api/chat 200 '{"model":"tiny",'"$msgs"',"stream":false,'"$opts"'}'
req POST /api/chat 200 '{"model":"tiny",'"$msgs"',"stream":true,'"$opts"'}'
req POST /v1/chat/completions 200 '{"model":"tiny",'"$msgs"',"max_tokens":8,"temperature":0}'
req POST /v1/chat/completions 200 '{"model":"tiny",'"$msgs"',"max_tokens":8,"temperature":0,"stream":true}'
grep -q 'data: \[DONE\]' "$WORK/last.out" || { echo "FAIL: streamed chat completion did not finish"; fail=1; }
req POST /v1/completions 200 '{"model":"tiny","prompt":"Once","max_tokens":8,"temperature":0}'
req POST /api/generate 400 '{"model":"tiny","prompt":'
req POST /api/generate 404 '{"model":"nope","prompt":"hi"}'
req POST /api/chat 400 '{"model":"tiny","messages":"not a list"}'
req GET /no/such/route 404
# a long stream the client leaves after its first line
python3 - "$PORT" <<'PY' || { echo "FAIL: the cancelled stream did not start"; fail=1; }
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
body = json.dumps({"model": "tiny", "prompt": "Once upon a time", "raw": True, "stream": True,
                   "options": {"temperature": 0, "num_predict": 8000}}).encode()
s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n" % len(body) + body)
buf = b""
while b'"response"' not in buf:
    d = s.recv(4096)
    if not d: sys.exit(1)
    buf += d
s.close()
PY
for _ in $(seq 300); do grep -q 'stream: cancelled' "$LOG" && break; sleep 0.1; done
grep -q 'stream: cancelled' "$LOG" || { echo "FAIL: the server did not log the stream cancelled"; tail "$LOG"; fail=1; }
req POST /api/generate 200 '{"model":"tiny","prompt":"After the cancel","stream":false,'"$opts"'}'
stop resident
leak_check "serve (resident, $(grep -c ' /' "$LOG") requests logged, one cancelled)" || fail=1

# 2. SIGTERM in the middle of a streamed generation
start midstream "$WORK/tiny.gguf" -c 8192
curl -sN "http://127.0.0.1:$PORT/api/generate" -H 'content-type: application/json' \
  -d '{"model":"tiny","prompt":"Once upon a time","raw":true,"stream":true,"options":{"temperature":0,"num_predict":8000}}' \
  >"$WORK/midstream.out" 2>/dev/null &
cpid=$!
for _ in $(seq 300); do grep -q '"response"' "$WORK/midstream.out" 2>/dev/null && break; sleep 0.1; done
grep -q '"response"' "$WORK/midstream.out" || { echo "FAIL: the long stream did not start"; fail=1; }
stop midstream
wait $cpid 2>/dev/null
grep -q '"done":true' "$WORK/midstream.out" && { echo "FAIL: the 8000-token stream finished before SIGTERM: the test proves nothing"; fail=1; }
leak_check "serve (SIGTERM mid-stream)" || fail=1

# 3. expert-streaming
start experts "$WORK/moe.gguf" -c 512 --mode stream
grep -q expert-streaming "$LOG" || { echo "FAIL: the MoE server did not plan expert-streaming"; fail=1; }
req POST /api/generate 200 '{"model":"moe","prompt":"Far over the misty mountains","stream":true,'"$opts"'}'
req POST /api/chat 200 '{"model":"moe",'"$msgs"',"stream":false,'"$opts"'}'
stop experts
leak_check "serve (expert-streaming)" || fail=1
exit $fail
