#!/usr/bin/env bash
# scripts/tp.sh BIN... : throughput of each maple binary at CONNS x DEPTH, builds in turn,
# each run a fresh redis-server + `BIN gateway` + `BIN worker --concurrency 64`,
# plus (REF=1) `BIN refserver` of the first binary right after each farm run.
# Per run: replies/s, p50/p99, CPU us per reply of gateway, worker, redis and bench (of refserver and bench for the reference)
# (utime+stime from /proc over the measured window), Redis commandstats per reply
# (top commands, usec per reply) when CMDSTATS=1.
# Env: CONNS [64] DEPTH [8] DUR [6s] ROUNDS [3] REF [1] CMDSTATS [1] PROF (seconds: save gateway+worker CPU profiles to $PROFDIR)
set -uo pipefail
CONNS=${CONNS:-64}; DEPTH=${DEPTH:-8}; DUR=${DUR:-6s}; ROUNDS=${ROUNDS:-3}; REF=${REF:-1}; CMDSTATS=${CMDSTATS:-1}
PROFDIR=${PROFDIR:-./prof}
tmp=$(mktemp -d /tmp/tp.XXXXXX); pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 0.5; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { echo $((20000 + RANDOM % 12000)); }
cpu() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; } # clock ticks
tck=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    label=$(basename "$bin")
    rp=$(port); gp=$(port); mg=$(port); mw=$(port)
    mkdir -p "$tmp/r"; redis-server --port $rp --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp/r" >/dev/null 2>&1 & rs=$!; pids+=($rs)
    sleep 0.3
    "$bin" gateway --redis redis://127.0.0.1:$rp/0 --listen 127.0.0.1:$gp --metrics-addr 127.0.0.1:$mg >"$tmp/gw.log" 2>&1 & gw=$!; pids+=($gw)
    "$bin" worker --redis redis://127.0.0.1:$rp/0 --concurrency 64 --metrics-addr 127.0.0.1:$mw >"$tmp/w.log" 2>&1 & wk=$!; pids+=($wk)
    for _ in $(seq 100); do "$bin" client --addr 127.0.0.1:$gp --cmd 1 --body x --timeout 1s >/dev/null 2>&1 && break; sleep 0.1; done
    "$bin" bench --json --addr 127.0.0.1:$gp --conns $CONNS --depth $DEPTH --duration "$DUR" --warmup 2s >"$tmp/o.json" 2>/dev/null & bp=$!
    sleep 2.2
    redis-cli -p $rp config resetstat >/dev/null
    g0=$(cpu $gw); w0=$(cpu $wk); r0=$(cpu $rs); b0=$(cpu $bp)
    if [ -n "${PROF:-}" ]; then mkdir -p "$PROFDIR"
      curl -s -o "$PROFDIR/gw-$label-r$round.pprof" "127.0.0.1:$mg/debug/pprof/profile?seconds=$PROF" &
      curl -s -o "$PROFDIR/wk-$label-r$round.pprof" "127.0.0.1:$mw/debug/pprof/profile?seconds=$PROF" &
    fi
    sleep $(( ${DUR%s} - 2 ))
    g1=$(cpu $gw); w1=$(cpu $wk); r1=$(cpu $rs); b1=$(cpu $bp)
    redis-cli -p $rp info commandstats > "$tmp/cs.txt"
    wait $bp
    python3 - "$label" "$round" "$tmp/o.json" "$tmp/cs.txt" $((g1-g0)) $((w1-w0)) $((r1-r0)) $((b1-b0)) $tck $(( ${DUR%s} - 2 )) $CMDSTATS <<'PY'
import json,sys,re
l,r,f,cs,g,w,rd,b,tck,win,show=sys.argv[1:12]
d=json.load(open(f)); rps=d['replies_per_sec']; n=rps*float(win)
us=lambda t: float(t)/float(tck)*1e6/n if n else 0
print(f"{l:>14} r{r} {d['conns']}x{d['depth']}: {rps:8.0f}/s p50 {d['p50_ns']/1e6:.2f} p99 {d['p99_ns']/1e6:.2f} ms | CPU us/reply gw {us(g):5.1f} wk {us(w):5.1f} redis {us(rd):5.1f} bench {us(b):5.1f} | lost {d['unanswered']} dup {d['duplicates']} mis {d['mismatches']} fail {d['failed']} busy {d['busy']}")
if show=='1':
    tot=0; rows=[]
    for line in open(cs):
        m=re.match(r'cmdstat_([^:]+):calls=(\d+),usec=(\d+)',line)
        if m: rows.append((int(m.group(3)),m.group(1),int(m.group(2)))); tot+=int(m.group(3))
    rows.sort(reverse=True)
    print(f"{'':>14}    redis cmd usec/reply {tot/n:.2f}: "+", ".join(f"{c} {u/n:.2f} ({k/n*1000:.1f}/kreply)" for u,c,k in rows[:6]))
PY
    kill -TERM $gw $wk; wait $gw $wk 2>/dev/null; kill -TERM $rs; wait $rs 2>/dev/null
    if [ "$REF" = 1 ] && [ "$bin" = "$1" ]; then
      fp=$(port); "$1" refserver --listen 127.0.0.1:$fp >/dev/null 2>&1 & rf=$!; pids+=($rf); sleep 0.3
      "$1" bench --json --addr 127.0.0.1:$fp --conns $CONNS --depth $DEPTH --duration "$DUR" --warmup 2s >"$tmp/o.json" 2>/dev/null & bp=$!
      sleep 2.2; f0=$(cpu $rf); b0=$(cpu $bp); sleep $(( ${DUR%s} - 2 )); f1=$(cpu $rf); b1=$(cpu $bp)
      wait $bp
      python3 -c "import json;d=json.load(open('$tmp/o.json'));n=d['replies_per_sec']*$(( ${DUR%s} - 2 ));us=lambda t: t/$tck*1e6/n if n else 0;print(f\"{'ref':>14} r$round {d['conns']}x{d['depth']}: {d['replies_per_sec']:8.0f}/s p50 {d['p50_ns']/1e6:.2f} p99 {d['p99_ns']/1e6:.2f} ms | CPU us/reply ref {us($((f1-f0))):5.1f} bench {us($((b1-b0))):5.1f}\")"
      kill -TERM $rf; wait $rf 2>/dev/null
    fi
  done
done
