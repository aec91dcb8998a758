#!/usr/bin/env bash
# Side-by-side load drill: backend, nginx, HAProxy, bare pingora, Switchyard.
# See README.md in this folder. Servers listen on 127.0.0.1 only and stop on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
PROFILE=${PROFILE:-dist}
BASE=${BASE_PORT:-18180}
BACKEND=$BASE; NGINX=$((BASE+1)); HAPROXY=$((BASE+2)); BARE=$((BASE+3)); SY=$((BASE+4))
for tool in wrk nginx haproxy taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx haproxy util-linux" >&2; exit 2; }
done
cargo build --profile "$PROFILE" -p switchyard-cli -p switchyard-bare-proxy >&2
BIN=target/$PROFILE
source loadtests/peers/lib.sh

cat > "$WORK/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGINX; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
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

start_backend $BACKEND 1
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
taskset -c 0 haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!)
taskset -c 0 "$BIN/bare-proxy" 127.0.0.1:$BARE 127.0.0.1:$BACKEND 1 2>"$WORK/bare.err" & PIDS+=($!)
SWITCHYARD_THREADS=1 SWITCHYARD_LOG=warn taskset -c 0 "$BIN/switchyard" run --config "$WORK/switchyard.yaml" >"$WORK/sy.out" 2>"$WORK/sy.err" & PIDS+=($!)

for port in $BACKEND $NGINX $HAPROXY $BARE $SY; do wait_port $port; done
sleep 1

declare -A RPS P50 P99
to_ms() { # wrk prints 1.23ms, 850.00us, 1.01s
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}
run() { # name port
  local out
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$2/kv/x" > /dev/null 2>&1 || true # warm-up skipped below
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$2/kv/x")
  if echo "$out" | grep -q "Non-2xx"; then echo "$1: non-2xx answers" >&2; echo "$out" >&2; fi
  RPS[$1]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  P50[$1]=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
  P99[$1]=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
}
for t in backend:$BACKEND nginx:$NGINX haproxy:$HAPROXY bare-pingora:$BARE switchyard:$SY; do
  run "${t%%:*}" "${t##*:}"
done

printf '\n%-14s %12s %10s %10s %14s %14s\n' target "req/s" "p50 ms" "p99 ms" "rps/nginx" "rps/bare"
for t in backend nginx haproxy bare-pingora switchyard; do
  printf '%-14s %12.0f %10.3f %10.3f %14.2f %14.2f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
    "$(awk -v a="${RPS[$t]}" -v b="${RPS[nginx]}" 'BEGIN{print a/b}')" \
    "$(awk -v a="${RPS[$t]}" -v b="${RPS[bare-pingora]}" 'BEGIN{print a/b}')"
done
printf '\nswitchyard p99 / nginx p99: %.2f\n' "$(awk -v a="${P99[switchyard]}" -v b="${P99[nginx]}" 'BEGIN{print a/b}')"
