# Shell helpers shared by scripts/bench.sh, scale.sh, stages.sh and ws.sh, which
# source this file after defining log(). wait_for reads $OUT for logs.

# stop PID...: TERM, up to 5 s to drain, then KILL.
stop() {
  local pid alive
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [BUS]: a port nothing listens on now (checked, not reserved),
# below the ephemeral range (32768+); with BUS, port+10000 (a cluster
# node's bus port) is free too.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((12000 + RANDOM % 10000))
    if port_open "$p"; then continue; fi
    if [ -n "${1:-}" ] && port_open $((p + 10000)); then continue; fi
    echo "$p"
    return 0
  done
  log "no free port found"
  return 1
}

# wait_for WHAT PID CHECK...: run CHECK until it succeeds, for up to 30 s,
# failing early if PID has exited (then $OUT/WHAT.log's tail is shown).
wait_for() {
  local what=$1 pid=$2
  shift 2
  for _ in $(seq 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$what exited; its log:"
      tail -n 20 "$OUT/$what.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  log "$what did not answer within 30s; its log:"
  tail -n 20 "$OUT/$what.log" >&2 || true
  return 1
}
