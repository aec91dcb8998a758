#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable whatever
# else the machine is doing, so it measures what the routing costs on top of
# a bare pingora proxy without the noise of a requests/s figure.
#   instructions.sh            # N1=1000 N2=5000 by default
#   TARGETS=switchyard KEEP=/tmp/cg instructions.sh   # one target; keep the callgrind files
#   BIN_DIR=/tmp/old-bin instructions.sh               # binaries built elsewhere, not rebuilt
#   TARGETS="nginx switchyard" instructions.sh         # nginx's own count beside Switchyard's
#   FEATURES=1 TARGETS=switchyard instructions.sh      # Switchyard with its routing features on
#                                                       # (compare.sh's features-*), one request in four a write
#   FEATURES=1 WRITE_EVERY=0 TARGETS=switchyard instructions.sh  # the same, reads only
#   WRITE_EVERY=1 TARGETS=switchyard instructions.sh  # plain Switchyard, every request a (logged) POST
# Each proxy runs twice under callgrind (N1 then N2 requests over 4 kept-alive
# connections); (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown.
# One start-up cost would not cancel: the metrics exporter's clock calibrates
# itself on first use for a set time, not a set amount of work, and valgrind's
# pace varies (up to ~1,500 instructions per request either way over a
# 2,000-request difference). It runs inside a `once_cell` initialisation, like
# every other one-time set-up, so what those run is taken out of each count.
set -euo pipefail
cd "$(dirname "$0")/../.."
N1=${N1:-1000}; N2=${N2:-5000}
BASE=${BASE_PORT:-18480}
BACKEND=$BASE; PROXY=$((BASE+1))
command -v valgrind >/dev/null || { echo "missing valgrind" >&2; exit 2; }
source loadtests/peers/lib.sh
proxy_binaries
start_backend $BACKEND
# The op log under $WORK/state-*, emptied before each run (see count()).
switchyard_config $PROXY $BACKEND 1m "state_dir: $WORK/state-plain
${SY_EXTRA:-}"
SY_CONFIG=$WORK/switchyard.yaml; WRITES=${WRITE_EVERY:-0}
if [[ -n "${FEATURES:-}" ]]; then
  features_config $PROXY; SY_CONFIG=$WORK/features.yaml; WRITES=${WRITE_EVERY:-4}
fi

# nginx as compare.sh runs it, in one process (no master) so that callgrind
# counts the process that proxies.
nginx_proxy_config $PROXY $BACKEND one

count() { # target requests -> total instructions
  local out="$WORK/cg.$1.$2"
  # Each run starts with an empty op log: the second would otherwise count
  # recovering the first's records at start-up as per-request work.
  rm -rf "$WORK"/state*
  case "$1" in
    switchyard) SWITCHYARD_THREADS=1 SWITCHYARD_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" \
                  "$BIN/switchyard" run --config "$SY_CONFIG" >/dev/null 2>"$WORK/vg.err" & ;;
    bare) valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN/bare-proxy" 127.0.0.1:$PROXY 127.0.0.1:$BACKEND 1 >/dev/null 2>"$WORK/vg.err" & ;;
    nginx) valgrind --tool=callgrind --callgrind-out-file="$out" nginx -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>"$WORK/vg.err" & ;;
  esac
  local pid=$!
  for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$PROXY) 2>/dev/null && break; sleep 0.1; done # valgrind starts slowly
  python3 loadtests/peers/client.py 127.0.0.1 $PROXY "$2" 4 $WRITES
  if [[ $1 == nginx ]]; then kill -QUIT "$pid"; else kill -INT "$pid"; fi # nginx: graceful stop
  wait "$pid" 2>/dev/null || true
  [[ -n "${KEEP:-}" ]] && mkdir -p "$KEEP" && cp "$out" "$KEEP/"
  local total one_time
  total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$out")
  one_time=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$out" 2>/dev/null |
    awk '/:once_cell::imp::OnceCell<T>::initialize \[/ {gsub(",", "", $1); s += $1} END {print s + 0}')
  echo $((total - one_time))
}
printf '%-12s %14s\n' target "instr/request"
declare -A PER
for t in ${TARGETS:-bare switchyard}; do
  a=$(count "$t" "$N1"); b=$(count "$t" "$N2")
  PER[$t]=$(( (b - a) / (N2 - N1) ))
  printf '%-12s %14d\n' "$t" "${PER[$t]}"
done
if [[ -n "${PER[bare]:-}" && -n "${PER[switchyard]:-}" ]]; then
  printf 'switchyard / bare: %.3f\n' "$(awk -v a="${PER[switchyard]}" -v b="${PER[bare]}" 'BEGIN{print a/b}')"
fi
if [[ -n "${PER[nginx]:-}" && -n "${PER[switchyard]:-}" ]]; then
  printf 'switchyard / nginx: %.3f\n' "$(awk -v a="${PER[switchyard]}" -v b="${PER[nginx]}" 'BEGIN{print a/b}')"
fi
