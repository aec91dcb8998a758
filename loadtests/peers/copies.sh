#!/usr/bin/env bash
# Bytes copied per proxied request by large memcpy/memmove calls, by the
# source line that asked for them: where futures and sessions are moved
# whole. gdb stops Switchyard (or the bare proxy) at every copy over MIN
# bytes while N requests go through one kept-alive connection, and records
# the size and the first frame in our code or the vendored pingora.
#   copies.sh                       # switchyard, N=10 MIN=256, release build
#   PROFILE=dist TARGET=bare copies.sh
#   WRITE_EVERY=1 BIN_DIR=target/dist copies.sh   # every request a small POST (a logged write)
# Copies a background task makes (a judge's snapshot every tick) land in the
# window too: a line that is not on the request path shows as a fraction per
# request; only lines seen at least once per two requests are listed.
# Under gdb a request takes milliseconds, so the figures are counts, not time.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${TARGET:-switchyard}
N=${N:-10}; MIN=${MIN:-256}
BASE=${BASE_PORT:-18780}
BACKEND=$BASE; PROXY=$((BASE+1))
source loadtests/peers/lib.sh
require_tools gdb nginx python3
proxy_binaries
start_backend $BACKEND
switchyard_config $PROXY $BACKEND 1m
case "$TARGET" in
  switchyard) SWITCHYARD_THREADS=1 SWITCHYARD_LOG=error "$BIN/switchyard" run --config "$WORK/switchyard.yaml" >/dev/null 2>&1 & ;;
  bare) "$BIN/bare-proxy" 127.0.0.1:$PROXY 127.0.0.1:$BACKEND 1 >/dev/null 2>&1 & ;;
  *) echo "usage: TARGET=switchyard|bare copies.sh" >&2; exit 2 ;;
esac
PID=$!; PIDS+=($PID)
wait_port $PROXY
python3 loadtests/peers/client.py 127.0.0.1 $PROXY 50 1 0 # warm: pools, first-use set-up

# memcpy is an indirect function: gdb stops at the copy routine glibc chose
# for this CPU, which memmove shares.
cat > "$WORK/gdb.cmd" <<GDB
set pagination off
set print frame-arguments none
break memcpy
condition 1 \$rdx > $MIN
commands 1
silent
printf "SIZE %d\\n", \$rdx
bt 30
continue
end
continue
GDB
timeout 120 gdb -q -p "$PID" -x "$WORK/gdb.cmd" -batch > "$WORK/gdb.out" 2>&1 &
GDB_PID=$!
# Ready once the breakpoint is set and gdb has let the process run again.
for _ in $(seq 300); do
  grep -q "^Breakpoint 1 at" "$WORK/gdb.out" 2>/dev/null &&
    ! grep -q "tracing stop" "/proc/$PID/status" && break
  sleep 0.1
done
python3 loadtests/peers/client.py 127.0.0.1 $PROXY "$N" 1 "${WRITE_EVERY:-0}"
kill -INT "$GDB_PID" 2>/dev/null || true
wait "$GDB_PID" 2>/dev/null || true

python3 - "$WORK/gdb.out" "$N" "$PWD/" <<'PY'
import collections, os, re, sys
blocks = open(sys.argv[1], errors="replace").read().split("SIZE ")[1:]
n = int(sys.argv[2])
root = re.escape(sys.argv[3])
seen = collections.Counter()
for b in blocks:
    size = int(b.split("\n", 1)[0])
    # Workspace crates are built with relative paths, the rest absolute; the
    # allocator's frames (a realloc's copy) are skipped for their caller.
    ours = [f for f in re.findall(r" at (?:" + root + r")?([^/\s]\S*:\d+)", b)
            if os.path.isfile(f.rsplit(":", 1)[0])
            and not f.startswith(("alloc/", "cli/src/main.rs"))]
    seen[(size, ours[0] if ours else "(outside the workspace)")] += 1
rows = [(size * c / n, c / n, size, line) for (size, line), c in seen.items() if c / n >= 0.5]
rows.sort(reverse=True)
print(f"{'bytes/req':>10} {'copies/req':>10} {'size':>6}  first line in the workspace")
for total, per, size, line in rows:
    print(f"{total:10.0f} {per:10.1f} {size:6d}  {line}")
print(f"{sum(r[0] for r in rows):10.0f}  in all, per request")
PY
