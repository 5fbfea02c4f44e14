# The start every detached job on a `device` machine shares (sourced by device_all.sh and
# the xcache_*.sh jobs, which bench/gpu/device_poll.sh starts and follows): the repository
# root as ROOT and the working directory, the job's log $L/log (L=/tmp/hy-gpu) taking all
# output, the CUDA build (bench/gpu/device_setup.sh) and its environment. A failed setup
# marks the job done and exits.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
L=${HY_JOB_DIR:-/tmp/hy-gpu} # a wrapper job (xcache_mix.sh) gives each part its own
mkdir -p $L
exec >$L/log 2>&1
echo "start $(date -u +%T)"
env_sh=$(bench/gpu/device_setup.sh) || { echo "SETUP FAILED"; touch $L/done; exit 1; }
. "$env_sh"
