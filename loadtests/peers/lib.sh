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

# require_tools TOOL...: exits 2, naming the Debian packages to install,
# when one of the tools a drill runs is missing.
require_tools() {
  local tool packages
  packages=$(printf '%s\n' "$@" | sed 's/^taskset$/util-linux/' | tr '\n' ' ')
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y ${packages% }" >&2; exit 2; }
  done
}

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

# proxy_binaries: BIN, where switchyard and bare-proxy are: BIN_DIR as given
# (an older build's, counted as they are), else target/$PROFILE, built now.
proxy_binaries() {
  if [[ -n "${BIN_DIR:-}" ]]; then
    BIN=$BIN_DIR
  else
    BIN=target/${PROFILE:-release}
    cargo build --profile "${PROFILE:-release}" -p switchyard-cli -p switchyard-bare-proxy >&2
  fi
}

# nginx_proxy_config PORT BACKEND [WORKERS | one]: $WORK/nginx.conf, nginx
# proxying PORT to BACKEND over kept-alive upstream connections, the peer
# every drill here compares with; WORKERS worker processes (1), or "one"
# process with no master (what callgrind and strace count).
nginx_proxy_config() {
  local processes="worker_processes ${3:-1};"
  [[ ${3:-} == one ]] && processes="master_process off;"
  cat > "$WORK/nginx.conf" <<NGX
$processes daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$2; keepalive 64; }
  server { listen 127.0.0.1:$1; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
}

# wait_port PORT: until something listens there (10 s at most).
wait_port() {
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; return 1
}

# make_test_ca NAME: a CA for the run ($WORK/ca.pem) and a certificate for
# 127.0.0.1 signed by it ($WORK/NAME.pem, $WORK/NAME.key), ECDSA P-256.
make_test_ca() {
  [[ -f "$WORK/ca.pem" ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=drill CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$WORK/$1.key" -out "$WORK/$1.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > "$WORK/san.ext"
  openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/san.ext" -out "$WORK/$1.pem" 2>/dev/null
}

# cpu_split_of PID...: "USER SYSTEM", the processes' CPU time in clock ticks.
cpu_split_of() {
  local user=0 sys=0 u s
  for p in "$@"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo 0 0)
    user=$((user + u)); sys=$((sys + s))
  done
  echo "$user $sys"
}

# per_request TICKS REQUESTS [DECIMALS]: CPU time in µs per request (2 decimals).
per_request() {
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" -v d="${3:-2}" 'BEGIN { printf "%." d "f", t / hz / n * 1e6 }'
}

# wrk_cpu_round TARGET ROUND PORT CLIENT_CPUS THREADS [LUA]: a 2 s warm-up,
# then DURATION of `wrk -cCONNECTIONS` on CLIENT_CPUS against PORT, measuring
# the processes in PID[TARGET]; fills CPU, USER, SYS (µs per request) and RPS
# at [TARGET,ROUND], associative arrays the caller declares.
wrk_cpu_round() {
  local t=$1 r=$2 port=$3 cpus=$4 threads=$5 script=() u0 s0 u1 s1 out n
  [[ -n "${6:-}" ]] && script=(-s "$6")
  taskset -c "$cpus" wrk -t"$threads" -c"$CONNECTIONS" -d2s "${script[@]}" "http://127.0.0.1:$port/kv/x" >/dev/null 2>&1 || true
  # shellcheck disable=SC2086 # PID lists are space-separated on purpose
  read -r u0 s0 < <(cpu_split_of ${PID[$t]})
  out=$(taskset -c "$cpus" wrk -t"$threads" -c"$CONNECTIONS" -d"$DURATION" "${script[@]}" "http://127.0.0.1:$port/kv/x")
  # shellcheck disable=SC2086
  read -r u1 s1 < <(cpu_split_of ${PID[$t]})
  if grep -q "Non-2xx" <<<"$out"; then echo "$t: non-2xx answers" >&2; fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  CPU[$t,$r]=$(per_request $((u1 - u0 + s1 - s0)) "$n")
  USER[$t,$r]=$(per_request $((u1 - u0)) "$n")
  SYS[$t,$r]=$(per_request $((s1 - s0)) "$n")
  RPS[$t,$r]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
}

# median: the median of the numbers on standard input (space-separated).
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# run_rounds TARGET...: ROUNDS rounds; in each, the caller's `measure TARGET
# ROUND` for every target in turn, so that a machine that gets busier halfway
# moves every target alike.
run_rounds() {
  local r t
  for r in $(seq "$ROUNDS"); do
    for t in "$@"; do measure "$t" "$r"; done
  done
}

# round_medians TARGET: "REQ/S CPU RATIO USER SYSTEM", the medians over
# ROUNDS of what wrk_cpu_round filled in; RATIO is to nginx's CPU per request
# in the same round.
round_medians() {
  local t=$1 r rps=() cpu=() user=() sys=() ratio=()
  for r in $(seq "$ROUNDS"); do
    rps+=("${RPS[$t,$r]}"); cpu+=("${CPU[$t,$r]}"); user+=("${USER[$t,$r]}"); sys+=("${SYS[$t,$r]}")
    ratio+=("$(awk -v a="${CPU[$t,$r]}" -v b="${CPU[nginx,$r]}" 'BEGIN { printf "%.3f", a / b }')")
  done
  echo "$(echo "${rps[*]}" | median) $(echo "${cpu[*]}" | median) $(echo "${ratio[*]}" | median)" \
    "$(echo "${user[*]}" | median) $(echo "${sys[*]}" | median)"
}

# round_median_gap TARGET BASE: the median over ROUNDS of TARGET's CPU per
# request less BASE's in the same round.
round_median_gap() {
  local r gaps=()
  for r in $(seq "$ROUNDS"); do
    gaps+=("$(awk -v a="${CPU[$1,$r]}" -v b="${CPU[$2,$r]}" 'BEGIN { printf "%.2f", a - b }')")
  done
  echo "${gaps[*]}" | median
}

# cpu_of PID...: CPU time (user + system, in clock ticks) of the processes.
cpu_of() {
  local u s
  read -r u s < <(cpu_split_of "$@")
  echo $((u + s))
}

# The routing features on: two regions by geo (the client's network named
# by CIDR), residency, a dial at 50% on the second, rate limits that never
# refuse, and one request in four a write pinned to its owner and logged
# (op log fsync: batch, idempotency keys generated).
features_config() { # port
  cat > "$WORK/features.yaml" <<SY
listen: { http: 127.0.0.1:$1 }
shutdown_grace: 1s
state_dir: $WORK/state-features
regions:
  a:
    type: full
    endpoints: ["127.0.0.1:$BACKEND"]
    location: { continent: NA, country: US }
    services: [api]
    compliance: { data_residency: US }
    health: { path: /health, interval: 1s }
    rate_limit: { rps: 10000000, burst: 1000000 }
  b:
    type: full
    endpoints: ["127.0.0.1:$BACKEND"]
    location: { continent: NA, country: US }
    services: [api]
    compliance: { data_residency: US }
    health: { path: /health, interval: 1s }
    rate_limit: { rps: 10000000, burst: 1000000 }
    dial: 50
routing:
  policy: geo
  geo:
    networks: { "127.0.0.0/8": US }
    prefer: { US: [b, a], default: [a, b] }
  residency: { US: US }
consistency:
  owners: { default: a }
  idempotency: generate
oplog: { fsync: batch }
SY
  cat > "$WORK/mixed.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  if n % 4 == 0 then return wrk.format("POST", "/kv/x", { ["Content-Type"] = "application/json" }, '{"v":1}') end
  return wrk.format("GET", "/kv/x")
end
LUA
}
