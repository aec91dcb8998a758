#!/usr/bin/env bash
# CPU and context switches per proxied request, by thread: which of a proxy's
# threads a request's CPU goes to (Switchyard's workers, its op log writer,
# its control loops; nginx's workers), and how often each is switched out,
# of its own accord (voluntary: it waited) or not (involuntary: preempted).
# Read from /proc over a 5 s `wrk -c32` run after a 2 s warm-up.
#   threads.sh                      # Switchyard, GETs, one worker
#   threads.sh switchyard post      # every request a small POST (a logged write)
#   threads.sh nginx get 2          # nginx, two workers
#   BIN_DIR=/tmp/old-bin threads.sh # an older build's binaries, not rebuilt
# One worker: the proxy on CPU 0 and wrk on CPU 1. Two: the proxy and wrk
# (two threads) share CPUs 0 and 1, as run.sh runs them, so preemption by
# the client and the backend shows as involuntary switches.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${1:-switchyard}; METHOD=${2:-get}; WORKERS=${3:-1}
case "$TARGET" in switchyard | nginx) ;; *) echo "usage: threads.sh [switchyard|nginx] [get|post] [1|2]" >&2; exit 2 ;; esac
case "$METHOD" in get | post) ;; *) echo "threads.sh: method must be get or post, not '$METHOD'" >&2; exit 2 ;; esac
case "$WORKERS" in 1 | 2) ;; *) echo "threads.sh: workers must be 1 or 2, not '$WORKERS'" >&2; exit 2 ;; esac
BASE=${BASE_PORT:-18860}
BACKEND=$BASE; PROXY=$((BASE+1))
source loadtests/peers/lib.sh
require_tools wrk nginx
[[ $TARGET == switchyard ]] && proxy_binaries
start_backend $BACKEND 1

PROXY_CPUS=0; WRK_CPUS=1; WRK_THREADS=1
if [[ $WORKERS == 2 ]]; then PROXY_CPUS=0,1; WRK_CPUS=0,1; WRK_THREADS=2; fi
if [[ $TARGET == nginx ]]; then
  nginx_proxy_config $PROXY $BACKEND "$WORKERS"
  taskset -c $PROXY_CPUS nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
else
  switchyard_config $PROXY $BACKEND 1s "state_dir: $WORK/state"
  SWITCHYARD_THREADS=$WORKERS SWITCHYARD_LOG=warn taskset -c $PROXY_CPUS \
    "$BIN/switchyard" run --config "$WORK/switchyard.yaml" >/dev/null & PIDS+=($!)
fi
wait_port $PROXY
cat > "$WORK/request.lua" <<LUA
request = function()
  if "$METHOD" == "post" then
    return wrk.format("POST", "/kv/x", { ["Content-Type"] = "application/json" }, '{"v":1}')
  end
  return wrk.format("GET", "/kv/x")
end
LUA
load() { # seconds -> wrk's report
  taskset -c $WRK_CPUS wrk -t$WRK_THREADS -c32 -d"$1"s -s "$WORK/request.lua" "http://127.0.0.1:$PROXY/kv/x"
}
# Every thread of the proxy and of its children (nginx's workers): "tid:name
# cpu_ticks voluntary involuntary".
threads() {
  local pids
  pids="${PIDS[-1]} $({ pgrep -P "${PIDS[-1]}" || true; } | tr "\n" " ")"
  for p in $pids; do
    for t in /proc/"$p"/task/*; do
      printf '%s:%s %s %s\n' "$(basename "$t")" "$(tr ' ' _ <"$t"/comm)" \
        "$(awk '{print $14 + $15}' "$t"/stat)" \
        "$(awk '/^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2} END {print v, n}' "$t"/status)"
    done
  done | sort
}
load 2 >/dev/null
threads >"$WORK/before"
report=$(load 5)
threads >"$WORK/after"
n=$(awk '/requests in/ {print $1}' <<<"$report")
grep -q "Non-2xx" <<<"$report" && echo "threads.sh: the proxy answered some requests with errors" >&2
echo "$TARGET, $METHOD, $WORKERS worker(s): $n requests"
printf '%-26s %12s %12s %12s\n' thread "CPU µs/req" "vol/req" "invol/req"
join "$WORK/before" "$WORK/after" | awk -v n="$n" -v hz="$(getconf CLK_TCK)" '
  { cpu = ($5 - $2) / hz * 1e6 / n; v = ($6 - $3) / n; inv = ($7 - $4) / n
    if (cpu > 0 || v > 0 || inv > 0) printf "%-26s %12.2f %12.3f %12.3f\n", $1, cpu, v, inv }'
