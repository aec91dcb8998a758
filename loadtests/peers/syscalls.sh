#!/usr/bin/env bash
# System calls per proxied request, by call, for nginx, the bare pingora proxy
# and Switchyard: strace attached to each proxy over N1 then N2 requests on 4
# kept-alive connections, (count(N2) - count(N1)) / (N2 - N1). With
# instructions.sh it splits a request's CPU between the kernel's work (what
# the calls ask for) and each proxy's own.
#   syscalls.sh                                   # N1=500 N2=2500, all three
#   TARGETS=switchyard BIN_DIR=target/dist syscalls.sh
#   FEATURES=1 TARGETS=switchyard syscalls.sh     # routing features on, one request in four
#                                                 # a logged write (compare.sh's features-*)
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${N1:-500}; N2=${N2:-2500}
BASE=${BASE_PORT:-18580}
BACKEND=$BASE; PROXY=$((BASE+1))
source loadtests/peers/lib.sh
require_tools strace nginx
proxy_binaries
start_backend $BACKEND
switchyard_config $PROXY $BACKEND 1m
nginx_proxy_config $PROXY $BACKEND
SY_CONFIG=$WORK/switchyard.yaml; WRITES=0
if [[ -n "${FEATURES:-}" ]]; then
  features_config $PROXY; SY_CONFIG=$WORK/features.yaml; WRITES=${WRITE_EVERY:-4}
fi

start() { # target -> TARGET_PID, serving and warmed up
  case "$1" in
    switchyard) SWITCHYARD_THREADS=1 SWITCHYARD_LOG=error "$BIN/switchyard" run --config "$SY_CONFIG" >/dev/null 2>&1 & ;;
    bare) "$BIN/bare-proxy" 127.0.0.1:$PROXY 127.0.0.1:$BACKEND 1 >/dev/null 2>&1 & ;;
    nginx) nginx -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1 & ;;
  esac
  TARGET_PID=$!
  wait_port $PROXY
  python3 loadtests/peers/client.py 127.0.0.1 $PROXY 200 4 "$WRITES"
}
calls() { # requests -> "syscall count" lines, counted in every thread and child of the target
  local out="$WORK/strace.$1" pids
  pids=$(echo "$TARGET_PID" $(pgrep -P "$TARGET_PID") | tr ' ' ',')
  strace -f -c -o "$out" -p "$pids" 2>/dev/null & local tracer=$!
  sleep 1 # attached to every thread before the first request
  python3 loadtests/peers/client.py 127.0.0.1 $PROXY "$1" 4 "$WRITES"
  kill -INT "$tracer"; wait "$tracer" || true
  awk '/^ *[0-9]/ && NF >= 5 && $NF != "total" {print $NF, $4}' "$out" | sort
}
printf '%-12s %-16s %8s\n' target syscall per-request
for t in ${TARGETS:-nginx bare switchyard}; do
  start "$t"
  calls "$N1" > "$WORK/a"; calls "$N2" > "$WORK/b"
  join -a2 -e0 -o 0,1.2,2.2 "$WORK/a" "$WORK/b" | awk -v n=$((N2 - N1)) -v t="$t" '
    { d = ($3 - $2) / n; if (d >= 0.05) printf "%-12s %-16s %8.2f\n", t, $1, d; s += d }
    END { printf "%-12s %-16s %8.2f\n\n", t, "all", s }'
  if [[ $t == nginx ]]; then kill -QUIT "$(cat "$WORK/nginx.pid")"; else kill -INT "$TARGET_PID"; fi
  wait "$TARGET_PID" 2>/dev/null || true
done
