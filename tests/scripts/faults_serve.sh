#!/usr/bin/env bash
# The fault table for `hypura serve` in a streaming mode (KIND dense: dense-FFN-
# streaming; experts: expert-streaming at the smallest budget). A fault fails
# the request that met it, never the server: the next request (after a
# transient fault, #COUNT in HYPURA_IO_FAULT, or after the file is restored) is
# answered in full with the text `hypura run` gives; the server never crashes
# or hangs (every request under a timeout) and exits 0 on SIGTERM at the end.
#
# What a client sees for a failed request (README, Serving):
#  - streaming (NDJSON / SSE): HTTP 200 and the pieces made before the error,
#    then one last object {"error": "..."} (OpenAI routes: data: {"error":
#    {"message": ...}}, and no [DONE]); never a final object with "done": true.
#    If the request fails before the stream started, it is an HTTP 500 instead.
#  - not streaming: HTTP 500 {"error": "..."}.
# The message is the I/O error: tensor, file, offset, problem.
# usage: faults_serve.sh HY_BIN WORKDIR dense|experts
set -uo pipefail
HY_BIN=$1 KIND=$3 WORK=$2/faults_serve_$3
source "$(dirname "$0")/faults_lib.sh"
source "$(dirname "$0")/serve_lib.sh"
M=$WORK/model.gguf
make_model "$KIND" "$M"
cp "$M" "$WORK/model.orig"
MODE=$(want_mode "$KIND")
min=$("$HY_BIN/hypura" estimate "$M" -c 256 --mode stream | sed -n 's/.*minimum budget for this model \([0-9.]*\) MiB.*/\1/p')
[[ -n $min ]] || { echo "no minimum budget in the plan"; exit 1; }
SCHED=(--mode stream --memory-budget "$((${min%.*} + 1))M")
NP=24
ref=$(timeout 120 "$HY_BIN/hypura" run "$M" -p "$PROMPT" -n $NP --temp 0 -c 256 -t 2 --no-repack 2>"$WORK/ref.err") ||
  { cat "$WORK/ref.err"; echo "reference run failed"; exit 1; }
printf '%s' "$ref" >"$WORK/ref.txt"
T=$("$HY_BIN/hypura" estimate "$M" -c 256 "${SCHED[@]}" --tensors | awk '$3 == "NVMe" {print $1}' | head -1)
[[ -n $T ]] || { echo "the plan streams nothing"; exit 1; }
TOFF=$(tensor offset "$M" "$T")
TSIZE=$(tensor size "$M" "$T")
FOFF=$((TOFF + 8192)) FLEN=$((TSIZE - 16384)) # inside the tensor, away from its neighbours' pages
# #COUNT counts failed read requests. A dense request reads the group once and
# stops at the error: "#2" fails two requests. An expert request reads all the
# routed slices of a layer at once, so each may fail: one fault (#1) per request,
# in layers far apart (a request that failed in layer 0 never reached layer 3).
if [[ $KIND == experts ]]; then # any expert's slice of it, whatever the router picks
  WHAT="reading expert [0-7] of '[^']*'"
  T2=$("$HY_BIN/hypura" estimate "$M" -c 256 "${SCHED[@]}" --tensors | awk '$3 == "NVMe" {print $1}' | tail -1)
  T2OFF=$(tensor offset "$M" "$T2") T2SIZE=$(tensor size "$M" "$T2")
  EIO2="eio@$FOFF+$FLEN#1,eio@$((T2OFF + 8192))+$((T2SIZE - 16384))#1"
else
  WHAT="reading '$T'"
  EIO2="eio@$FOFF+$FLEN#2"
fi

# start FAULT: a server with that fault; sets $pid $port
start() {
  : >"$WORK/serve.log" # before the server starts: its own redirection truncates the log only once it runs
  HYPURA_IO_FAULT=$1 "$HY_BIN/hypura" serve "$M" --port 0 -c 256 -t 2 "${SCHED[@]}" >"$WORK/serve.log" 2>&1 &
  pid=$!
  port=$(serve_port "$WORK/serve.log" $pid 300) || { cat "$WORK/serve.log"; bad "$KIND: server with [$1] did not start"; kill $pid 2>/dev/null; exit 1; }
  grep -q "$MODE" "$WORK/serve.log" || bad "$KIND: server did not plan $MODE"
}
# stop ROW: SIGTERM; it must have stayed up and exit 0
stop() {
  if ! kill -0 $pid 2>/dev/null; then
    bad "$KIND $1: the server died"; wait $pid; tail -5 "$WORK/serve.log"; return
  fi
  kill -TERM $pid
  local i
  for i in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -KILL $pid 2>/dev/null && bad "$KIND $1: the server did not stop on SIGTERM within 10 s"
  wait $pid
  local rc=$?
  [[ $rc -eq 0 ]] || { bad "$KIND $1: server exit $rc on SIGTERM"; tail -5 "$WORK/serve.log"; }
}
# req NAME ROUTE STREAM: one greedy request of the prompt; body in $WORK/NAME.body, status in $code
req() {
  local body
  if [[ $2 == /api/generate ]]; then
    body='{"model":"model","prompt":"'"$PROMPT"'","raw":true,"stream":'$3',"options":{"temperature":0,"num_predict":'$NP'}}'
  else
    body='{"model":"model","prompt":"'"$PROMPT"'","stream":'$3',"temperature":0,"max_tokens":'$NP'}'
  fi
  code=$(curl -s -m 60 -o "$WORK/$1.body" -w '%{http_code}' "http://127.0.0.1:$port$2" -d "$body")
  [[ $code == 000 ]] && code="no answer in 60 s (curl)"
}
# check NAME ROUTE STREAM ok|REGEX: the response of req() is complete and equals
# the reference, or is an error whose message matches REGEX
check() {
  local why
  why=$(python3 - "$WORK/$1.body" "$code" "$2" "$3" "$4" "$WORK/ref.txt" <<'EOF'
import json, re, sys
path, code, route, stream, want, ref = sys.argv[1:7]
ref = open(ref).read()
raw = open(path, encoding="utf-8", errors="replace").read()
oai = route.startswith("/v1")
def err_text(o):
    e = o.get("error")
    return e.get("message") if isinstance(e, dict) else e
try:
    if stream == "true" and code == "200":
        if oai:
            items = [l[6:] for l in raw.split("\n") if l.startswith("data: ")]
            done = items and items[-1] == "[DONE]"
            objs = [json.loads(i) for i in items if i != "[DONE]"]
            text = "".join(c["choices"][0].get("text", "") for c in objs if c.get("choices"))
        else:
            objs = [json.loads(l) for l in raw.split("\n") if l.strip()]
            done = bool(objs) and objs[-1].get("done") is True
            text = "".join(o.get("response", "") for o in objs)
        last_err = err_text(objs[-1]) if objs and "error" in objs[-1] else None
    else:
        o = json.loads(raw)
        done = code == "200"
        text = (o["choices"][0]["text"] if oai else o.get("response", "")) if done else ""
        last_err = None if done else err_text(o)
except Exception as e:
    print(f"unparsable response (HTTP {code}): {e}: {raw[:200]!r}"); sys.exit()
if want == "ok":
    if code != "200" or not done or last_err: print(f"HTTP {code}, done={done}, error={last_err!r}")
    elif text != ref: print(f"text differs: {text!r} vs run's {ref!r}")
else:
    if done: print(f"HTTP {code}: completed although the read failed")
    elif not last_err or not re.search(want, last_err): print(f"HTTP {code}: error {last_err!r} does not match /{want}/")
    elif not ref.startswith(text): print(f"text before the error {text!r} is not a prefix of run's")
    else: print(f"OK HTTP {code}, {len(text)} chars before the error: {last_err}")
EOF
)
  if [[ $4 == ok && -z $why ]]; then ok "$KIND $1: HTTP 200, complete, same text as run"
  elif [[ $4 != ok && $why == OK* ]]; then ok "$KIND $1: ${why#OK }"
  else bad "$KIND $1 ($2 stream=$3): $why"; fi
}

# EIO, transient (the first 2 requests that touch the tensor): a streaming
# request fails, a non-streaming one fails, the third succeeds
start "$EIO2"
req eio1 /api/generate true; check eio1 /api/generate true "^$WHAT: EIO reading $M at offset [0-9]+ \(Input/output error\)$"
req eio2 /api/generate false; check eio2 /api/generate false "^$WHAT: EIO reading $M at offset [0-9]+"
req eio3 /api/generate true; check eio3 /api/generate true ok
stop eio
# short read, transient, on the OpenAI route (SSE)
start "short@$((TOFF + TSIZE / 2))+$((TSIZE / 4))#1"
req short1 /v1/completions true; check short1 /v1/completions true "^$WHAT: short read at offset [0-9]+ of $M: end of file [0-9]+ bytes early$"
req short2 /v1/completions true; check short2 /v1/completions true ok
stop short
# EAGAIN on every request's first attempt, and a slow device: answered in full
start "eagain@0+1G"
req eagain1 /api/generate true; check eagain1 /api/generate true ok
req eagain2 /v1/completions false; check eagain2 /v1/completions false ok
stop eagain
start "delay_ms=15"
req delay1 /api/generate true; check delay1 /api/generate true ok
stop delay
# the file truncated under the server: requests fail naming it; restored in
# place (same inode), the next request is answered in full
start ""
req trunc0 /api/generate true; check trunc0 /api/generate true ok
truncate -s "$TOFF" "$M"
req trunc1 /api/generate true; check trunc1 /api/generate true "$M was truncated while in use \($TOFF bytes now, [0-9]+ when opened\): short read at offset [0-9]+$"
req trunc2 /api/generate false; check trunc2 /api/generate false "was truncated while in use"
cat "$WORK/model.orig" >"$M"
req trunc3 /api/generate true; check trunc3 /api/generate true ok
# renamed over: the server keeps reading the file it loaded
make_model "$KIND" "$WORK/other.gguf" 77
mv -f "$WORK/other.gguf" "$M"
req ren1 /api/generate true; check ren1 /api/generate true ok
stop trunc-ren
rm -f "$WORK"/*.gguf "$WORK/model.orig"
exit $fail
