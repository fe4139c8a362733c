#!/usr/bin/env bash
# scripts/lat.sh BIN... : 1 conn x 1 in flight latency of each maple binary, farms in turn.
# For each round and each BIN: a fresh redis-server, `BIN gateway`, `BIN worker`,
# then RUNS runs of `BIN bench --conns 1 --depth 1 --duration DUR`; plus (REF=1) the
# same against `BIN refserver` of the first binary as a machine-noise control.
# NICE=-15 runs every process of the test at that niceness (both builds alike).
# Env: DUR [5s] RUNS [1] ROUNDS [1] REF [1] FLOOR [1] (scripts/hopfloor on the same redis after each farm; HOPFLOOR=binary) EXTRA_GW (extra gateway flags)
# Prints: label round run p50 p99 p99.9 max replies/s rewakes
set -uo pipefail
N=""; [ -n "${NICE:-}" ] && N="nice -n $NICE"
DUR=${DUR:-5s}; RUNS=${RUNS:-1}; ROUNDS=${ROUNDS:-1}; REF=${REF:-1}
tmp=$(mktemp -d /tmp/lat.XXXXXX)
HOPFLOOR=${HOPFLOOR:-$tmp/hopfloor}
[ -x "$HOPFLOOR" ] || (cd "$(dirname "$0")/.." && go build -o "$HOPFLOOR" ./scripts/hopfloor)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 12000)); }
row() { # label round run json
  python3 - "$@" <<'PY'
import json,sys
l,r,n,f=sys.argv[1:5]
d=json.load(open(f))
ms=lambda k: d[k]/1e6
print(f"{l:>14} r{r} #{n}  p50 {ms('p50_ns'):.3f}  p99 {ms('p99_ns'):.3f}  p99.9 {ms('p999_ns'):.3f}  max {ms('max_ns'):7.2f} ms  {d['replies_per_sec']:8.0f}/s  lost {d['unanswered']} dup {d['duplicates']} mis {d['mismatches']}")
PY
}
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    label=$(basename "$bin")
    rp=$(port); gp=$(port); mp=$(port)
    mkdir -p "$tmp/r"; $N redis-server --port $rp --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/r" >/dev/null 2>&1 & pids+=($!)
    sleep 0.3
    $N "$bin" gateway --redis redis://127.0.0.1:$rp/0 --listen 127.0.0.1:$gp --metrics-addr 127.0.0.1:$mp ${EXTRA_GW:-} >"$tmp/gw.log" 2>&1 & gw=$!; pids+=($gw)
    $N "$bin" worker --redis redis://127.0.0.1:$rp/0 --concurrency 64 >"$tmp/w.log" 2>&1 & wk=$!; pids+=($wk)
    for _ in $(seq 100); do "$bin" client --addr 127.0.0.1:$gp --cmd 1 --body x --timeout 1s >/dev/null 2>&1 && break; sleep 0.1; done
    for run in $(seq "$RUNS"); do
      $N "$bin" bench --json --addr 127.0.0.1:$gp --conns 1 --depth 1 --duration "$DUR" --warmup 1s >"$tmp/o.json" 2>/dev/null
      rw=$(curl -s 127.0.0.1:$mp/metrics 2>/dev/null | grep -E '^maple_gateway_(rewakes|wakes)_total' | awk '{print $2}')
      echo "$(row "$label" "$round" "$run" "$tmp/o.json")  (re)wakes ${rw:-?}"
    done
    kill -TERM $gw $wk; wait $gw $wk 2>/dev/null
    if [ "${FLOOR:-1}" = 1 ]; then echo "         floor r$round  $($N "$HOPFLOOR" --redis 127.0.0.1:$rp --duration ${DUR})"; fi
    kill -TERM ${pids[-3]}; wait ${pids[-3]} 2>/dev/null
  done
  if [ "$REF" = 1 ]; then
    fp=$(port); $N "$1" refserver --listen 127.0.0.1:$fp >/dev/null 2>&1 & rf=$!; pids+=($rf); sleep 0.3
    for run in $(seq "$RUNS"); do
      $N "$1" bench --json --addr 127.0.0.1:$fp --conns 1 --depth 1 --duration "$DUR" --warmup 1s >"$tmp/o.json" 2>/dev/null
      row ref "$round" "$run" "$tmp/o.json"
    done
    kill -TERM $rf; wait $rf 2>/dev/null
  fi
done
