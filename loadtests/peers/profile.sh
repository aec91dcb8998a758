#!/usr/bin/env bash
# Profiles one proxy under load: `profile.sh switchyard|bare` starts the
# backend (nginx) and the proxy (one thread, CPU 0), drives it with wrk
# (CPU 1) while `perf record` samples the proxy, and prints the top entries.
#   FEATURES=1 profile.sh switchyard   # routing features on, one request in four a write
#                                      # (compare.sh's features-*)
#   KERNEL=1 ...                       # kernel symbols only (where the kernel share goes)
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${1:-switchyard}
PROFILE=${PROFILE:-dist}
DURATION=${DURATION:-8}
BASE=${BASE_PORT:-18280}
BACKEND=$BASE; PROXY=$((BASE+1))
BIN=target/$PROFILE
source loadtests/peers/lib.sh
start_backend $BACKEND 1
switchyard_config $PROXY $BACKEND 1s
SY_CONFIG=$WORK/switchyard.yaml; SCRIPT=()
if [[ -n "${FEATURES:-}" ]]; then
  features_config $PROXY; SY_CONFIG=$WORK/features.yaml; SCRIPT=(-s "$WORK/mixed.lua")
fi
case "$TARGET" in
  switchyard) SWITCHYARD_THREADS=1 SWITCHYARD_LOG=warn taskset -c 0 "$BIN/switchyard" run --config "$SY_CONFIG" >/dev/null & PIDS+=($!) ;;
  bare) taskset -c 0 "$BIN/bare-proxy" 127.0.0.1:$PROXY 127.0.0.1:$BACKEND 1 & PIDS+=($!) ;;
  *) echo "usage: profile.sh switchyard|bare" >&2; exit 2 ;;
esac
PID=${PIDS[-1]}
wait_port $PROXY
sleep 1
taskset -c 1 wrk -t1 -c32 -d$((DURATION + 2))s --latency "${SCRIPT[@]}" "http://127.0.0.1:$PROXY/kv/x" > "$WORK/wrk.out" &
WRK=$!
sleep 1
perf record -e cpu-clock -F 999 -g -p "$PID" -o "$WORK/perf.data" -- sleep "$DURATION" 2>/dev/null >/dev/null
wait "$WRK" || true
grep -E "Requests/sec|99%" "$WORK/wrk.out"
[[ -n "${KEEP_PERF:-}" ]] && cp "$WORK/perf.data" "$KEEP_PERF"; perf report -i "$WORK/perf.data" ${CHILDREN:---no-children} --stdio --sort ${SORT:-symbol} ${KERNEL:+--dsos '[kernel.kallsyms]'} 2>/dev/null | grep -E "^\s+[0-9.]+%" | head -${TOP:-40}
