#!/usr/bin/env bash
# Chaos run: a real farm under load while workers are killed and restarted.
#
# Builds ./cmd/maple, starts a throwaway redis-server, one gateway and
# WORKERS workers, drives the gateway with `maple bench` (echo, every reply
# checked), and meanwhile, every KILL_EVERY seconds, kills one worker
# (SIGKILL and SIGTERM in turn) and starts a new one. At the end it prints
# sent, answered, lost (never answered), duplicated (answered twice: allowed
# only for frames in flight at a SIGKILL), mismatched, the worst latency, and
# for each SIGKILL its stall: from the kill to the answer of the last request
# sent before it (`maple bench --marks`), the worst of them too.
# Needs only Go and redis-server. Exits 1 if anything was lost or mismatched.
#
# With GATEWAY_ROLLS=N it also rolls a gateway N times during the run, as
# docs/operations.md ("Deploying gateways") says: a second gateway on its
# own port, started with --reuseport --drain-timeout ROLL_DRAIN, driven by
# ROLL_CONNS clients that each send one counter request (demo cmd 3) at a
# time and follow the move push (client.Follow); each roll starts a new
# gateway on the same port and SIGTERMs the old one. It prints that
# move's sent, answered, lost, duplicated, the counter's runs no client saw
# answered, and the worst latency (the roll clients are a small Go program
# written to a temp module that uses this tree's client package); it exits
# 1 if a roll lost a request.
#
# Environment (defaults in brackets):
#   DURATION    seconds of load [60]
#   WORKERS     workers running at once [3]
#   KILL_EVERY  seconds between kills [2]; 0: no worker is killed
#   CONNS DEPTH bench connections and requests in flight each [32 4]
#   LIVENESS    worker --liveness: how soon a killed worker's frames move [the default]
#   LEASE       worker --lease [the default]
#   OUT         output directory for logs and the bench JSON [./chaos-out]
#   MAPLE       a maple binary to run the gateway and workers (another
#               release, side by side); bench is this tree's [this tree's]
#   WORKER_MOVE what is done to a worker every KILL_EVERY seconds [kill]:
#               kill   SIGKILL and SIGTERM in turn (a replacement started first)
#               hup    SIGHUP (reload), workers serving --metrics-addr
#               hup2   SIGHUP twice, 0.5 s apart (pkill -HUP run twice)
#               fixed  SIGHUP of workers started with fixed --worker-id w1, w2...
#   GATEWAY_ROLLS  gateway rolls during the run, evenly spaced [0]
#   ROLL_CONNS  roll clients, one request in flight each [32]
#   ROLL_DRAIN  the rolled gateways' --drain-timeout [2s]
#
#   DURATION=60 scripts/chaos.sh
#   DURATION=30 GATEWAY_ROLLS=3 KILL_EVERY=0 scripts/chaos.sh
#   for m in kill hup hup2 fixed; do DURATION=30 WORKER_MOVE=$m scripts/chaos.sh; done
set -euo pipefail

DURATION=${DURATION:-60}
WORKERS=${WORKERS:-3}
KILL_EVERY=${KILL_EVERY:-2}
CONNS=${CONNS:-32}
DEPTH=${DEPTH:-4}
LIVENESS=${LIVENESS:-}
LEASE=${LEASE:-}
OUT=${OUT:-./chaos-out}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
WORKER_MOVE=${WORKER_MOVE:-kill}
case "$WORKER_MOVE" in kill | hup | hup2 | fixed) ;; *)
  echo "chaos.sh: WORKER_MOVE=$WORKER_MOVE: want kill, hup, hup2 or fixed" >&2
  exit 2
  ;;
esac
GATEWAY_ROLLS=${GATEWAY_ROLLS:-0}
ROLL_CONNS=${ROLL_CONNS:-32}
ROLL_DRAIN=${ROLL_DRAIN:-2s}

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/maple-chaos.XXXXXX")
redis_pid="" gw_pid="" bench_pid="" roll_pid=""
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
  for p in "$bench_pid" "$roll_pid" "${workers[@]}" "$gw_pid"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  # Workers a reload started are not our children.
  [ -n "${maple:-}" ] && pkill -TERM -f "^$maple worker" 2>/dev/null || true
  sleep 1
  for p in "$bench_pid" "$roll_pid" "${workers[@]}" "$gw_pid" "$redis_pid"; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building maple"
(cd "$root" && go build -o "$tmp/maple" ./cmd/maple)
benchbin=$tmp/maple
maple=$tmp/maple
if [ -n "${MAPLE:-}" ]; then
  # Another build's gateway and workers (a release before, side by side);
  # the load still comes from this tree's bench.
  cp "$MAPLE" "$tmp/maple-farm"
  maple=$tmp/maple-farm
fi

# build_roller writes the gateway-roll clients (GATEWAY_ROLLS) to a temp
# module that uses this tree (replace) and builds them.
build_roller() {
  mkdir -p "$tmp/roll"
  cat >"$tmp/roll/main.go" <<'ROLL_GO'
// The gateway-roll move of scripts/chaos.sh: it runs `maple gateway
// --reuseport --drain-timeout D` on one port, drives it with clients that
// each send one counter request (demo cmd 3) at a time and follow the
// move push (client.Follow), and rolls the gateway (a new one on the same
// port, then SIGTERM to the old) ROLLS times during the run. It prints
// what the clients saw: lost (no answer), duplicated (a counter value
// answered twice, or a second answer to a request), the counter's runs
// that no client saw answered, and the worst latency.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
)

const cmdCounter = 3 // the demo game's counter (docs/protocol.md section 3)

var (
	maple    = flag.String("maple", "maple", "the maple binary")
	addr     = flag.String("addr", "127.0.0.1:28100", "the gateways' address")
	conns    = flag.Int("conns", 32, "clients, one request in flight each")
	duration = flag.Duration("duration", 60*time.Second, "length of the run")
	rolls    = flag.Int("rolls", 1, "gateway rolls, evenly spaced over the run")
	drain    = flag.String("drain", "2s", "the gateways' --drain-timeout")
	out      = flag.String("out", ".", "directory for the gateways' logs")
	counter  = flag.String("counter", "chaos-roll", "the counter's name")
)

// started are the gateways this program started, killed on SIGINT or
// SIGTERM.
var started struct {
	sync.Mutex
	list []*exec.Cmd
}

type gateway struct {
	n    int
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startGateway(n int) (*gateway, error) {
	log := filepath.Join(*out, fmt.Sprintf("roll-gateway-%d.log", n))
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(*maple, "gateway", "--listen", *addr, "--reuseport", "--drain-timeout", *drain)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	started.Lock()
	started.list = append(started.list, cmd)
	started.Unlock()
	g := &gateway{n: n, cmd: cmd, log: log, done: make(chan error, 1)}
	go func() { g.done <- cmd.Wait(); f.Close() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), "msg=listening") || strings.Contains(string(b), `"msg":"listening"`) {
			return g, nil
		}
		select {
		case err := <-g.done:
			return nil, fmt.Errorf("gateway %d exited before listening: %v (see %s)", n, err, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("gateway %d not listening after 15 s (see %s)", n, log)
		}
	}
}

type stats struct {
	mu       sync.Mutex
	sent     int64
	answered int64
	lost     int64
	failed   int64
	values   map[string]int
	lat      []time.Duration
	errs     []string
}

func (s *stats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) < 10 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

func main() {
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		started.Lock()
		for _, cmd := range started.list {
			_ = cmd.Process.Kill()
		}
		os.Exit(130)
	}()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "roll:", err)
		os.Exit(2)
	}
}

func run() error {
	gw, err := startGateway(1)
	if err != nil {
		return err
	}
	defer func() { // the last one: stopped here
		_ = gw.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-gw.done:
		case <-time.After(20 * time.Second):
			_ = gw.cmd.Process.Kill()
		}
	}()
	ctx := context.Background()
	st := &stats{values: make(map[string]int)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cs []*client.Conn
	for i := 0; i < *conns; i++ {
		c, err := client.Dial(ctx, *addr, client.Options{Follow: &client.Follow{}})
		if err != nil {
			return err
		}
		defer c.Close()
		cs = append(cs, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				start := time.Now()
				r, err := c.Request(rctx, cmdCounter, []byte(*counter))
				took := time.Since(start)
				cancel()
				st.mu.Lock()
				st.sent++
				switch {
				case err != nil:
					st.lost++
				case r.Ret != 0:
					st.answered++
					st.failed++
				default:
					st.answered++
					st.values[string(r.Body)]++
					st.lat = append(st.lat, took)
				}
				st.mu.Unlock()
				if err != nil {
					st.fail("client %d: %v", i, err)
					return
				}
				if r.Ret != 0 {
					st.fail("client %d: ret %d", i, r.Ret)
				}
			}
		}()
	}

	type rollResult struct {
		n      int
		took   time.Duration
		err    error
		cutOff int
	}
	var done []rollResult
	start := time.Now()
	for k := 1; k <= *rolls; k++ {
		at := start.Add(*duration * time.Duration(k) / time.Duration(*rolls+1))
		time.Sleep(time.Until(at))
		next, err := startGateway(k + 1)
		if err != nil {
			close(stop)
			wg.Wait()
			return err
		}
		old := gw
		gw = next
		_ = old.cmd.Process.Signal(syscall.SIGTERM)
		termed := time.Now()
		var exitErr error
		select {
		case exitErr = <-old.done:
		case <-time.After(60 * time.Second):
			exitErr = fmt.Errorf("still running 60 s after SIGTERM")
			_ = old.cmd.Process.Kill()
		}
		log, _ := os.ReadFile(old.log)
		done = append(done, rollResult{n: old.n, took: time.Since(termed), err: exitErr,
			cutOff: strings.Count(string(log), "close-grace over")})
	}
	time.Sleep(time.Until(start.Add(*duration)))
	close(stop)
	wg.Wait()

	// One more increment: its value is the counter's runs.
	final, err := cs[0].Request(ctx, cmdCounter, []byte(*counter))
	if err != nil || final.Ret != 0 {
		return fmt.Errorf("final counter request: ret %d err %v", final.Ret, err)
	}
	runs, _ := strconv.ParseInt(string(final.Body), 10, 64)
	runs--
	var dups, late int64
	for _, k := range st.values {
		if k > 1 {
			dups += int64(k - 1)
		}
	}
	var moves, resent uint64
	for _, c := range cs {
		moves += c.Moves()
		resent += c.Resent()
		for len(c.Pushes()) > 0 {
			if p := <-c.Pushes(); p.SN != 0 && p.Cmd != box.CmdMove {
				late++
			}
		}
	}
	sort.Slice(st.lat, func(i, j int) bool { return st.lat[i] < st.lat[j] })
	pct := func(q float64) float64 {
		if len(st.lat) == 0 {
			return 0
		}
		return float64(st.lat[int(q*float64(len(st.lat)-1))]) / 1e6
	}
	ok := int64(0)
	for _, k := range st.values {
		ok += int64(k)
	}
	fmt.Printf("gateway rolls: %d of a --reuseport gateway (--drain-timeout %s), %d clients one counter request at a time\n", len(done), *drain, *conns)
	for _, r := range done {
		status := "exit 0"
		if r.err != nil {
			status = r.err.Error()
		}
		fmt.Printf("  roll %d       old gateway stopped %.1f s after SIGTERM (%s), %d connections cut off\n", r.n, r.took.Seconds(), status, r.cutOff)
	}
	fmt.Printf("  sent        %d\n  answered    %d\n  lost        %d\n  duplicated  %d\n", st.sent, st.answered, st.lost, dups+late)
	fmt.Printf("  unanswered runs %d (counter %d - answers %d: ran without the answer reaching a client, or twice after a worker SIGKILL)\n", runs-ok, runs, ok)
	fmt.Printf("  moves       %d (resent %d)\n  failed      %d\n  p99         %.1f ms\n  worst       %.1f ms\n", moves, resent, st.failed, pct(0.99), pct(1))
	for _, e := range st.errs {
		fmt.Println("  error:", e)
	}
	if st.lost != 0 || st.failed != 0 {
		os.Exit(1)
	}
	return nil
}
ROLL_GO
  printf 'module maple-chaos-roll\n\ngo %s\n\nrequire github.com/maple-farm/maple v0.0.0\n\nreplace github.com/maple-farm/maple => %s\n' \
    "$(sed -n 's/^go //p' "$root/go.mod")" "$root" >"$tmp/roll/go.mod"
  cp "$root/go.sum" "$tmp/roll/go.sum"
  (cd "$tmp/roll" && GOFLAGS="-mod=mod -buildvcs=false" go build -o "$tmp/roll/roll" .)
}
if [ "$GATEWAY_ROLLS" -gt 0 ]; then
  log "building the gateway-roll clients"
  build_roller
fi

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
  local extra=()
  case "$WORKER_MOVE" in
  hup | hup2) extra=(--metrics-addr "127.0.0.1:$(free_port)") ;;
  fixed) extra=(--worker-id "w$n" --metrics-addr "127.0.0.1:$(free_port)") ;;
  esac
  [ -n "$LIVENESS" ] && extra+=(--liveness "$LIVENESS")
  [ -n "$LEASE" ] && extra+=(--lease "$LEASE")
  "$maple" worker --concurrency 16 "${extra[@]}" >"$OUT/worker-$n.log" 2>&1 &
  workers+=($!)
}
# live_workers lists the pids of the workers running now, reloaded ones
# (children of an old process, re-parented) included.
live_workers() { pgrep -f "^$maple worker" || true; }
for _ in $(seq "$WORKERS"); do start_worker; done
sleep 1

kill_what="killing a worker every ${KILL_EVERY}s"
[ "$KILL_EVERY" = 0 ] && kill_what="no worker killed"
log "load for ${DURATION}s: $CONNS conns x $DEPTH, $kill_what"
if [ "$GATEWAY_ROLLS" -gt 0 ]; then
  roll_port=$(free_port)
  log "and $GATEWAY_ROLLS gateway rolls on port $roll_port: $ROLL_CONNS clients one request at a time"
  "$tmp/roll/roll" --maple "$maple" --addr "127.0.0.1:$roll_port" --conns "$ROLL_CONNS" --duration "${DURATION}s" \
    --rolls "$GATEWAY_ROLLS" --drain "$ROLL_DRAIN" --out "$OUT" >"$OUT/roll.txt" 2>"$OUT/roll.log" &
  roll_pid=$!
fi
marks=$OUT/kills.txt # the instants of the SIGKILLs, for bench --marks
: >"$marks"
"$benchbin" bench --addr "127.0.0.1:$gw_port" --conns "$CONNS" --depth "$DEPTH" \
  --duration "${DURATION}s" --warmup 0 --json --marks "$marks" >"$OUT/bench.json" 2>"$OUT/bench.log" &
bench_pid=$!

kills=0 terms=0 hups=0 i=0
while kill -0 "$bench_pid" 2>/dev/null; do
  if [ "$KILL_EVERY" = 0 ]; then sleep 1; continue; fi
  sleep "$KILL_EVERY"
  kill -0 "$bench_pid" 2>/dev/null || break
  if [ "$WORKER_MOVE" != kill ]; then
    # A reload: the worker starts its own replacement, then drains.
    mapfile -t live < <(live_workers)
    [ ${#live[@]} -gt 0 ] || continue
    victim=${live[$((RANDOM % ${#live[@]}))]}
    kill -HUP "$victim" 2>/dev/null && hups=$((hups + 1))
    if [ "$WORKER_MOVE" = hup2 ]; then
      sleep 0.5
      kill -HUP "$victim" 2>/dev/null || true
    fi
    continue
  fi
  idx=$((RANDOM % ${#workers[@]}))
  victim=${workers[$idx]}
  start_worker # the replacement first: the farm never has fewer workers
  if [ $((i % 2)) = 0 ]; then
    date +%s.%N >>"$marks"
    kill -KILL "$victim" 2>/dev/null && kills=$((kills + 1))
  else
    kill -TERM "$victim" 2>/dev/null && terms=$((terms + 1))
  fi
  i=$((i + 1))
  workers=("${workers[@]:0:$idx}" "${workers[@]:$((idx + 1))}")
done
wait "$bench_pid" || true
bench_pid=""
roll_status=0
if [ -n "$roll_pid" ]; then
  wait "$roll_pid" || roll_status=$?
  roll_pid=""
fi

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$OUT/bench.json" | head -n 1; }
sent=$(field sent) answered=$(field answered) lost=$(field unanswered)
dups=$(field duplicates) mism=$(field mismatches) busy=$(field busy) failed=$(field failed)
max_ms=$(awk -v n="$(field max_ns)" 'BEGIN { printf "%.1f", n / 1e6 }')
p99_ms=$(awk -v n="$(field p99_ns)" 'BEGIN { printf "%.1f", n / 1e6 }')
if [ -z "$sent" ]; then
  log "bench produced no result; see $OUT/bench.log"
  exit 1
fi
settings="liveness ${LIVENESS:-default}, lease ${LEASE:-default}"
if [ "$WORKER_MOVE" = kill ]; then
  printf 'chaos: %ss, %d SIGKILL + %d SIGTERM of %d workers (%s)\n' "$DURATION" "$kills" "$terms" "$WORKERS" "$settings"
else
  # The last reloaded workers may still be draining: let them exit.
  for _ in $(seq 150); do
    mapfile -t live < <(live_workers)
    [ "${#live[@]}" -le "$WORKERS" ] && break
    sleep 0.1
  done
  printf 'chaos: %ss, move %s: %d reloads of %d workers (%s); %d workers at the end\n' \
    "$DURATION" "$WORKER_MOVE" "$hups" "$WORKERS" "$settings" "${#live[@]}"
fi
printf '  sent        %s\n  answered    %s\n  lost        %s\n  duplicated  %s\n' "$sent" "$answered" "$lost" "$dups"
printf '  mismatched  %s\n  busy        %s\n  failed      %s\n  p99         %s ms\n  worst       %s ms\n' \
  "$mism" "$busy" "$failed" "$p99_ms" "$max_ms"
# The stall of each SIGKILL (bench --marks), in ms, and the worst.
stalls=$(tr -d ' \n' <"$OUT/bench.json" | sed -n 's/.*"stalls_ns":\[\([0-9,]*\)\].*/\1/p' | tr ',' '\n' |
  awk 'NF { printf "%.0f ", $1 / 1e6 }')
if [ -n "$stalls" ]; then
  printf '  SIGKILL stalls (ms, kill to the last earlier request answered): %s\n' "$stalls"
  printf '  worst stall %s ms\n' "$(echo "$stalls" | tr ' ' '\n' | sort -n | tail -n 1)"
fi
if [ "$GATEWAY_ROLLS" -gt 0 ]; then
  cat "$OUT/roll.txt"
fi
if [ "$lost" != 0 ] || [ "$mism" != 0 ]; then
  log "FAILED: lost or mismatched replies; logs in $OUT"
  exit 1
fi
if [ "$WORKER_MOVE" != kill ] && [ "${#live[@]}" != "$WORKERS" ]; then
  log "FAILED: ${#live[@]} workers at the end, want $WORKERS (a reload orphaned or lost a process); logs in $OUT"
  exit 1
fi
if [ "$roll_status" != 0 ]; then
  log "FAILED: the gateway rolls lost or failed requests (exit $roll_status); logs in $OUT (roll.log, roll-gateway-*.log)"
  exit 1
fi
