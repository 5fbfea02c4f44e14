# Shared by the scripts that start `hypura serve --port 0` (sourced).
# serve_port LOG PID [TRIES]: prints the port the server announced in LOG,
# trying every 0.1 s (TRIES times, default 600) while PID lives; fails when it
# never did. A caller that reuses LOG empties it before starting the server:
# `cmd >LOG &` truncates LOG only once the child runs, so until then the last
# server's port is still there to be found.
serve_port() {
  local log=$1 pid=$2 n=${3:-600} p i
  for ((i = 0; i < n; i++)); do
    p=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
    [[ -n $p ]] && { echo "$p"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
