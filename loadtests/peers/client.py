#!/usr/bin/env python3
"""Sends exactly N requests over C kept-alive connections (round robin),
and fails if any answer is not 2xx. Used where a fixed count matters more
than speed (instruction counts under callgrind).
  client.py HOST PORT N [C] [WRITE_EVERY]
GETs, or with WRITE_EVERY=k every k-th request a small JSON POST (a write)."""
import http.client
import sys

host, port, n, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 4
write_every = int(sys.argv[5]) if len(sys.argv) > 5 else 0
pool = [http.client.HTTPConnection(host, port, timeout=60) for _ in range(conns)]
bad = 0
for i in range(n):
    c = pool[i % conns]
    if write_every and (i + 1) % write_every == 0:
        c.request("POST", "/kv/x", body=b'{"v":1}', headers={"Content-Type": "application/json"})
    else:
        c.request("GET", "/kv/x", headers={"X-Partition": f"k{i}"})
    r = c.getresponse()
    r.read()
    if not 200 <= r.status < 300:
        bad += 1
for c in pool:
    c.close()
if bad:
    print(f"{bad} of {n} answers were not 2xx", file=sys.stderr)
    sys.exit(1)
