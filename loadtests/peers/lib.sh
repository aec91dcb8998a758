# Shared by the drills in this folder: sourced, not run.
# Every server started here listens on 127.0.0.1 and stops when the script exits.

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "${KEEP:-}" ]]; then cp "$WORK"/cg.* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_backend PORT [CPU]: nginx, one worker, a fixed 16-byte JSON answer.
start_backend() {
  cat > "$WORK/backend.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/backend.pid; error_log $WORK/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$1; location / { default_type application/json; return 200 '{"region":"a"}\n'; } } }
NGX
  if [[ -n "${2:-}" ]]; then taskset -c "$2" nginx -c "$WORK/backend.conf" -p "$WORK" & else nginx -c "$WORK/backend.conf" -p "$WORK" & fi
  PIDS+=($!)
}

# switchyard_config PORT BACKEND INTERVAL [EXTRA]: one region in front of the
# backend, health checked every INTERVAL.
switchyard_config() {
  cat > "$WORK/switchyard.yaml" <<SY
listen: { http: 127.0.0.1:$1 }
shutdown_grace: 1s
regions:
  a: { type: full, endpoints: ["127.0.0.1:$2"], services: [api], health: { path: /health, interval: $3 } }
routing: { policy: weighted }
${4:-}
SY
}

# wait_port PORT: until something listens there (10 s at most).
wait_port() {
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; return 1
}
