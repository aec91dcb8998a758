#!/usr/bin/env bash
# Idle connections, side by side in one run: memory per idle client
# connection and a fresh client's latency beside them, for nginx, a bare
# pingora proxy and Switchyard (one worker each), over plain HTTP/1.1, TLS
# with HTTP/1.1 and TLS with HTTP/2, at each count in COUNTS; half of the
# connections carry one request before going idle. See README.md.
# Servers listen on 127.0.0.1 only and stop when the script ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNTS=${COUNTS:-"1000 10000"}
MODES=${MODES:-"plain tls h2"}
LOAD_SECS=${LOAD_SECS:-4}
PROFILE=${PROFILE:-dist}
BASE=${BASE_PORT:-18380}
BACKEND=$BASE; NGINX=$((BASE+1)); NGINX_TLS=$((BASE+2)); BARE=$((BASE+3)); BARE_TLS=$((BASE+4))
SY=$((BASE+5)); SY_TLS=$((BASE+6))
source loadtests/peers/lib.sh
require_tools nginx openssl taskset
cargo build --profile "$PROFILE" -p switchyard-cli -p switchyard-bare-proxy -p switchyard-drills >&2
BIN=target/$PROFILE
ulimit -n "$(ulimit -Hn)"
make_test_ca edge

cat > "$WORK/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGINX; listen 127.0.0.1:$NGINX_TLS ssl http2;
    ssl_certificate $WORK/edge.pem; ssl_certificate_key $WORK/edge.key;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
switchyard_config $SY $BACKEND 1s "limits: { max_connections: 40000, keepalive_timeout: 600s }"
sed -i "s|^listen: .*|listen: { http: 127.0.0.1:$SY, https: { addr: 127.0.0.1:$SY_TLS, cert: $WORK/edge.pem, key: $WORK/edge.key } }|" \
  "$WORK/switchyard.yaml"

start_backend $BACKEND 1
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
NGINX_MASTER=$!
taskset -c 0 "$BIN/bare-proxy" 127.0.0.1:$BARE 127.0.0.1:$BACKEND 1 127.0.0.1:$BARE_TLS "$WORK/edge.pem" "$WORK/edge.key" \
  2>"$WORK/bare.err" & PIDS+=($!)
BARE_PID=$!
SWITCHYARD_THREADS=1 SWITCHYARD_LOG=warn taskset -c 0 "$BIN/switchyard" run --config "$WORK/switchyard.yaml" \
  >"$WORK/sy.out" 2>"$WORK/sy.err" & PIDS+=($!)
SY_PID=$!
for port in $BACKEND $NGINX $NGINX_TLS $BARE $BARE_TLS $SY $SY_TLS; do wait_port $port; done
sleep 1
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)

declare -A ROW
measure() { # target mode count port pid
  local out
  out=$(taskset -c 1 "$BIN/idle-conns" --addr "127.0.0.1:$4" --mode "$2" --count "$3" --pid "$5" \
    --ca "$WORK/ca.pem" --load-secs "$LOAD_SECS") || { echo "$1 $2 $3: the client failed" >&2; return 1; }
  ROW[$1,$2,$3]=$out
}
field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }

for n in $COUNTS; do
  for mode in $MODES; do
    if [[ $mode == plain ]]; then ports=($NGINX $BARE $SY); else ports=($NGINX_TLS $BARE_TLS $SY_TLS); fi
    measure nginx "$mode" "$n" "${ports[0]}" "$NGINX_WORKER"
    measure bare-pingora "$mode" "$n" "${ports[1]}" "$BARE_PID"
    measure switchyard "$mode" "$n" "${ports[2]}" "$SY_PID"
  done
done

printf '\n%-13s %-5s %6s %6s %10s %12s %12s %12s %10s %10s %12s\n' target mode conns alive "KiB/conn" \
  "fresh p99" "+idle p99" "+load p99" "load rps" "+idle rps" "rps ratio"
for n in $COUNTS; do
  for mode in $MODES; do
    for t in nginx bare-pingora switchyard; do
      r=${ROW[$t,$mode,$n]}
      printf '%-13s %-5s %6s %6s %10s %10s ms %10s ms %10s ms %10s %10s %12.2f\n' "$t" "$mode" "$n" \
        "$(field "$r" alive)" "$(field "$r" per_conn_kib)" "$(field "$r" fresh_p99_ms)" \
        "$(field "$r" idle_fresh_p99_ms)" "$(field "$r" idle_load_fresh_p99_ms)" \
        "$(field "$r" load_rps)" "$(field "$r" idle_load_rps)" \
        "$(awk -v a="$(field "$r" idle_load_rps)" -v b="$(field "$r" load_rps)" 'BEGIN{print a/b}')"
    done
  done
done
