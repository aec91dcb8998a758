#!/usr/bin/env bash
# What each routing feature costs a proxied request: one Switchyard build
# run with each feature alone, then with all of them, beside nginx and a
# plain Switchyard (one region, weighted), one worker each on CPU 0 in front
# of the same backend, `wrk` on CPU 1. The targets take turns for ROUNDS
# rounds; each figure is the median of its rounds, each ratio is to nginx in
# the same round, and "+µs" is what the feature adds to the plain router's
# CPU per request in the same round.
#
#   features.sh [BIN_DIR]      # target/dist by default; ROUNDS=3 DURATION=5s CONNECTIONS=32
#
# Targets:
#   nginx-posts    nginx, one request in four a POST with a body (as posts, writes and all)
#   plain          one region, weighted; GETs
#   geo            two regions by geo (the client's network named by CIDR), with residency; GETs
#   dial           two regions, a dial at 50% on the second; GETs
#   ratelimit      one region, a rate limit that never refuses; GETs
#   posts          plain, one request in four a POST with a body: logged, as every write
#                  is, and given a generated idempotency key (the defaults: fsync: batch,
#                  idempotency: generate), but with no owners, neither pinned nor fenced
#   writes         posts, with one region owning every partition: each write pinned to
#                  it and fenced
#   all            every feature above at once (compare.sh's and run.sh's features-*)
# `posts` against `plain` is what a logged write with a body costs beyond a
# GET; `writes` against `posts`, what pinning and fencing it add.
# Servers listen on 127.0.0.1 only and stop on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/dist}
[[ -x $BIN/switchyard ]] || { echo "features.sh: no switchyard in $BIN" >&2; exit 2; }
source loadtests/peers/lib.sh
require_tools wrk nginx taskset
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
BASE=${BASE_PORT:-18680}
BACKEND=$BASE

start_backend $BACKEND 1
declare -A PORT PID SCRIPT
port=$((BASE + 1))
PORT[nginx]=$port
nginx_proxy_config "$port" "$BACKEND" 1
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
NGINX_MASTER=$!
PORT[nginx-posts]=$port

features_config 0 # for $WORK/mixed.lua and the `all` config
region() { # NAME [EXTRA]: a region in front of the backend
  printf '  %s:\n    type: full\n    endpoints: ["127.0.0.1:%s"]\n    location: { continent: NA, country: US }\n    services: [api]\n    compliance: { data_residency: US }\n    health: { path: /health, interval: 1s }\n%s' \
    "$1" "$BACKEND" "${2:-}"
}
config() { # TARGET PORT -> $WORK/TARGET.yaml
  local head="listen: { http: 127.0.0.1:$2 }
shutdown_grace: 1s
state_dir: $WORK/state-$1
regions:"
  case $1 in
    plain | posts) printf '%s\n%s\nrouting: { policy: weighted }\n' "$head" "$(region a)" ;;
    geo) printf '%s\n%s\n%s\nrouting:\n  policy: geo\n  geo:\n    networks: { "127.0.0.0/8": US }\n    prefer: { US: [b, a], default: [a, b] }\n  residency: { US: US }\n' \
      "$head" "$(region a)" "$(region b)" ;;
    dial) printf '%s\n%s\n%s\nrouting: { policy: weighted }\n' "$head" "$(region a)" "$(region b '    dial: 50
')" ;;
    ratelimit) printf '%s\n%s\nrouting: { policy: weighted }\n' "$head" "$(region a '    rate_limit: { rps: 10000000, burst: 1000000 }
')" ;;
    writes) printf '%s\n%s\nrouting: { policy: weighted }\nconsistency:\n  owners: { default: a }\n  idempotency: generate\noplog: { fsync: batch }\n' \
      "$head" "$(region a)" ;;
    all) sed -e "s#127.0.0.1:0 #127.0.0.1:$2 #" -e "s#state-features#state-all#" "$WORK/features.yaml" ;;
  esac > "$WORK/$1.yaml"
}
TARGETS=(nginx nginx-posts plain geo dial ratelimit posts writes all)
SCRIPT[nginx-posts]=$WORK/mixed.lua
for t in "${TARGETS[@]:2}"; do
  port=$((port + 1)); PORT[$t]=$port
  config "$t" "$port"
  SWITCHYARD_THREADS=1 SWITCHYARD_LOG=warn taskset -c 0 "$BIN/switchyard" run --config "$WORK/$t.yaml" \
    >/dev/null 2>"$WORK/$t.err" & PIDS+=($!)
  PID[$t]=$!
  case $t in posts | writes | all) SCRIPT[$t]=$WORK/mixed.lua ;; esac
done
for t in "${TARGETS[@]}"; do
  wait_port "${PORT[$t]}" || { cat "$WORK/$t.err" >&2 2>/dev/null; exit 1; }
done
sleep 1.5

declare -A CPU USER SYS RPS
measure() { # target round
  [[ $1 == nginx* ]] && PID[$1]="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
  wrk_cpu_round "$1" "$2" "${PORT[$1]}" 1 1 "${SCRIPT[$1]:-}"
}
run_rounds "${TARGETS[@]}"

printf '\n%-12s %10s %12s %10s %8s   (1 worker; median of %s rounds of %s; ratios and +µs in the same round)\n' \
  target "req/s" "CPU µs/req" "vs nginx" "+µs" "$ROUNDS" "$DURATION"
for t in "${TARGETS[@]}"; do
  read -r rps cpu ratio user sys < <(round_medians "$t")
  plus=$(printf '%.2f' "$(round_median_gap "$t" plain)")
  [[ $t == nginx* || $t == plain ]] && plus=-
  printf '%-12s %10.0f %12.2f %10.2f %8s   user %5.2f  system %5.2f\n' "$t" "$rps" "$cpu" "$ratio" "$plus" "$user" "$sys"
done
echo "+µs: the target's CPU per request less plain Switchyard's. nginx-posts, posts, writes, all: one request in four a POST."
echo "vs nginx: to nginx's GETs in the same round (compare nginx-posts for what a POST costs nginx)."
