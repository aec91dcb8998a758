#!/usr/bin/env bash
# What the transport costs, side by side in one run: requests/s and CPU per
# request through Switchyard to a backend over TLS (verified against a test
# CA, pooled connections) beside nginx with proxy_ssl to the same backend,
# and Switchyard plain with the access log off and on. See README.md.
# Servers listen on 127.0.0.1 only and stop when the script ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
PROFILE=${PROFILE:-dist}
BASE=${BASE_PORT:-18280}
PLAIN=$BASE; TLS=$((BASE+1)); NGINX_TLS=$((BASE+2)); SY_TLS=$((BASE+3)); SY_PLAIN=$((BASE+4)); SY_LOG=$((BASE+5)); NGINX_PLAIN=$((BASE+6))
source loadtests/peers/lib.sh
require_tools wrk nginx openssl taskset
cargo build --profile "$PROFILE" -p switchyard-cli >&2
BIN=target/$PROFILE

make_test_ca backend

cat > "$WORK/backend.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PLAIN; location / { default_type application/json; return 200 '{"region":"a"}\n'; } }
  server { listen 127.0.0.1:$TLS ssl; ssl_certificate $WORK/backend.pem; ssl_certificate_key $WORK/backend.key;
           location / { default_type application/json; return 200 '{"region":"a"}\n'; } } }
NGX
cat > "$WORK/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream tls_backend { server 127.0.0.1:$TLS; keepalive 64; }
  upstream plain_backend { server 127.0.0.1:$PLAIN; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_TLS; location / { proxy_pass https://tls_backend; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_ssl_verify on; proxy_ssl_trusted_certificate $WORK/ca.pem;
    proxy_ssl_name 127.0.0.1; proxy_ssl_session_reuse on; } }
  server { listen 127.0.0.1:$NGINX_PLAIN; location / { proxy_pass http://plain_backend; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
NGX
sy_config() { # file port endpoint extra-region-lines extra-top
  cat > "$WORK/$1" <<SY
listen: { http: 127.0.0.1:$2 }
shutdown_grace: 1s
state_dir: $WORK/state-${1%.yaml}
$5
regions:
  a:
    type: full
    endpoints: ["$3"]
    services: [api]
    health: { path: /health, interval: 1s }
$4
routing: { policy: weighted }
SY
}
sy_config tls.yaml $SY_TLS "https://127.0.0.1:$TLS" "    tls: { ca: $WORK/ca.pem }
    protocol: h1" ""
sy_config plain.yaml $SY_PLAIN "127.0.0.1:$PLAIN" "" ""
sy_config log.yaml $SY_LOG "127.0.0.1:$PLAIN" "" "access_log: { path: $WORK/access.log }"

taskset -c 1 nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
NGINX_MASTER=$!
for f in tls plain log; do
  SWITCHYARD_THREADS=1 SWITCHYARD_LOG=warn taskset -c 0 "$BIN/switchyard" run --config "$WORK/$f.yaml" \
    >"$WORK/$f.out" 2>"$WORK/$f.err" & PIDS+=($!)
  eval "SY_PID_$f=$!"
done
for port in $PLAIN $TLS $NGINX_TLS $NGINX_PLAIN $SY_TLS $SY_PLAIN $SY_LOG; do wait_port "$port"; done
sleep 1.5

nginx_pids() { echo "$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"; }

declare -A RPS P99 CPU
to_ms() {
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}
run() { # name port pids...
  local name=$1 port=$2 out before after reqs hz
  shift 2
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d3s "http://127.0.0.1:$port/kv/x" >/dev/null 2>&1 || true
  before=$(cpu_of "$@")
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/kv/x")
  after=$(cpu_of "$@")
  if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx answers" >&2; echo "$out" >&2; fi
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  hz=$(getconf CLK_TCK)
  RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  P99[$name]=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
  CPU[$name]=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }')
}
run nginx-plain $NGINX_PLAIN $(nginx_pids)
run nginx-proxy_ssl $NGINX_TLS $(nginx_pids)
run switchyard-plain $SY_PLAIN "$SY_PID_plain"
run switchyard-tls $SY_TLS "$SY_PID_tls"
run switchyard-accesslog $SY_LOG "$SY_PID_log"

printf '\n%-22s %10s %9s %14s %12s\n' target "req/s" "p99 ms" "CPU µs/req" "CPU/nginx"
for t in nginx-plain nginx-proxy_ssl switchyard-plain switchyard-tls switchyard-accesslog; do
  ref=nginx-plain
  [[ $t == *tls* || $t == *ssl* ]] && ref=nginx-proxy_ssl
  printf '%-22s %10.0f %9.3f %14s %12.2f\n' "$t" "${RPS[$t]}" "${P99[$t]}" "${CPU[$t]}" \
    "$(awk -v a="${CPU[$t]}" -v b="${CPU[$ref]}" 'BEGIN{print a/b}')"
done
printf '\naccess log lines written: %s\n' "$(wc -l < "$WORK/access.log")"
curl -s "http://127.0.0.1:$SY_TLS/kv/x" -o /dev/null -w 'switchyard-tls answers %{http_code}\n'
