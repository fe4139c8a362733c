#!/usr/bin/env bash
# WebSocket players against TCP players, through the same farm, side by
# side, for one or more builds (docs/benchmarks.md, "WebSocket players").
#
# For every build and round: a fresh `maple gateway --ws-listen` and
# `maple worker --concurrency 64` on one throwaway redis-server, then
#   - throughput: PAIRS pairs of `maple bench` runs at CONNS x DEPTH, one
#     over TCP and one over WebSocket (`--ws`) each, every reply checked,
#     which one goes first alternating; the WS/TCP ratio of each pair, and
#     the gateway's CPU time per reply of each run (from /proc, much less
#     sensitive than replies/s to other load on the machine); medians;
#   - memory: for TCP, then for WebSocket, on a fresh gateway each,
#     IDLE connections that each do one echo and then stay idle
#     (`maple bench --requests 1`); the gateway's VmRSS before they connect
#     and once all are answered, and the difference per connection.
# Prints one table and writes the raw results to $OUT.
#
# Environment (defaults in brackets):
#   REVS      git revisions to build and compare, "" for the work tree [""]
#             e.g. REVS="main WORKTREE" builds main and the work tree
#   ROUNDS    rounds [1]
#   CONNS     connections of the throughput runs [64]
#   DEPTH     requests in flight per connection [8]
#   PAIRS     throughput pairs per build and round [3]
#   DURATION  measured window of each throughput run [5s]
#   IDLE      idle connections of the memory runs [5000] (0: skip)
#   OUT       output directory [./ws-out]
#
#   REVS="main WORKTREE" ROUNDS=2 scripts/ws.sh
set -euo pipefail

REVS=${REVS:-WORKTREE}
ROUNDS=${ROUNDS:-1}
CONNS=${CONNS:-64}
DEPTH=${DEPTH:-8}
DURATION=${DURATION:-5s}
PAIRS=${PAIRS:-3}
IDLE=${IDLE:-5000}
OUT=${OUT:-./ws-out}
REDIS_SERVER=${REDIS_SERVER:-redis-server}

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/maple-ws.XXXXXX")
pids=()

log() { echo "ws.sh: $*" >&2; }
. "$(cd "$(dirname "$0")" && pwd)/lib.sh" # stop, port_open, free_port, wait_for

cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then stop "${pids[@]}"; fi
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 300); do
    if port_open "$1"; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on $1 after 30s"
  return 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# cpu_ticks PID: user + system CPU time of PID, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# median: the median of the numbers on stdin.
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# build REV: the maple binary of REV (WORKTREE: the work tree) in $tmp.
build() {
  local rev=$1 src
  if [ "$rev" = WORKTREE ]; then
    src=$root
  else
    src=$tmp/src-$rev
    mkdir -p "$src"
    git -C "$root" archive "$rev" | tar -x -C "$src"
  fi
  (cd "$src" && go build -o "$tmp/maple-$rev" ./cmd/maple)
}

# A bench that speaks WebSocket: the work tree's (an older build may not).
log "building"
build WORKTREE
bench=$tmp/maple-WORKTREE
for rev in $REVS; do
  [ "$rev" = WORKTREE ] || build "$rev"
done

redis_port=$(free_port)
mkdir -p "$tmp/redis"
"$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$tmp/redis" >"$OUT/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
redis_url="redis://127.0.0.1:$redis_port/0"

# farm REV: starts a gateway and a worker of REV; sets gw_pid, wk_pid,
# tcp_port, ws_port.
farm() {
  local maple=$tmp/maple-$1
  tcp_port=$(free_port)
  ws_port=$(free_port)
  "$maple" gateway --redis "$redis_url" --listen "127.0.0.1:$tcp_port" --ws-listen "127.0.0.1:$ws_port" \
    --max-conns-per-ip 0 >>"$OUT/gateway-$1.log" 2>&1 &
  gw_pid=$!
  "$maple" worker --redis "$redis_url" --concurrency 64 >>"$OUT/worker-$1.log" 2>&1 &
  wk_pid=$!
  pids+=("$gw_pid" "$wk_pid")
  wait_port "$tcp_port"
  wait_port "$ws_port"
  "$bench" client --addr "127.0.0.1:$tcp_port" --cmd 1 --body ready --timeout 5s >/dev/null
}

unfarm() { stop "$gw_pid" "$wk_pid"; }

# num FILE KEY: a number from a bench JSON result.
num() { sed -n "s/^ *\"$2\": \([0-9.e+]*\),*$/\1/p" "$1"; }

printf '%-10s %5s %12s %12s %7s %11s %11s %13s %13s\n' build round "tcp reply/s" "ws reply/s" ws/tcp "tcp us/rep" "ws us/rep" "tcp idle KiB" "ws idle KiB" >"$tmp/table"
failed=0
for round in $(seq "$ROUNDS"); do
  for rev in $REVS; do
    tput=(- - - - -)
    if [ "$CONNS" -gt 0 ] && [ "$PAIRS" -gt 0 ]; then
      farm "$rev"
      : >"$tmp/pairs"
      for pair in $(seq "$PAIRS"); do
        order="tcp ws"
        if [ $(((round + pair) % 2)) = 1 ]; then order="ws tcp"; fi # neither always runs first
        declare -A rps=() cpu=()
        for proto in $order; do
          file=$OUT/$rev-$proto-r$round-p$pair.json
          port=$tcp_port
          flags=()
          if [ "$proto" = ws ]; then port=$ws_port; flags=(--ws); fi
          log "round $round, pair $pair: $rev, $proto, $CONNS x $DEPTH"
          c0=$(cpu_ticks "$gw_pid")
          if ! "$bench" bench --json "${flags[@]}" --addr "127.0.0.1:$port" --conns "$CONNS" --depth "$DEPTH" \
            --duration "$DURATION" >"$file" 2>>"$OUT/bench.log"; then
            log "  $rev $proto run had failures (see $file)"
            failed=1
          fi
          c1=$(cpu_ticks "$gw_pid")
          rps[$proto]=$(num "$file" replies_per_sec)
          cpu[$proto]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$(num "$file" answered)" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
        done
        echo "${rps[tcp]} ${rps[ws]} ${cpu[tcp]} ${cpu[ws]}" >>"$tmp/pairs"
      done
      unfarm
      cat "$tmp/pairs" >>"$OUT/pairs-$rev.txt"
      tput=(
        "$(awk '{print $1}' "$tmp/pairs" | median | xargs printf '%.0f')"
        "$(awk '{print $2}' "$tmp/pairs" | median | xargs printf '%.0f')"
        "$(awk '{printf "%.3f\n", $2 / $1}' "$tmp/pairs" | median)"
        "$(awk '{print $3}' "$tmp/pairs" | median)"
        "$(awk '{print $4}' "$tmp/pairs" | median)"
      )
    fi
    mem=(- -)
    if [ "$IDLE" -gt 0 ]; then
      i=0
      for proto in tcp ws; do
        farm "$rev"
        sleep 1
        before=$(rss_kb "$gw_pid")
        port=$tcp_port
        flags=()
        if [ "$proto" = ws ]; then port=$ws_port; flags=(--ws); fi
        log "round $round: $rev, $IDLE idle $proto connections"
        "$bench" bench --json "${flags[@]}" --addr "127.0.0.1:$port" --conns "$IDLE" --depth 1 --requests 1 \
          --warmup 0s --duration 600s >"$OUT/$rev-idle-$proto-r$round.json" 2>"$tmp/idle.err" &
        bpid=$!
        pids+=("$bpid")
        for _ in $(seq 1200); do
          if grep -q "answered $IDLE " "$tmp/idle.err" 2>/dev/null; then break; fi
          sleep 0.1
        done
        sleep 3
        after=$(rss_kb "$gw_pid")
        stop "$bpid"
        unfarm
        echo "$rev $proto round $round: VmRSS $before kB -> $after kB for $IDLE connections" >>"$OUT/idle.txt"
        mem[i]=$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN{printf "%.1f", (a-b)/n}')
        i=$((i + 1))
      done
    fi
    printf '%-10s %5s %12s %12s %7s %11s %11s %13s %13s\n' "$rev" "$round" "${tput[@]}" "${mem[@]}" >>"$tmp/table"
  done
done
for rev in $REVS; do
  if [ -s "$OUT/pairs-$rev.txt" ]; then
    echo "$rev, every pair (tcp reply/s, ws reply/s, tcp us/reply, ws us/reply of the gateway):" >&2
    cat "$OUT/pairs-$rev.txt" >&2
  fi
done
cat "$OUT/idle.txt" 2>/dev/null >&2 || true
tee "$OUT/table.txt" <"$tmp/table"
if [ "$failed" != 0 ]; then
  log "some runs reported wrong, lost or failed replies, or broken connections"
  exit 1
fi
