#!/usr/bin/env bash
# scripts/allocs.sh BIN... : what the gateway and the worker allocate per reply, each
# build in turn, at 1 conn x 1 in flight and at 64 x 8: heap bytes and objects per
# reply, and garbage collections per 10,000 replies, from each process's Go metrics
# (go_memstats_alloc_bytes_total, go_memstats_mallocs_total, go_gc_duration_seconds_count)
# over a window of the load. Unlike replies/s these counts hardly depend on how busy
# the machine is, so two builds compare in one run even on a noisy host (at 1 x 1 the
# background rounds of an idle farm, about 150 KB/s in the worker, are in the figures).
# Each run: a fresh redis-server, `BIN gateway`, `BIN worker --concurrency 64`, `BIN bench`.
# Env: LOADS ["1x1 64x8"] WINDOW [4] (seconds measured, after 2 s of load)
set -uo pipefail
cd "$(dirname "$0")/.."
log() { echo "allocs.sh: $*" >&2; }
. scripts/lib.sh
LOADS=${LOADS:-1x1 64x8}; WINDOW=${WINDOW:-4}
tmp=$(mktemp -d /tmp/allocs.XXXXXX); pids=(); OUT=$tmp
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
# metrics PORT: the counters of one process, space separated, in a fixed order
metrics() {
  curl -s "127.0.0.1:$1/metrics" | awk '
    /^go_gc_duration_seconds_count /{g=$2} /^go_memstats_alloc_bytes_total /{b=$2}
    /^go_memstats_mallocs_total /{m=$2} /^maple_gateway_frames_out_total /{r=$2}
    END{printf "%s %s %s %s\n", g+0, b+0, m+0, r+0}'
}
for load in $LOADS; do
  conns=${load%x*}; depth=${load#*x}
  for bin in "$@"; do
    rp=$(free_port); gp=$(free_port); mg=$(free_port); mw=$(free_port)
    mkdir -p "$tmp/r"
    redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/r" >/dev/null 2>&1 & rs=$!; pids+=($rs)
    wait_for redis "$rs" port_open "$rp" || exit 1
    "$bin" gateway --redis "redis://127.0.0.1:$rp/0" --listen "127.0.0.1:$gp" --metrics-addr "127.0.0.1:$mg" >"$tmp/gw.log" 2>&1 & gw=$!; pids+=($gw)
    "$bin" worker --redis "redis://127.0.0.1:$rp/0" --concurrency 64 --metrics-addr "127.0.0.1:$mw" >"$tmp/w.log" 2>&1 & wk=$!; pids+=($wk)
    for _ in $(seq 100); do "$bin" client --addr "127.0.0.1:$gp" --cmd 1 --body x --timeout 1s >/dev/null 2>&1 && break; sleep 0.1; done
    "$bin" bench --addr "127.0.0.1:$gp" --conns "$conns" --depth "$depth" --duration "$((WINDOW + 3))s" --warmup 1s >"$tmp/bench.out" 2>&1 & bp=$!; pids+=($bp)
    sleep 2
    g0=$(metrics "$mg"); w0=$(metrics "$mw")
    sleep "$WINDOW"
    g1=$(metrics "$mg"); w1=$(metrics "$mw")
    wait "$bp"
    python3 - "$(basename "$bin")" "$load" "$WINDOW" "$g0" "$g1" "$w0" "$w1" <<'PY'
import sys
label, load, window, g0, g1, w0, w1 = sys.argv[1:]
d = lambda a, b: [float(y) - float(x) for x, y in zip(a.split(), b.split())]
g, w = d(g0, g1), d(w0, w1)
r = g[3]  # replies the gateway wrote in the window
if r <= 0:
    sys.exit(f"{label} {load}: no replies in the window")
print(f"{label:>14} {load:>5}: {r / float(window):8.0f} replies/s | gateway {g[1] / r:6.0f} B {g[2] / r:6.1f} objects {1e4 * g[0] / r:5.2f} GC/10k"
      f" | worker {w[1] / r:6.0f} B {w[2] / r:6.1f} objects {1e4 * w[0] / r:5.2f} GC/10k")
PY
    stop "$gw" "$wk"; stop "$rs"
  done
done
