#!/bin/bash
# The bench's side-by-side run (../shared/bench/side-by-side.sh: threadctl, the
# PostgreSQL peer, raw bbolt Update and Batch, the same signed pass/take
# webhooks over 5 000 threads) with one more column: walfloor, the HTTP + one
# log append floor (see main.go), under the same load generator in the same
# run. Run from the repository's root:
#   [SLICES=n] store/wal/walfloor/side-by-side.sh [seconds per run] [callers...]
# With SLICES=n each measurement is n runs of seconds/n, the modes taking
# turns, so that the disk's drift (its fdatasync latency moves by 2x within
# a minute on a shared VM) falls on all of them alike; rates are totals.
# Loopback only; it stops by itself. Compare ratios, not rates: disks drift.
set -u
bench=${BENCH:-$(cd "$(dirname "$0")/../../../../shared/bench" 2>/dev/null && pwd)}
[ -d "$bench/loadgen" ] || { echo "the bench is not at $bench (set BENCH)"; exit 1; }
secs=${1:-5}; shift || true
callers=${*:-1 64 256}
slices=${SLICES:-1}
slice=$(python3 -c "print(round($secs/$slices, 3))")
t=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -- -$p 2>/dev/null; done; rm -rf "$t"' EXIT
sh "$bench/pgpeer/setup.sh" >/dev/null || { echo "PostgreSQL setup failed"; exit 1; }
(cd "$bench/pgpeer" && go build -o "$t/pgpeer" .) || exit 1
(cd "$bench/loadgen" && go build -o "$t/loadgen" .) || exit 1
go build -o "$t/threadctl" . && go build -o "$t/walfloor" ./store/wal/walfloor || exit 1
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port=$(free); sp=$(free); fp=$(free)
setsid "$t/threadctl" serve --addr 127.0.0.1:$port --data-dir "$t/data" --sim-addr 127.0.0.1:$sp \
  --demo-primary ringcx >"$t/log" 2>&1 &
pids+=($!)
setsid "$t/walfloor" -addr 127.0.0.1:$fp >"$t/floorlog" 2>&1 &
pids+=($!)
for u in $port $fp; do
  for i in $(seq 100); do curl -sf -o /dev/null 127.0.0.1:$u/healthz && break; sleep 0.2; done
  curl -sf -o /dev/null 127.0.0.1:$u/healthz || { tail -5 "$t/log" "$t/floorlog"; echo "a server did not start"; exit 1; }
done
: >"$t/out"
for c in $callers; do
  fresh=true
  for i in $(seq "$slices"); do
    "$t/pgpeer" -c "$c" -d "${slice}s" -threads 5000 -fresh=$fresh | tee -a "$t/out"; fresh=false
    "$t/loadgen" -mode webhook -url http://127.0.0.1:$port -c "$c" -d "${slice}s" -threads 5000 | tee -a "$t/out"
    "$t/loadgen" -mode webhook -url http://127.0.0.1:$fp -c "$c" -d "${slice}s" -threads 5000 | sed 's/mode=webhook/mode=walfloor/' | tee -a "$t/out"
    if [ "$c" = 1 ]; then "$t/loadgen" -mode update -c 1 -d "${slice}s" | tee -a "$t/out"; fi
    "$t/loadgen" -mode floor -c "$c" -d "${slice}s" | tee -a "$t/out"
  done
done
python3 - "$t/out" <<'PY'
import re, sys
ok, n = {}, {}
for line in open(sys.argv[1]):
    m = re.search(r"mode=(\w+) c=(\d+) ok=(\d+) errors=\d+ rate=(\d+)", line)
    if m:
        k = (m[1], int(m[2]))
        ok[k] = ok.get(k, 0) + int(m[3])
        n[k] = n.get(k, 0) + int(m[3]) / max(int(m[4]), 1)  # the run's seconds
r = {k: round(ok[k] / n[k]) if n[k] else 0 for k in ok}
print("\ncallers  threadctl/s  walfloor/s  vs PostgreSQL  vs Update  vs Batch  vs walfloor  walfloor vs Update  walfloor vs Batch")
for c in sorted({k[1] for k in r}):
    w, fl = r.get(("webhook", c), 0), r.get(("walfloor", c), 0)
    f = lambda x, k: "%.2fx" % (x / r[k]) if r.get(k) else "-"
    print("%7d  %11d  %10d  %13s  %9s  %8s  %11s  %18s  %17s" % (c, w, fl, f(w, ("pg", c)), f(w, ("update", c)),
          f(w, ("floor", c)), f(w, ("walfloor", c)), f(fl, ("update", c)), f(fl, ("floor", c))))
PY
