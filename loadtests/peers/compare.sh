#!/usr/bin/env bash
# Before and after, in one run: two builds of Switchyard (routing features
# off and on) and of the bare pingora proxy, beside nginx, one worker each
# on CPU 0 in front of the same backend, `wrk` on CPU 1 (or WORKERS=2). The targets take
# turns for ROUNDS rounds; each figure is the median of its rounds, and each
# ratio is to nginx in the same round, so a machine that gets busier halfway
# moves every target, not the comparison.
#
#   compare.sh OLD_BIN_DIR [NEW_BIN_DIR]    # ROUNDS=3 DURATION=5s CONNECTIONS=32
#   WORKERS=2 compare.sh ...                # two workers each, on both CPUs
#                                           # beside the client (as run.sh)
#   ONLY=features compare.sh ...            # nginx and one pair (bare, switchyard
#                                           # or features) only
#
# A BIN_DIR holds `switchyard` and `bare-proxy` (e.g. target/dist of an
# older checkout: `git worktree add /tmp/old REV`, then build it there with
# `cargo build --profile dist -p switchyard-cli -p switchyard-bare-proxy`).
# Servers listen on 127.0.0.1 only and stop on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -lt 1 ]]; then
  echo "usage: compare.sh OLD_BIN_DIR [NEW_BIN_DIR]" >&2
  exit 2
fi
OLD=$1
NEW=${2:-target/dist}
for dir in "$OLD" "$NEW"; do
  for bin in switchyard bare-proxy; do
    [[ -x $dir/$bin ]] || { echo "compare.sh: no $bin in $dir" >&2; exit 2; }
  done
done
source loadtests/peers/lib.sh
require_tools wrk nginx taskset
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-1}
# One worker: each target on CPU 0, the client on CPU 1. Two: the targets
# may use both CPUs, beside the client.
if [[ $WORKERS == 1 ]]; then CPUS=0; CLIENT=1; else CPUS=0,1; CLIENT=0,1; fi
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
BASE=${BASE_PORT:-18380}
BACKEND=$BASE

start_backend $BACKEND 1
declare -A PORT PID
port=$((BASE + 1))

PORT[nginx]=$port
nginx_proxy_config "$port" "$BACKEND" "$WORKERS"
taskset -c "$CPUS" nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
NGINX_MASTER=$!

for build in old new; do
  dir=$OLD; [[ $build == new ]] && dir=$NEW
  port=$((port + 1)); PORT[bare-$build]=$port
  taskset -c "$CPUS" "$dir/bare-proxy" 127.0.0.1:$port 127.0.0.1:$BACKEND "$WORKERS" 2>"$WORK/bare-$build.err" & PIDS+=($!)
  PID[bare-$build]=$!
  port=$((port + 1)); PORT[switchyard-$build]=$port
  switchyard_config $port $BACKEND 1s "state_dir: $WORK/state-sy-$build"
  mv "$WORK/switchyard.yaml" "$WORK/sy-$build.yaml"
  SWITCHYARD_THREADS=$WORKERS SWITCHYARD_LOG=warn taskset -c "$CPUS" "$dir/switchyard" run --config "$WORK/sy-$build.yaml" \
    >/dev/null 2>"$WORK/sy-$build.err" & PIDS+=($!)
  PID[switchyard-$build]=$!
  port=$((port + 1)); PORT[features-$build]=$port
  features_config $port
  sed "s#state-features#state-features-$build#" "$WORK/features.yaml" > "$WORK/syf-$build.yaml"
  SWITCHYARD_THREADS=$WORKERS SWITCHYARD_LOG=warn taskset -c "$CPUS" "$dir/switchyard" run --config "$WORK/syf-$build.yaml" \
    >/dev/null 2>"$WORK/syf-$build.err" & PIDS+=($!)
  PID[features-$build]=$!
done
TARGETS=(nginx bare-old bare-new switchyard-old switchyard-new features-old features-new)
# ONLY=features (or bare, switchyard): nginx and that pair only, for more
# rounds of one comparison in the same time.
if [[ -n "${ONLY:-}" ]]; then TARGETS=(nginx "$ONLY-old" "$ONLY-new"); fi
for t in "${TARGETS[@]}"; do wait_port "${PORT[$t]}"; done
sleep 1.5

declare -A CPU USER SYS RPS
measure() { # target round
  local script=""
  [[ $1 == features-* ]] && script=$WORK/mixed.lua
  # nginx's worker is its master's child, there once nginx listens.
  [[ $1 == nginx ]] && PID[nginx]="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
  wrk_cpu_round "$1" "$2" "${PORT[$1]}" "$CLIENT" "$WORKERS" "$script"
}
run_rounds "${TARGETS[@]}"

printf '\n%-16s %10s %12s %10s   (%s worker(s); median of %s rounds of %s; ratio to nginx in the same round)\n' \
  target "req/s" "CPU µs/req" "vs nginx" "$WORKERS" "$ROUNDS" "$DURATION"
for t in "${TARGETS[@]}"; do
  read -r rps cpu ratio user sys < <(round_medians "$t")
  printf '%-16s %10.0f %12.2f %10.2f   user %5.2f  system %5.2f\n' "$t" "$rps" "$cpu" "$ratio" "$user" "$sys"
done
echo "user, system: the CPU per request in user space and in the kernel (medians of their own)."
echo "features-*: geo routing with residency, a dial, rate limits, one request in four a write logged with fsync: batch."
