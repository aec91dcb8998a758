#!/usr/bin/env bash
# Side-by-side load drill: nginx, HAProxy, bare pingora and Switchyard (with
# its routing features off and on) in front of one backend, with one and two
# workers each; requests/s, p99 and CPU per request (user and system time of
# the proxy's processes from /proc, over the requests served); then, at a
# constant rate of 25, 50 and 75% of nginx's maximum, the latency each adds
# over the backend's own (coordinated omission corrected). See README.md.
# Servers listen on 127.0.0.1 only and stop on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WORKERS=${WORKERS:-"1 2"}
RATES=${RATES-"25 50 75"}      # constant-rate load, in % of nginx's maximum; "" to skip
RATE_SECS=${RATE_SECS:-5}
PROFILE=${PROFILE:-dist}
BASE=${BASE_PORT:-18180}
BACKEND=$BASE; NGINX=$((BASE+1)); HAPROXY=$((BASE+2)); BARE=$((BASE+3)); SY=$((BASE+4)); SYF=$((BASE+5))
source loadtests/peers/lib.sh
require_tools wrk nginx haproxy taskset
cargo build --profile "$PROFILE" -p switchyard-cli -p switchyard-bare-proxy -p switchyard-drills >&2
BIN=target/$PROFILE

start_peers() { # workers cpus
  local w=$1 cpus=$2
  nginx_proxy_config "$NGINX" "$BACKEND" "$w"
  cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread $w
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND
HAP
  switchyard_config $SY $BACKEND 1s
  features_config $SYF
  rm -rf "$WORK"/state*
  PEERS=()
  taskset -c "$cpus" nginx -c "$WORK/nginx.conf" -p "$WORK" & PEERS+=($!); NGINX_PID=$!
  taskset -c "$cpus" haproxy -f "$WORK/haproxy.cfg" -db & PEERS+=($!); HAPROXY_PID=$!
  taskset -c "$cpus" "$BIN/bare-proxy" 127.0.0.1:$BARE 127.0.0.1:$BACKEND "$w" 2>"$WORK/bare.err" & PEERS+=($!); BARE_PID=$!
  SWITCHYARD_THREADS=$w SWITCHYARD_LOG=warn taskset -c "$cpus" "$BIN/switchyard" run --config "$WORK/switchyard.yaml" \
    >"$WORK/sy.out" 2>"$WORK/sy.err" & PEERS+=($!); SY_PID=$!
  SWITCHYARD_THREADS=$w SWITCHYARD_LOG=warn taskset -c "$cpus" "$BIN/switchyard" run --config "$WORK/features.yaml" \
    >"$WORK/syf.out" 2>"$WORK/syf.err" & PEERS+=($!); SYF_PID=$!
  PIDS+=("${PEERS[@]}")
  for port in $NGINX $HAPROXY $BARE $SY $SYF; do wait_port $port; done
  sleep 1.5
}
stop_peers() {
  for p in "${PEERS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PEERS[@]}"; do wait "$p" 2>/dev/null || true; done
}
# Every process of a target: nginx's workers are its master's children.
pids_of() {
  case "$1" in
    nginx) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
    haproxy) echo "$HAPROXY_PID" ;;
    bare-pingora) echo "$BARE_PID" ;;
    switchyard) echo "$SY_PID" ;;
    switchyard+features) echo "$SYF_PID" ;;
  esac
}
to_ms() { # wrk prints 1.23ms, 850.00us, 1.01s
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}

declare -A RPS P99 USER SYS
measure() { # name port workers client-cpus [script]
  local name=$1 port=$2 w=$3 cpus=$4 script=() out pids u0 s0 u1 s1 n
  [[ -n "${5:-}" ]] && script=(-s "$5")
  pids=$(pids_of "$name")
  taskset -c "$cpus" wrk -t"$w" -c"$CONNECTIONS" -d2s "${script[@]}" "http://127.0.0.1:$port/kv/x" >/dev/null 2>&1 || true
  read -r u0 s0 < <(cpu_split_of $pids)
  out=$(taskset -c "$cpus" wrk -t"$w" -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "http://127.0.0.1:$port/kv/x")
  read -r u1 s1 < <(cpu_split_of $pids)
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx answers" >&2; echo "$out" >&2; fi
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS[$name,$w]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  P99[$name,$w]=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
  USER[$name,$w]=$(per_request $((u1 - u0)) "$n" 1)
  SYS[$name,$w]=$(per_request $((s1 - s0)) "$n" 1)
}

declare -A RATE_P50 RATE_P99 RATE_GOT RATE_ASKED RATE_CPU RATE_SPLIT
# constant_rate name port pct workers client-cpus: rate-load at pct% of
# nginx's maximum with this many workers.
# switchyard+features gets compare.sh's mix (one request in four a write).
constant_rate() {
  local name=$1 port=$2 pct=$3 w=$4 cpus=$5 rate out writes=0 pids="" u0=0 s0=0 u1=0 s1=0 sent
  [[ $name == switchyard+features ]] && writes=4
  [[ $name != backend ]] && pids=$(pids_of "$name")
  rate=$(awk -v r="${RPS[nginx,$w]}" -v p="$pct" 'BEGIN { printf "%.0f", r * p / 100 }')
  [[ -n $pids ]] && read -r u0 s0 < <(cpu_split_of $pids)
  out=$(taskset -c "$cpus" "$BIN/rate-load" --addr "127.0.0.1:$port" --rate "$rate" --secs "$RATE_SECS" \
    --connections "$CONNECTIONS" --write-every "$writes")
  [[ -n $pids ]] && read -r u1 s1 < <(cpu_split_of $pids)
  sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$out")
  if [[ -n $pids && ${sent:-0} -gt 0 ]]; then
    RATE_CPU[$name,$w,$pct]=$(per_request $((u1 - u0 + s1 - s0)) "$sent" 1)
    RATE_SPLIT[$name,$w,$pct]="$(per_request $((u1 - u0)) "$sent" 1) + $(per_request $((s1 - s0)) "$sent" 1)"
  fi
  RATE_P50[$name,$w,$pct]=$(sed -n 's/.*p50_ms=\([^ ]*\).*/\1/p' <<<"$out")
  RATE_P99[$name,$w,$pct]=$(sed -n 's/.*p99_ms=\([^ ]*\).*/\1/p' <<<"$out")
  RATE_GOT[$name,$w,$pct]=$(sed -n 's/.*achieved=\([^ ]*\).*/\1/p' <<<"$out")
  RATE_ASKED[$w,$pct]=$rate
}

start_backend $BACKEND 1
TARGETS=(nginx haproxy bare-pingora switchyard switchyard+features)
for w in $WORKERS; do
  # One worker: the proxies on CPU 0, the client and backend on CPU 1.
  # Two workers: the proxies may use both CPUs, beside the client.
  if [[ $w == 1 ]]; then cpus=0; client=1; else cpus=0,1; client=0,1; fi
  start_peers "$w" "$cpus"
  for t in "${TARGETS[@]}"; do
    case $t in
      nginx) measure nginx $NGINX "$w" $client ;;
      haproxy) measure haproxy $HAPROXY "$w" $client ;;
      bare-pingora) measure bare-pingora $BARE "$w" $client ;;
      switchyard) measure switchyard $SY "$w" $client ;;
      switchyard+features) measure switchyard+features $SYF "$w" $client "$WORK/mixed.lua" ;;
    esac
  done
  for pct in $RATES; do
    for t in backend:$BACKEND nginx:$NGINX haproxy:$HAPROXY bare-pingora:$BARE switchyard:$SY switchyard+features:$SYF; do
      constant_rate "${t%%:*}" "${t##*:}" "$pct" "$w" $client
    done
  done
  stop_peers
done

printf '\n%-20s %7s %10s %9s %10s %9s %9s %11s %10s\n' target workers "req/s" "p99 ms" "CPU µs/req" "user" "system" "CPU/nginx" "p99/nginx"
for w in $WORKERS; do
  for t in "${TARGETS[@]}"; do
    cpu=$(awk -v u="${USER[$t,$w]}" -v s="${SYS[$t,$w]}" 'BEGIN { printf "%.1f", u + s }')
    ref=$(awk -v u="${USER[nginx,$w]}" -v s="${SYS[nginx,$w]}" 'BEGIN { print u + s }')
    printf '%-20s %7s %10.0f %9.3f %10s %9s %9s %11.2f %10.2f\n' "$t" "$w" "${RPS[$t,$w]}" "${P99[$t,$w]}" "$cpu" \
      "${USER[$t,$w]}" "${SYS[$t,$w]}" "$(awk -v a="$cpu" -v b="$ref" 'BEGIN{print a/b}')" \
      "$(awk -v a="${P99[$t,$w]}" -v b="${P99[nginx,$w]}" 'BEGIN{print a/b}')"
  done
done
echo
echo "switchyard+features: one request in four a write (POST /kv/x), logged with fsync: batch."
[[ -z "$RATES" ]] && exit 0
printf '\nConstant rate (latency from when each request was due), added over the backend alone (GETs):\n'
printf '%-20s %7s %6s %9s %10s %12s %12s %12s %11s %13s\n' target workers "% max" "rate" "achieved" "p50 added" "p99 added" "p99" "CPU µs/req" "user + system"
for w in $WORKERS; do
  for pct in $RATES; do
    for t in backend nginx haproxy bare-pingora switchyard switchyard+features; do
      printf '%-20s %7s %6s %9s %10s %9.3f ms %9.3f ms %9s ms %11s %13s\n' "$t" "$w" "$pct" "${RATE_ASKED[$w,$pct]}" \
        "${RATE_GOT[$t,$w,$pct]}" \
        "$(awk -v a="${RATE_P50[$t,$w,$pct]}" -v b="${RATE_P50[backend,$w,$pct]}" 'BEGIN{print a-b}')" \
        "$(awk -v a="${RATE_P99[$t,$w,$pct]}" -v b="${RATE_P99[backend,$w,$pct]}" 'BEGIN{print a-b}')" \
        "${RATE_P99[$t,$w,$pct]}" "${RATE_CPU[$t,$w,$pct]:--}" "${RATE_SPLIT[$t,$w,$pct]:--}"
    done
  done
done
echo "switchyard+features: one request in four a write, as above."
echo "A target whose achieved rate is below the rate asked could not keep up: its latency is its queue."
echo "CPU µs/req at a constant rate: requests arrive one by one (released every 100 µs), so a proxy"
echo "wakes for most of them; under the closed loop above it serves several per wake-up."
