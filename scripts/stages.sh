#!/usr/bin/env bash
# scripts/stages.sh [BIN] : where a 1 conn x 1 in flight round trip spends its time, step by
# step, across the processes (docs/benchmarks.md, "Hand-offs by yield").
# Runs a fresh redis-server, `BIN gateway`, `BIN worker` and `BIN bench --conns 1 --depth 1`
# with MAPLE_STAGES set (internal/stages: each process writes when a request reaches each
# of its steps), merges the files by time and prints, per step, the median, p90 and p99 of
# the time since the step before, over the requests after the first tenth.
# BIN defaults to a build of this tree. Env: DUR [5s] RUNS [1]
#   bench.send -> gw.cut     the client's write read and cut by the gateway's event loop
#   gw.cut     -> gw.push    the pusher starts its pipeline (XADD, INCRBY)
#   gw.push    -> wk.read    Redis, and the worker's XREADGROUP returning
#   wk.read    -> wk.run     a runner starts the handler
#   wk.run     -> wk.commit  the handler, and the outbox gathering its results
#   wk.commit  -> gw.take    the worker's pipeline, Redis, and the gateway's take returning
#   gw.take    -> bench.recv the reply written to the client, and read
# (No step is marked right after a socket write: the write wakes the reader, which may run
# and mark its own step before the writer marks its.)
set -uo pipefail
cd "$(dirname "$0")/.."
log() { echo "stages.sh: $*" >&2; }
. scripts/lib.sh
DUR=${DUR:-5s}; RUNS=${RUNS:-1}
tmp=$(mktemp -d /tmp/stages.XXXXXX); pids=(); OUT=$tmp
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
BIN=${1:-}
if [ -z "$BIN" ]; then BIN=$tmp/maple; go build -o "$BIN" ./cmd/maple || exit 1; fi
for run in $(seq "$RUNS"); do
  rp=$(free_port); gp=$(free_port)
  mkdir -p "$tmp/r$run"
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/r$run" >"$tmp/redis.log" 2>&1 & rs=$!; pids+=($rs)
  wait_for redis "$rs" port_open "$rp" || exit 1
  export MAPLE_STAGES=$tmp/s$run
  "$BIN" gateway --redis "redis://127.0.0.1:$rp/0" --listen "127.0.0.1:$gp" >"$tmp/gw.log" 2>&1 & gw=$!; pids+=($gw)
  "$BIN" worker --redis "redis://127.0.0.1:$rp/0" --concurrency 64 >"$tmp/w.log" 2>&1 & wk=$!; pids+=($wk)
  for _ in $(seq 100); do MAPLE_STAGES= "$BIN" client --addr "127.0.0.1:$gp" --cmd 1 --body x --timeout 1s >/dev/null 2>&1 && break; sleep 0.1; done
  "$BIN" bench --addr "127.0.0.1:$gp" --conns 1 --depth 1 --duration "$DUR" --warmup 1s >"$tmp/bench.out" 2>&1
  unset MAPLE_STAGES
  sleep 1 # the last half second's marks
  stop "$gw" "$wk"; stop "$rs"
  echo "run $run: $(grep -E 'latency' "$tmp/bench.out" | tr -s ' ')"
  cat "$tmp"/s$run.* | sort -n | python3 -c '
import sys
order = ["bench.send", "gw.cut", "gw.push", "wk.read", "wk.run", "wk.commit", "gw.take", "bench.recv"]
reqs, cur = [], None
for line in sys.stdin:
    at, step = line.split()
    at = int(at)
    if step == "bench.send":
        cur = {step: at}
    elif cur is not None:
        cur.setdefault(step, at)
        if step == "bench.recv":
            reqs.append(cur)
            cur = None
reqs = reqs[len(reqs) // 10:]
if not reqs:
    sys.exit("no request went through every step")
def q(v, p):
    return v[min(len(v) - 1, int(p * len(v)))] / 1e3
tot = sorted(r["bench.recv"] - r["bench.send"] for r in reqs)
print(f"  {len(reqs)} requests, round trip p50 {q(tot, .5):.1f} us, p90 {q(tot, .9):.1f} us")
for a, b in zip(order, order[1:]):
    d = sorted(r[b] - r[a] for r in reqs if a in r and b in r)
    if d:
        print(f"  {a:>10} -> {b:<10}  p50 {q(d, .5):7.1f} us  p90 {q(d, .9):7.1f}  p99 {q(d, .99):7.1f}  ({len(d)} requests)")
'
done
