#!/usr/bin/env bash
# Reproducible benchmark of a maple farm against the reference echo server.
#
# Builds ./cmd/maple, starts a throwaway redis-server, one `maple gateway`,
# one `maple worker` and one `maple refserver`, then runs `maple bench --json`
# against the farm and the reference in turn (farm, ref, farm, ref, ...) for
# every scenario and round. Prints one table (medians of the rounds) and
# writes it, the raw JSON results and chart.svg to $OUT. Needs only Go and
# redis-server (no python, no jq, no redis-cli).
#
# Environment (defaults in brackets):
#   ROUNDS    rounds of every scenario [3]
#   CONNS     connection counts [1 16 64 256]; a 1 conn x depth 1 latency row is added
#   DEPTH     requests in flight per connection [8]
#   DURATION  measured window of each run [10s]
#   WARMUP    warmup before each window [1s]
#   SIZE      request body bytes [64]
#   OUT       output directory [./bench-out]
#   REDIS_SERVER  redis-server binary [redis-server]
#   MAPLE     a maple binary to run instead of this tree's (to compare builds)
#
#   ROUNDS=1 CONNS="1 64" DURATION=5s scripts/bench.sh
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-1 16 64 256}
DEPTH=${DEPTH:-8}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
SIZE=${SIZE:-64}
OUT=${OUT:-./bench-out}
REDIS_SERVER=${REDIS_SERVER:-redis-server}

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/maple-bench.XXXXXX")
pids=()

# cleanup stops the maple processes first, so they drain into a live Redis,
# then Redis.
cleanup() {
  if [ ${#pids[@]} -gt 1 ]; then stop "${pids[@]:1}"; fi
  if [ ${#pids[@]} -gt 0 ]; then stop "${pids[0]}"; fi
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench.sh: $*" >&2; }
. "$(cd "$(dirname "$0")" && pwd)/lib.sh" # stop, port_open, free_port, wait_for

log "building maple"
(cd "$root" && go build -o "$tmp/maple" ./cmd/maple && go build -o "$tmp/benchchart" ./scripts/benchchart)
maple=$tmp/maple
if [ -n "${MAPLE:-}" ]; then
  maple=$MAPLE # a build to compare (its farm; the reference and bench too)
  log "using $maple"
fi

rm -f "$OUT"/farm-*.json "$OUT"/ref-*.json "$OUT"/table.txt "$OUT"/chart.svg

redis_port=$(free_port)
mkdir -p "$tmp/redis"
"$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$tmp/redis" >"$OUT/redis.log" 2>&1 &
pids+=($!)
wait_for redis "${pids[-1]}" port_open "$redis_port"
redis_url="redis://127.0.0.1:$redis_port/0"

gw_port=$(free_port)
"$maple" gateway --redis "$redis_url" --listen "127.0.0.1:$gw_port" >"$OUT/gateway.log" 2>&1 &
pids+=($!)
gw_pid=$!
"$maple" worker --redis "$redis_url" --concurrency 64 >"$OUT/worker.log" 2>&1 &
pids+=($!)
worker_pid=$!
ref_port=$(free_port)
"$maple" refserver --listen "127.0.0.1:$ref_port" >"$OUT/refserver.log" 2>&1 &
pids+=($!)
ref_pid=$!

# A real echo through the farm proves gateway, Redis and worker all work.
wait_for gateway "$gw_pid" "$maple" client --addr "127.0.0.1:$gw_port" --cmd 1 --body ready --timeout 1s
kill -0 "$worker_pid"
wait_for refserver "$ref_pid" "$maple" client --addr "127.0.0.1:$ref_port" --cmd 1 --body ready --timeout 1s
log "farm on 127.0.0.1:$gw_port (redis $redis_port), reference on 127.0.0.1:$ref_port"

scenarios=("1 1")
for c in $CONNS; do scenarios+=("$c $DEPTH"); done

failed=0
for round in $(seq "$ROUNDS"); do
  for sc in "${scenarios[@]}"; do
    read -r conns depth <<<"$sc"
    for target in farm ref; do
      port=$gw_port
      [ "$target" = ref ] && port=$ref_port
      file="$OUT/$target-c$conns-d$depth-r$round.json"
      log "round $round/$ROUNDS: $target, $conns conns x depth $depth"
      if ! "$maple" bench --json --addr "127.0.0.1:$port" --conns "$conns" --depth "$depth" \
        --duration "$DURATION" --warmup "$WARMUP" --size "$SIZE" >"$file" 2>>"$OUT/bench.log"; then
        log "  $target run had failures (see $file and $OUT/bench.log)"
        failed=1
      fi
      if [ ! -s "$file" ]; then
        log "  no result from $target; see $OUT/bench.log"
        rm -f "$file"
      fi
    done
  done
done

"$tmp/benchchart" -in "$OUT" -svg "$OUT/chart.svg" | tee "$OUT/table.txt"
log "results, table and chart.svg in $OUT"
if [ "$failed" != 0 ]; then
  log "some runs reported mismatches, lost or failed replies, or broken connections"
  exit 1
fi
