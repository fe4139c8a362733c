#!/usr/bin/env bash
# Scale out on one machine: echo throughput of a farm with one or two
# gateways and workers, on one Redis or on a 3-master Redis Cluster, side by
# side in one run (issue 15, item 6).
#
# Builds ./cmd/maple, then for every round runs each configuration in turn
# on fresh throwaway redis-servers (free ports, a temp dir):
#
#   a  single   one redis-server,                     1 gateway + 1 worker
#   b  single   one redis-server,                     2 gateways + 2 workers
#   c  cluster  3 masters (redis-cli --cluster create), 1 gateway + 1 worker
#   d  cluster  3 masters,                            2 gateways + 2 workers
#
# Workers run with --concurrency $CONCURRENCY; on the cluster the farm's
# redis-cluster:// URL names the three masters, and each gateway's --id is
# chosen so that its outbound list lands on its own master, starting with the
# master that holds the fewest partitions (docs/scaling.md, "Gateway
# lists"). Before measuring, every partition must be leased and, with two
# workers, by both. `maple bench --addr gw1,gw2` (connections round-robin
# over the gateways) then keeps CONNS x DEPTH 64-byte echoes in flight,
# checking every reply, for WARMUP and then DURATION seconds. Inside the
# bench's measured window (0.3 s from either end) it reads utime+stime of
# every process from /proc/<pid>/stat, the whole machine's busy time from
# /proc/stat, the farm's batching counters from its stat hashes and every
# redis-server's INFO commandstats (reset at the window's start), and
# divides by the replies in that window: CPU µs per frame (a request and
# its reply) of the gateways, the workers, each redis-server and the bench
# itself; frames per gateway pipeline and per worker read and write; the
# share of the CPUs busy outside these processes (softirqs, anything else
# running on the machine: it takes CPU from the run and moves replies/s).
#
# Prints one line per run (with p50/p99/max latency, and any failed Redis
# call or warning the farm logged) and a table of medians over the rounds,
# with each configuration's ratio to a (single Redis, 1 + 1) of the same
# round; writes them, the raw bench JSON and every process's log to $OUT.
# Exits non-zero if any reply was wrong, lost or failed, or a connection
# broke. Needs Go, redis-server, redis-cli and awk (no python, no jq).
#
# Environment (defaults in brackets):
#   ROUNDS       rounds of every configuration, alternating [3]
#   CONFIGS      configurations to run, in this order [a b c d]
#   CONNS        connections [256]
#   DEPTH        requests in flight per connection [8]
#   DURATION     measured window of each run, whole seconds [10]
#   WARMUP       load before each window, whole seconds [3]
#   SIZE         request body bytes [64]
#   PARTITIONS   the farm's --partitions [16]
#   CONCURRENCY  each worker's --concurrency [64]
#   OUT          output directory [./scale-out]
#   REDIS_SERVER, REDIS_CLI  binaries [redis-server, redis-cli]
#   MAPLE        a maple binary to run instead of this tree's
#
#   DURATION=10 ROUNDS=3 scripts/scale.sh
#   CONFIGS="a c" ROUNDS=1 DURATION=5 scripts/scale.sh
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CONFIGS=${CONFIGS:-a b c d}
CONNS=${CONNS:-256}
DEPTH=${DEPTH:-8}
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
WARMUP=${WARMUP:-3}
WARMUP=${WARMUP%s}
SIZE=${SIZE:-64}
PARTITIONS=${PARTITIONS:-16}
CONCURRENCY=${CONCURRENCY:-64}
OUT=${OUT:-./scale-out}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
PREFIX=maple
if ! [[ $DURATION =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 2 ]; then
  echo "scale.sh: DURATION (at least 2) and WARMUP are whole seconds" >&2
  exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/maple-scale.XXXXXX")
pids=()       # every process this script started, for the cleanup
run_maple=()  # the current run's gateways and workers
run_redis=()  # the current run's redis-servers
bench_pid=

log() { echo "scale.sh: $*" >&2; }
. "$(cd "$(dirname "$0")" && pwd)/lib.sh" # stop, port_open, free_port, wait_for

# cleanup stops the bench, then the maple processes, so they drain into a
# live Redis, then every redis-server: each by the pid it was started with.
cleanup() {
  local maple_pids=() redis_pids=() pid
  for pid in "${pids[@]}"; do
    if [[ " ${run_redis[*]} " == *" $pid "* ]]; then redis_pids+=("$pid"); else maple_pids+=("$pid"); fi
  done
  if [ ${#maple_pids[@]} -gt 0 ]; then stop "${maple_pids[@]}"; fi
  if [ ${#redis_pids[@]} -gt 0 ]; then stop "${redis_pids[@]}"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# sample VAR PID...: into array VAR, utime+stime of each PID (clock
# ticks), then the ticks all CPUs of the machine spent neither idle nor in
# iowait, then the time (µs since the epoch). No forks, so it takes no
# time of its own on a saturated machine.
sample() {
  local -n out=$1
  shift
  local pid st f
  out=()
  for pid in "$@"; do
    read -r st <"/proc/$pid/stat"
    st=${st##*) } # past the command name; st's fields start at the state (3rd)
    read -ra f <<<"$st"
    out+=($((f[11] + f[12])))
  done
  read -ra f </proc/stat # cpu user nice system idle iowait irq softirq steal
  out+=($((f[1] + f[2] + f[3] + f[6] + f[7] + f[8])))
  out+=("${EPOCHREALTIME/./}")
}

# sleep_until US: sleep until the time US (µs since the epoch).
sleep_until() {
  local d=$(($1 - ${EPOCHREALTIME/./}))
  if [ "$d" -gt 0 ]; then sleep "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))"; fi
}

# json_field FILE KEY: a number of maple bench's indented JSON.
json_field() { awk -v k="\"$2\":" '$1 == k {gsub(/,/, "", $2); print $2; exit}' "$1"; }

# start_redis NAME PORT [ARGS...]: a throwaway redis-server in its own dir.
start_redis() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$tmp/$name"
  "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp/$name" "$@" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  run_redis+=($!)
  wait_for "$name" "$!" port_open "$port"
}

# cluster_ok PORT: the node on PORT says cluster_state:ok.
cluster_ok() { "$REDIS_CLI" -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

# slot_owner PORT KEY: the port of the master that serves KEY's slot, by
# the slot map of the node on PORT.
slot_owner() {
  local slot
  slot=$("$REDIS_CLI" -p "$1" cluster keyslot "$2")
  "$REDIS_CLI" -p "$1" cluster nodes | awk -v s="$slot" '
    $3 ~ /master/ {
      for (i = 9; i <= NF; i++) {
        n = split($i, r, "-"); lo = r[1]; hi = (n == 2 ? r[2] : r[1])
        if (s + 0 >= lo + 0 && s + 0 <= hi + 0) { split($2, a, "[:@]"); print a[2]; exit }
      }
    }'
}

# owners PORT CLUSTER: the lease holder of every partition, one a line
# ("-" for none).
owners() {
  local p c=()
  [ "$2" = 1 ] && c=(-c)
  for p in $(seq 0 $((PARTITIONS - 1))); do
    "$REDIS_CLI" "${c[@]}" -p "$1" get "$PREFIX:{p$p}:owner" | sed 's/^$/-/'
  done
}

# stat_counters PORT...: the farm's batching counters, summed over the
# stat hashes its gateways and workers report every second (on whichever
# node each lives): frames_in pipelines handled reads writes redis_errors.
stat_counters() {
  local p k
  for p in "$@"; do
    for k in $("$REDIS_CLI" -p "$p" --scan --pattern "$PREFIX:stat:*"); do
      "$REDIS_CLI" -p "$p" hmget "$k" frames_in_total pipelines_total handled_total reads_total writes_total \
        redis_errors_total | paste -sd,
    done
  done | awk -F, '{for (i = 1; i <= 6; i++) s[i] += $i} END {print s[1] + 0, s[2] + 0, s[3] + 0, s[4] + 0, s[5] + 0, s[6] + 0}'
}

log "building maple"
(cd "$root" && go build -o "$tmp/maple" ./cmd/maple)
maple=$tmp/maple
if [ -n "${MAPLE:-}" ]; then
  maple=$MAPLE
  log "using $maple"
fi
tck=$(getconf CLK_TCK)
rm -f "$OUT"/run-*.json "$OUT"/*.log "$OUT"/runs.txt "$OUT"/table.txt

# run_config CFG ROUND: one measured run of configuration CFG (sets failed
# if the bench reported wrong or lost replies); appends a
# line to $OUT/runs.txt: configuration, round, replies/s, % of all CPUs
# busy, % of all CPUs busy outside the run's processes (the kernel's
# softirqs, anything else on the machine), CPU µs per frame of the
# gateways, workers, redis-servers and the bench, the redis-servers' one
# by one (a+b+c), then unanswered, duplicated, mismatched, failed and busy
# replies, then the batches (frames per gateway pipeline / handled per
# worker read / handled per worker write), then the latency p50/p99/max
# in ms.
run_config() {
  local cfg=$1 round=$2 cluster=0 ngw=1 nwk=1
  case $cfg in
    a) ;;
    b) ngw=2 nwk=2 ;;
    c) cluster=1 ;;
    d) cluster=1 ngw=2 nwk=2 ;;
    *) log "unknown configuration $cfg (want a, b, c or d)"; return 1 ;;
  esac
  run_maple=() run_redis=()
  local rports=() url p i
  if [ "$cluster" = 1 ]; then
    for i in 1 2 3; do
      p=$(free_port bus)
      start_redis "redis-$cfg$round-$i" "$p" --cluster-enabled yes --cluster-config-file nodes.conf
      rports+=("$p")
    done
    "$REDIS_CLI" --cluster create "${rports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
      >"$OUT/cluster-create.log" 2>&1
    for p in "${rports[@]}"; do
      wait_for "redis-$cfg$round-1" "${run_redis[0]}" cluster_ok "$p"
    done
    url="redis-cluster://127.0.0.1:${rports[0]},127.0.0.1:${rports[1]},127.0.0.1:${rports[2]}"
  else
    p=$(free_port)
    start_redis "redis-$cfg$round-1" "$p"
    rports+=("$p")
    url="redis://127.0.0.1:$p/0"
  fi

  # Gateway ids: on the cluster, each gateway's list on its own master,
  # the masters with the fewest partitions first.
  local ids=() placement=""
  if [ "$cluster" = 1 ]; then
    local -A parts=() taken=()
    for p in "${rports[@]}"; do parts[$p]=0; done
    for i in $(seq 0 $((PARTITIONS - 1))); do
      p=$(slot_owner "${rports[0]}" "$PREFIX:{p$i}:in")
      parts[$p]=$((parts[$p] + 1))
    done
    local order
    order=$(for p in "${rports[@]}"; do echo "${parts[$p]} $p"; done | sort -n | awk '{print $2}')
    local want n
    for want in $order; do
      [ ${#ids[@]} -ge "$ngw" ] && break
      for n in $(seq 1 200); do
        if [ "$(slot_owner "${rports[0]}" "$PREFIX:{gw:scale$n}:out")" = "$want" ] && [ -z "${taken[$n]:-}" ]; then
          ids+=("scale$n")
          taken[$n]=1
          break
        fi
      done
    done
    placement="partitions per master:"
    for p in "${rports[@]}"; do placement+=" $p=${parts[$p]}"; done
    placement+="; gateway lists:"
    for i in "${ids[@]}"; do placement+=" $i@$(slot_owner "${rports[0]}" "$PREFIX:{gw:$i}:out")"; done
  else
    for i in $(seq "$ngw"); do ids+=("scale$i"); done
  fi

  local gports=() addrs="" gw_pids=() wk_pids=() name
  for i in $(seq "$ngw"); do
    p=$(free_port)
    gports+=("$p")
    name="gateway-$cfg$round-$i"
    "$maple" gateway --redis "$url" --partitions "$PARTITIONS" --id "${ids[$((i - 1))]}" \
      --listen "127.0.0.1:$p" >"$OUT/$name.log" 2>&1 &
    pids+=($!) run_maple+=($!) gw_pids+=($!)
    addrs+="${addrs:+,}127.0.0.1:$p"
  done
  for i in $(seq "$nwk"); do
    name="worker-$cfg$round-$i"
    "$maple" worker --redis "$url" --partitions "$PARTITIONS" --concurrency "$CONCURRENCY" \
      >"$OUT/$name.log" 2>&1 &
    pids+=($!) run_maple+=($!) wk_pids+=($!)
  done
  # A real echo through every gateway proves gateways, Redis and workers
  # all work.
  for i in $(seq "$ngw"); do
    wait_for "gateway-$cfg$round-$i" "${gw_pids[$((i - 1))]}" \
      "$maple" client --addr "127.0.0.1:${gports[$((i - 1))]}" --cmd 1 --body ready --timeout 1s
  done
  # Every partition leased, by every worker, none holding more than its
  # share (a new worker's partitions are handed over within a lease).
  local held split=""
  for _ in $(seq 150); do
    held=$(owners "${rports[0]}" "$cluster")
    split=$(echo "$held" | sort | uniq -c | awk '{printf "%s%d", (NR > 1 ? "/" : ""), $1}')
    if ! echo "$held" | grep -qx -- - && [ "$(echo "$held" | sort -u | wc -l)" = "$nwk" ] &&
      [ "$(echo "$held" | sort | uniq -c | awk '{print $1}' | sort -n | tail -1)" -le $(((PARTITIONS + nwk - 1) / nwk)) ]; then
      break
    fi
    sleep 0.2
  done
  log "round $round/$ROUNDS: $cfg: $ngw gateway(s) + $nwk worker(s) on ${#rports[@]} redis-server(s);" \
    "partitions per worker $split${placement:+; $placement}"

  local file="$OUT/run-$cfg-r$round.json" start
  start=${EPOCHREALTIME/./}
  "$maple" bench --json --addr "$addrs" --conns "$CONNS" --depth "$DEPTH" --size "$SIZE" \
    --warmup "${WARMUP}s" --duration "${DURATION}s" >"$file" 2>>"$OUT/bench.log" &
  bench_pid=$!
  pids+=("$bench_pid")
  # The bench's window starts after its dials and the warmup: measure
  # inside it, 0.3 s from either end.
  local all=("${gw_pids[@]}" "${wk_pids[@]}" "${run_redis[@]}" "$bench_pid") s0 s1
  sleep_until $((start + WARMUP * 1000000 + 300000))
  sample s0 "${all[@]}"
  local st0 st1
  st0=$(stat_counters "${rports[@]}")
  for p in "${rports[@]}"; do "$REDIS_CLI" -p "$p" config resetstat >/dev/null; done
  sleep_until $((start + (WARMUP + DURATION) * 1000000 - 300000))
  sample s1 "${all[@]}"
  st1=$(stat_counters "${rports[@]}")
  for p in "${rports[@]}"; do
    "$REDIS_CLI" -p "$p" info commandstats | sed "s/^/$p /"
  done >"$OUT/cmdstats-$cfg-r$round.txt"
  if ! wait "$bench_pid"; then
    log "  bench reported failures (see $file and $OUT/bench.log)"
    failed=1 # the script's exit status; the run is still reported
  fi
  bench_pid=

  local rps lost dup mis fail busy lat
  rps=$(json_field "$file" replies_per_sec)
  lat=$(printf '%s/%s/%s' "$(json_field "$file" p50_ns)" "$(json_field "$file" p99_ns)" "$(json_field "$file" max_ns)" |
    awk -F/ '{printf "%.1f/%.1f/%.1f", $1 / 1e6, $2 / 1e6, $3 / 1e6}')
  lost=$(json_field "$file" unanswered)
  dup=$(json_field "$file" duplicates)
  mis=$(json_field "$file" mismatches)
  fail=$(json_field "$file" failed)
  busy=$(json_field "$file" busy)
  # Redis commands per 1000 frames and their µs per frame (INFO
  # commandstats, reset at the window's start), every server together.
  awk -v f="$(awk -v r="$rps" -v d="$DURATION" 'BEGIN {print r * (d - 0.6)}')" '
    match($2, /^cmdstat_[^:]+:calls=[0-9]+,usec=[0-9]+/) {
      split(substr($2, 9), a, /[:=,]/); calls[a[1]] += a[3]; usec[a[1]] += a[5]; tot += a[5]
    }
    END {
      n = 0; for (c in usec) order[++n] = c
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (usec[order[j]] > usec[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
      line = sprintf("scale.sh:     redis commands %.2f us/frame:", tot / f)
      for (i = 1; i <= n && i <= 8; i++) line = line sprintf(" %s %.2f (%.1f/kframe)", order[i], usec[order[i]] / f, calls[order[i]] / f * 1000)
      print line
    }' "$OUT/cmdstats-$cfg-r$round.txt" >&2
  # CPU µs per frame by kind: ticks / CLK_TCK * 1e6 / (replies/s * window).
  local d=() k n=${#all[@]}
  for k in "${!all[@]}"; do d+=($((s1[k] - s0[k]))); done
  # Batches: frames per gateway pipeline, frames (and events) handled per
  # worker read and per worker write.
  local batch
  batch=$(echo "$st0 $st1" | awk '{
    printf "%.0f/%.0f/%.0f", ($8 > $2 ? ($7 - $1) / ($8 - $2) : 0), ($10 > $4 ? ($9 - $3) / ($10 - $4) : 0), ($11 > $5 ? ($9 - $3) / ($11 - $5) : 0) }')
  # Anything the farm's processes complained about: failed Redis calls
  # (a CROSSSLOT, a MOVED not followed...), warnings and errors in their logs.
  local rerr logged
  rerr=$(echo "$st1" | awk '{print $6}')
  logged=$(cat "$OUT"/gateway-"$cfg$round"-*.log "$OUT"/worker-"$cfg$round"-*.log |
    grep 'level=WARN\|level=ERROR' | grep -vc 'open logins' || true)
  if [ "$rerr" != 0 ] || [ "$logged" != 0 ]; then
    log "  $rerr failed Redis calls, $logged warnings or errors in the logs of gateway-$cfg$round-* and worker-$cfg$round-*"
  fi
  echo "$cfg $round $rps ${s0[n + 1]} ${s1[n + 1]} ${s0[n]} ${s1[n]} $ngw $nwk ${#rports[@]} ${d[*]} $lost $dup $mis $fail $busy $batch $lat" |
    awk -v tck="$tck" -v ncpu="$(nproc)" '{
      cfg = $1; round = $2; rps = $3; win = ($5 - $4) / 1e6; ngw = $8; nwk = $9; nr = $10
      f = rps * win; us = 1e6 / tck / f
      i = 11; gw = wk = rd = 0; per = ""
      for (j = 0; j < ngw; j++) gw += $(i++)
      for (j = 0; j < nwk; j++) wk += $(i++)
      for (j = 0; j < nr; j++) { rd += $i; per = per (j ? "+" : "") sprintf("%.2f", $i * us); i++ }
      bn = $(i++)
      busy = ($7 - $6) / tck / win / ncpu * 100
      rest = ($7 - $6 - gw - wk - rd - bn) / tck / win / ncpu * 100
      printf "%s %d %.0f %.0f %.0f %.2f %.2f %.2f %.2f %s %s %s %s %s %s %s %s\n",
        cfg, round, rps, busy, rest, gw * us, wk * us, rd * us, bn * us, per, $(i), $(i+1), $(i+2), $(i+3), $(i+4), $(i+5), $(i+6)
    }' | tee -a "$OUT/runs.txt" | awk '{
      printf "scale.sh:   %s r%s: %s replies/s, CPUs %s%% busy (%s%% not these processes); CPU us/frame: gateways %s, workers %s, redis %s (%s), bench %s; batches %s; p50/p99/max %s ms; lost %s dup %s mismatched %s failed %s busy %s\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $16, $17, $11, $12, $13, $14, $15 }' >&2

  stop "${run_maple[@]}"
  stop "${run_redis[@]}"
  local keep=() q
  for q in "${pids[@]}"; do
    if [[ " ${run_maple[*]} ${run_redis[*]} $bench_pid " != *" $q "* ]] && kill -0 "$q" 2>/dev/null; then keep+=("$q"); fi
  done
  pids=("${keep[@]}")
  run_maple=() run_redis=()
}

failed=0
for round in $(seq "$ROUNDS"); do
  for cfg in $CONFIGS; do
    run_config "$cfg" "$round" # not in a condition: set -e stops the script at any failing step
  done
done

# The table: medians over the rounds; the ratio is the median of each
# round's replies/s to configuration a's of the same round.
awk -v configs="$CONFIGS" -v conns="$CONNS" -v depth="$DEPTH" '
  function median(s,   n, a, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function add(k, v) { col[k] = col[k] (col[k] == "" ? "" : " ") v }
  {
    c = $1; r = $2
    rps[c, r] = $3; rounds[c]++
    add(c SUBSEP "rps", $3); add(c SUBSEP "busy", $4); add(c SUBSEP "rest", $5); add(c SUBSEP "gw", $6)
    add(c SUBSEP "wk", $7); add(c SUBSEP "rd", $8); add(c SUBSEP "bn", $9)
    n = split($10, p, "+")
    for (i = 1; i <= n; i++) add(c SUBSEP "rd" i, p[i])
    nrd[c] = n
    bad[c] += $11 + $12 + $13 + $14
    split($16, b, "/"); add(c SUBSEP "b1", b[1]); add(c SUBSEP "b2", b[2]); add(c SUBSEP "b3", b[3])
    split($17, l, "/"); add(c SUBSEP "p99", l[2]); add(c SUBSEP "max", l[3])
    maxr = r > maxr ? r : maxr
  }
  END {
    name["a"] = "single Redis, 1 gw + 1 wk"; name["b"] = "single Redis, 2 gw + 2 wk"
    name["c"] = "3-master Cluster, 1 gw + 1 wk"; name["d"] = "3-master Cluster, 2 gw + 2 wk"
    printf "%d conns x %d in flight, medians of the rounds. x a: replies/s against a of the same round.\n", conns, depth
    printf "busy%%: all CPUs busy; rest%%: busy outside these processes (softirqs, other load). CPU in us per frame (request and reply), processes of a kind together.\n"
    printf "batches: frames per gateway pipeline / frames handled per worker read / per worker write. bad: lost, duplicated, mismatched, failed replies.\n"
    printf "%-31s %9s %5s %-24s %5s %5s %8s %7s %6s %-17s %6s %-11s %6s %6s %4s\n", "configuration", "replies/s", "x a", "x a per round", "busy%", "rest%", "gateways", "workers", "redis", "redis per server", "bench", "batches", "p99ms", "maxms", "bad"
    nc = split(configs, cs, " ")
    for (k = 1; k <= nc; k++) {
      c = cs[k]
      if (!rounds[c]) continue
      ratios = ""; rl = ""
      for (r = 1; r <= maxr; r++) if ((c, r) in rps && ("a", r) in rps && rps["a", r] > 0) {
        x = rps[c, r] / rps["a", r]; ratios = ratios (ratios == "" ? "" : " ") x; rl = rl (rl == "" ? "" : ",") sprintf("%.2f", x)
      }
      per = ""
      for (i = 1; i <= nrd[c]; i++) per = per (i > 1 ? "+" : "") sprintf("%.2f", median(col[c, "rd" i]))
      printf "%-31s %9.0f %5s %-24s %5.0f %5.0f %8.2f %7.2f %6.2f %-17s %6.2f %-11s %6.1f %6.1f %4d\n", (c in name ? name[c] : c), median(col[c, "rps"]),
        (ratios == "" ? "-" : sprintf("%.2f", median(ratios))), (rl == "" ? "-" : rl), median(col[c, "busy"]), median(col[c, "rest"]),
        median(col[c, "gw"]), median(col[c, "wk"]), median(col[c, "rd"]), per, median(col[c, "bn"]),
        sprintf("%d/%d/%d", median(col[c, "b1"]), median(col[c, "b2"]), median(col[c, "b3"])),
        median(col[c, "p99"]), median(col[c, "max"]), bad[c]
    }
  }' "$OUT/runs.txt" | tee "$OUT/table.txt"
log "runs in $OUT/runs.txt, table in $OUT/table.txt, bench JSON and logs in $OUT"
if [ "$failed" != 0 ]; then
  log "some runs reported mismatches, lost or failed replies, or broken connections"
  exit 1
fi
