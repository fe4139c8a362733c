#!/usr/bin/env bash
# scripts/idle.sh BIN... : what an idle farm costs Redis, for each maple binary in turn.
# Each run: a fresh redis-server, `BIN gateway` and WORKERS x `BIN worker`, no players;
# after WARMUP it resets Redis's command statistics and, over DUR seconds, reads Redis's
# CPU (INFO cpu, user + sys), its read events (INFO stats) and INFO commandstats. Prints
# per binary and round: Redis calls/s, reads/s (round trips), commandstats usec/s (time
# Redis spent in commands; a script's commands count twice, in their own line and in
# EVALSHA's), Redis CPU ms/s, and the top commands with their calls/s and usec/s.
# Rounds alternate the binaries, so the figures are side by side.
# After the rounds, per binary: the median of each figure over the rounds and its range.
# Env: WORKERS [2] DUR [20] WARMUP [3] ROUNDS [3] TOP [6] (commands listed per round)
#   scripts/idle.sh /tmp/maple-before /tmp/maple-after
set -uo pipefail
WORKERS=${WORKERS:-2}; DUR=${DUR:-20}; WARMUP=${WARMUP:-3}; ROUNDS=${ROUNDS:-3}; TOP=${TOP:-6}
[ $# -gt 0 ] || { echo "usage: scripts/idle.sh BIN..." >&2; exit 2; }
tmp=$(mktemp -d /tmp/idle.XXXXXX); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"
}
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 12000)); }
# Redis's own CPU seconds (INFO cpu: user + sys, to the microsecond).
rcpu() { redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
# Redis's read events so far (INFO stats): a round trip from a client is one, whatever
# commands it carries; at idle each costs Redis far more CPU than the commands in it.
rreads() { redis-cli -p "$1" info stats | tr -d '\r' | awk -F: '/^total_reads_processed:/ { print $2 }'; }
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    label=$(basename "$bin")
    rp=$(port); gp=$(port)
    mkdir -p "$tmp/r"
    redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/r" >/dev/null 2>&1 & rs=$!; pids+=($rs)
    sleep 0.3
    run=()
    "$bin" gateway --redis "redis://127.0.0.1:$rp/0" --listen "127.0.0.1:$gp" >"$tmp/gw.log" 2>&1 & run+=($!)
    for _ in $(seq "$WORKERS"); do
      "$bin" worker --redis "redis://127.0.0.1:$rp/0" >>"$tmp/w.log" 2>&1 & run+=($!)
    done
    pids+=("${run[@]}")
    sleep "$WARMUP"
    redis-cli -p "$rp" config resetstat >/dev/null
    r0=$(rcpu "$rp"); e0=$(rreads "$rp")
    sleep "$DUR"
    r1=$(rcpu "$rp"); e1=$(rreads "$rp")
    redis-cli -p "$rp" info commandstats >"$tmp/cs.txt"
    TOP=$TOP python3 - "$label" "$round" "$tmp/cs.txt" "$r0" "$r1" "$DUR" "$tmp/sum.tsv" "$e0" "$e1" <<'PY'
import os, re, sys
TOP = int(os.environ["TOP"])
label, rnd, cs, c0, c1, dur = sys.argv[1:7]
dur = float(dur)
rows = []
for line in open(cs):
    m = re.match(r'cmdstat_([^:]+):calls=(\d+),usec=(\d+)', line)
    if m and m.group(1) != 'config':
        rows.append((int(m.group(3)), m.group(1), int(m.group(2))))
rows.sort(reverse=True)
calls = sum(r[2] for r in rows) / dur
usec = sum(r[0] for r in rows) / dur
cpu_ms = (float(c1) - float(c0)) * 1000 / dur
reads = (int(sys.argv[9]) - int(sys.argv[8])) / dur
top = ", ".join(f"{c} {k / dur:.1f}/s {u / dur:.0f}us/s" for u, c, k in rows[:TOP])
line = f"{label:>14} r{rnd}: {calls:6.1f} calls/s, {reads:5.1f} reads/s, commands {usec:7.1f} us/s, redis CPU {cpu_ms:5.2f} ms/s"
print(f"{line} | {top}")
with open(sys.argv[7], "a") as f:
    f.write(f"{label}\t{calls}\t{reads}\t{usec}\t{cpu_ms}\n")
PY
    kill -TERM "${run[@]}" 2>/dev/null; wait "${run[@]}" 2>/dev/null
    kill -TERM $rs; wait $rs 2>/dev/null
  done
done
python3 - "$tmp/sum.tsv" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, *v = line.split("\t")
    runs.setdefault(label, []).append([float(x) for x in v])
for label, rs in runs.items():
    cols = list(zip(*rs))
    f = [f"{statistics.median(c):.1f} ({min(c):.1f}-{max(c):.1f})" for c in cols]
    print(f"{label:>14} median (range) of {len(rs)}: calls/s {f[0]}, reads/s {f[1]}, commands us/s {f[2]}, redis CPU ms/s {f[3]}")
PY
