#!/usr/bin/env bash
# Chaos run: a real farm under load while workers are killed and restarted.
#
# Builds ./cmd/maple, starts a throwaway redis-server, one gateway and
# WORKERS workers, drives the gateway with `maple bench` (echo, every reply
# checked), and meanwhile, every KILL_EVERY seconds, kills one worker
# (SIGKILL and SIGTERM in turn) and starts a new one. At the end it prints
# sent, answered, lost (never answered), duplicated (answered twice: allowed
# only for frames in flight at a SIGKILL), mismatched, and the worst latency.
# Needs only Go and redis-server. Exits 1 if anything was lost or mismatched.
#
# Environment (defaults in brackets):
#   DURATION    seconds of load [60]
#   WORKERS     workers running at once [3]
#   KILL_EVERY  seconds between kills [2]
#   CONNS DEPTH bench connections and requests in flight each [32 4]
#   LEASE       worker --lease: how soon a killed worker's frames move [2s]
#   OUT         output directory for logs and the bench JSON [./chaos-out]
#
#   DURATION=60 scripts/chaos.sh
set -euo pipefail

DURATION=${DURATION:-60}
WORKERS=${WORKERS:-3}
KILL_EVERY=${KILL_EVERY:-2}
CONNS=${CONNS:-32}
DEPTH=${DEPTH:-4}
LEASE=${LEASE:-2s}
OUT=${OUT:-./chaos-out}
REDIS_SERVER=${REDIS_SERVER:-redis-server}

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/maple-chaos.XXXXXX")
redis_pid="" gw_pid="" bench_pid=""
workers=()

log() { echo "chaos.sh: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+)
    if ! port_open "$p"; then echo "$p"; return 0; fi
  done
  return 1
}
wait_port() {
  for _ in $(seq 300); do port_open "$1" && return 0; sleep 0.1; done
  log "nothing listens on port $1"; return 1
}

cleanup() {
  local p
  for p in "$bench_pid" "${workers[@]}" "$gw_pid"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  sleep 1
  for p in "$bench_pid" "${workers[@]}" "$gw_pid" "$redis_pid"; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building maple"
(cd "$root" && go build -o "$tmp/maple" ./cmd/maple)
maple=$tmp/maple

redis_port=$(free_port)
mkdir -p "$tmp/redis"
"$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$tmp/redis" >"$OUT/redis.log" 2>&1 &
redis_pid=$!
wait_port "$redis_port"
export MAPLE_REDIS="redis://127.0.0.1:$redis_port/0"

gw_port=$(free_port)
"$maple" gateway --listen "127.0.0.1:$gw_port" >"$OUT/gateway.log" 2>&1 &
gw_pid=$!
wait_port "$gw_port"

n=0
start_worker() {
  n=$((n + 1))
  "$maple" worker --lease "$LEASE" --concurrency 16 >"$OUT/worker-$n.log" 2>&1 &
  workers+=($!)
}
for _ in $(seq "$WORKERS"); do start_worker; done
sleep 1

log "load for ${DURATION}s: $CONNS conns x $DEPTH, killing a worker every ${KILL_EVERY}s"
"$maple" bench --addr "127.0.0.1:$gw_port" --conns "$CONNS" --depth "$DEPTH" \
  --duration "${DURATION}s" --warmup 0 --json >"$OUT/bench.json" 2>"$OUT/bench.log" &
bench_pid=$!

kills=0 terms=0 i=0
while kill -0 "$bench_pid" 2>/dev/null; do
  sleep "$KILL_EVERY"
  kill -0 "$bench_pid" 2>/dev/null || break
  idx=$((RANDOM % ${#workers[@]}))
  victim=${workers[$idx]}
  start_worker # the replacement first: the farm never has fewer workers
  if [ $((i % 2)) = 0 ]; then
    kill -KILL "$victim" 2>/dev/null && kills=$((kills + 1))
  else
    kill -TERM "$victim" 2>/dev/null && terms=$((terms + 1))
  fi
  i=$((i + 1))
  workers=("${workers[@]:0:$idx}" "${workers[@]:$((idx + 1))}")
done
wait "$bench_pid" || true
bench_pid=""

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$OUT/bench.json" | head -n 1; }
sent=$(field sent) answered=$(field answered) lost=$(field unanswered)
dups=$(field duplicates) mism=$(field mismatches) busy=$(field busy) failed=$(field failed)
max_ms=$(awk -v n="$(field max_ns)" 'BEGIN { printf "%.1f", n / 1e6 }')
p99_ms=$(awk -v n="$(field p99_ns)" 'BEGIN { printf "%.1f", n / 1e6 }')
if [ -z "$sent" ]; then
  log "bench produced no result; see $OUT/bench.log"
  exit 1
fi
printf 'chaos: %ss, %d SIGKILL + %d SIGTERM of %d workers (lease %s)\n' "$DURATION" "$kills" "$terms" "$WORKERS" "$LEASE"
printf '  sent        %s\n  answered    %s\n  lost        %s\n  duplicated  %s\n' "$sent" "$answered" "$lost" "$dups"
printf '  mismatched  %s\n  busy        %s\n  failed      %s\n  p99         %s ms\n  worst       %s ms\n' \
  "$mism" "$busy" "$failed" "$p99_ms" "$max_ms"
if [ "$lost" != 0 ] || [ "$mism" != 0 ]; then
  log "FAILED: lost or mismatched replies; logs in $OUT"
  exit 1
fi
