// Package bench is maple's load generator: it drives a gateway, or anything
// else that speaks Box frames (docs/protocol.md section 1), with pipelined
// requests and measures what comes back: throughput, latency percentiles,
// and the correctness of every reply.
//
// # How a connection works
//
// Each connection is a raw net.Conn with two goroutines. The reader decodes
// replies with box.Reader, checks each one (its sn was sent and is answered
// once, ret is 0, for the echo cmd the body is the one sent), records its
// latency and hands a credit to the writer. The writer gathers every credit
// that is waiting and turns them into one write of that many frames, so a
// connection keeps Options.Depth requests in flight with few syscalls, and
// the bench is not the bottleneck of what it measures. Reading and writing
// are separate so a large Depth x Size can never deadlock against a server
// that also waits for its writes. With Options.WS the connection speaks
// WebSocket to a gateway's --ws-listen (ws.go): one request per binary
// message, several messages per write, and every message back checked to
// hold exactly one frame.
//
// # What is counted
//
// The counts of a Result cover the whole run, warmup included, so a wrong or
// lost reply is never forgiven and Sent = Answered + Unanswered. Throughput
// and latency cover only the measured window that follows the warmup: a
// request's latency is taken from just before its write to the decoding of
// its reply, and kept in a log-bucketed histogram whose buckets are under 1%
// wide, enough for p99.9.
//
// ServeReference is the yardstick: an echo server with no Redis, so the
// ratio of a farm's numbers to its numbers shows what the farm's hops cost.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/maple-farm/maple/box"
)

// Defaults for the zero fields of Options; `maple bench` uses them as its
// flags' defaults.
const (
	DefaultConns       = 64
	DefaultDepth       = 8
	DefaultDuration    = 10 * time.Second
	DefaultSize        = 64
	DefaultCmd         = 1 // the demo game's echo
	DefaultWarmup      = time.Second
	DefaultGrace       = 5 * time.Second
	DefaultDialTimeout = 5 * time.Second
)

// Options configure Run. Zero values mean the defaults above.
type Options struct {
	// Addr is the host:port to dial (required), or several separated by
	// commas (several gateways of one farm): connection i dials the
	// (i mod n)th, so the connections spread round-robin over them.
	Addr string
	// Conns is the number of TCP connections.
	Conns int
	// Depth is the number of requests each connection keeps in flight
	// (pipelined on the one connection).
	Depth int
	// Duration is the length of the measured window, after the warmup.
	Duration time.Duration
	// Size is the body length of each request in bytes; -1 means empty.
	Size int
	// Cmd is the route of every request. For DefaultCmd (echo) each reply's
	// body must equal the request's; for other cmds bodies are not checked.
	Cmd int32
	// Warmup is how long requests run before the measured window starts;
	// -1 means none.
	Warmup time.Duration
	// Grace is how long, after the window ends, requests still in flight
	// may take to be answered before they count as Unanswered.
	Grace time.Duration
	// DialTimeout bounds the dial of each connection.
	DialTimeout time.Duration
	// Progress, if set, is called about once a second from Run's goroutine
	// with the totals so far. It should return quickly.
	Progress func(Progress)
	// WS speaks WebSocket to Addr (the gateway's --ws-listen): each
	// request is one binary message, and every message back must be
	// exactly one frame (ws.go).
	WS bool
	// WSPath is the WebSocket endpoint's path; "" means DefaultWSPath.
	WSPath string
	// Requests is how many requests each connection sends; 0 means no
	// limit. A connection that has sent them and got their replies stays
	// open, idle, until the window ends: with 1, Run holds Conns idle
	// connections that each did one round trip (to measure what an idle
	// player costs the server).
	Requests int
	// Marks, if set, is called once the run is over for instants during
	// it (a worker killed, a gateway rolled); Result.Stalls tells, for
	// each, how long after it the last request sent before it was
	// answered.
	Marks func() ([]time.Time, error)
}

func (o Options) withDefaults() Options {
	if o.Conns <= 0 {
		o.Conns = DefaultConns
	}
	if o.Depth <= 0 {
		o.Depth = DefaultDepth
	}
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	switch {
	case o.Size == 0:
		o.Size = DefaultSize
	case o.Size < 0:
		o.Size = 0
	}
	if o.Cmd == 0 {
		o.Cmd = DefaultCmd
	}
	switch {
	case o.Warmup == 0:
		o.Warmup = DefaultWarmup
	case o.Warmup < 0:
		o.Warmup = 0
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.WSPath == "" {
		o.WSPath = DefaultWSPath
	}
	if o.Requests < 0 {
		o.Requests = 0
	}
	return o
}

// Progress is the state of a running bench, given to Options.Progress.
type Progress struct {
	Phase         string        // "warmup", "run" or "drain" (waiting for the last replies)
	Elapsed       time.Duration // since the start, warmup included
	Sent          int64         // requests written so far
	Answered      int64         // replies to them so far
	Busy          int64         // replies with ret -10002
	Failed        int64         // replies with another non-zero ret
	Mismatches    int64         // wrong replies (see Result.Mismatches)
	ConnErrors    int64         // connections lost
	InFlight      int64         // Sent - Answered
	RepliesPerSec float64       // replies of the last interval, per second
}

// Result is the outcome of Run. The counts cover the whole run, warmup
// included; RepliesPerSec and the percentiles cover the measured window.
// Durations are in nanoseconds in JSON.
type Result struct {
	Addr  string `json:"addr"`
	Conns int    `json:"conns"`
	Depth int    `json:"depth"`
	Size  int    `json:"size"`
	Cmd   int32  `json:"cmd"`
	// WS is set when the run spoke WebSocket.
	WS bool `json:"ws,omitempty"`

	// Sent is the number of requests written.
	Sent int64 `json:"sent"`
	// Answered is the number of requests that got their reply, whatever
	// its ret.
	Answered int64 `json:"answered"`
	// Busy is the number of replies with ret -10002 (farm busy).
	Busy int64 `json:"busy"`
	// Failed is the number of replies with a non-zero ret other than
	// -10002.
	Failed int64 `json:"failed"`
	// Mismatches is the number of wrong replies: a body that is not the
	// one sent (echo only), a cmd that is not the request's, or an sn that
	// is not in flight (never sent, or already answered).
	Mismatches int64 `json:"mismatches"`
	// Duplicates is the number of second replies to an sn already
	// answered (the farm handled a frame twice: allowed only after a
	// worker was killed).
	Duplicates int64 `json:"duplicates"`
	// Unanswered is the number of requests never answered: in flight when
	// their connection failed, or when the window ended and not answered
	// within Options.Grace.
	Unanswered int64 `json:"unanswered"`
	// Pushes is the number of frames with sn 0 (pushes, not replies).
	Pushes int64 `json:"pushes"`
	// ConnErrors is the number of connections that failed to dial or broke.
	ConnErrors int64 `json:"conn_errors"`

	// Duration is the length of the measured window.
	Duration time.Duration `json:"duration_ns"`
	// RepliesPerSec is the number of good replies (ret 0, right body)
	// received during the measured window, per second.
	RepliesPerSec float64 `json:"replies_per_sec"`
	// Latencies of the requests sent during the window and answered with
	// ret 0 and the right body.
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
	// Stalls holds, for each of Options.Marks in order, how long after it
	// the last request sent before it was answered (to 1 ms): the stall
	// the players saw. Requests never answered do not count (Unanswered
	// does).
	Stalls []time.Duration `json:"stalls_ns,omitempty"`
}

// Run dials opts.Conns connections to opts.Addr (round-robin over its
// addresses if it lists several), keeps opts.Depth requests
// in flight on each for opts.Warmup plus opts.Duration, waits up to
// opts.Grace for the last replies, and reports. It returns an error if no
// connection could be dialed; if ctx ends first it stops at once and
// returns the partial Result with ctx's error.
func Run(ctx context.Context, opts Options) (Result, error) {
	o := opts.withDefaults()
	addrs, err := splitAddrs(o.Addr)
	if err != nil {
		return Result{}, err
	}
	res := Result{Addr: o.Addr, Conns: o.Conns, Depth: o.Depth, Size: o.Size, Cmd: o.Cmd, WS: o.WS}

	var conns []*conn
	var dialErrs int64
	var firstErr error
	d := net.Dialer{Timeout: o.DialTimeout}
	for i := 0; i < o.Conns; i++ {
		c, err := dial(ctx, &d, i, addrs[i%len(addrs)], o)
		if err != nil {
			if ctx.Err() != nil {
				closeAll(conns)
				return res, ctx.Err()
			}
			dialErrs++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		conns = append(conns, c)
	}
	res.ConnErrors = dialErrs
	if len(conns) == 0 {
		return res, fmt.Errorf("bench: dial %s: %w", o.Addr, firstErr)
	}

	r := &run{
		start:    time.Now(),
		warmEnd:  o.Warmup,
		end:      o.Warmup + o.Duration,
		stopSend: make(chan struct{}),
	}
	if o.Marks != nil {
		r.stalls = newStalls(r.end)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		c.run = r
		wg.Add(2)
		go func() { defer wg.Done(); c.write() }()
		go func() { defer wg.Done(); c.read() }()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	endTimer := time.NewTimer(r.end)
	defer endTimer.Stop()
	var forceClose <-chan time.Time // after the grace
	var lastReplies int64
	lastTick := time.Now()
	var cancelled error
loop:
	for {
		select {
		case <-allDone:
			break loop
		case <-ctx.Done():
			cancelled = ctx.Err()
			r.stop()
			closeAll(conns)
			<-allDone
			break loop
		case <-endTimer.C:
			// Each writer, as it stops, gives its reader the grace (or
			// wakes it at once if nothing is in flight).
			r.stop()
			// A writer stuck in Write (a server that stopped reading) is
			// only freed by closing its connection.
			forceClose = time.After(o.Grace + time.Second)
		case <-forceClose:
			closeAll(conns)
		case now := <-tick.C:
			if o.Progress == nil {
				continue
			}
			p := progress(conns, dialErrs)
			p.Elapsed = now.Sub(r.start)
			switch {
			case p.Elapsed < r.warmEnd:
				p.Phase = "warmup"
			case p.Elapsed < r.end:
				p.Phase = "run"
			default:
				p.Phase = "drain"
			}
			if dt := now.Sub(lastTick).Seconds(); dt > 0 {
				p.RepliesPerSec = float64(p.Answered-lastReplies) / dt
			}
			lastReplies, lastTick = p.Answered, now
			o.Progress(p)
		}
	}

	var h histogram
	var windowOK int64
	for _, c := range conns {
		res.Sent += c.sent.Load()
		res.Answered += c.answered.Load()
		res.Busy += c.busy.Load()
		res.Failed += c.failed.Load()
		res.Mismatches += c.mismatches.Load()
		res.Duplicates += c.duplicates.Load()
		res.Pushes += c.pushes.Load()
		res.Unanswered += int64(len(c.inflight))
		if c.broken.Load() {
			res.ConnErrors++
		}
		windowOK += c.windowOK
		h.merge(&c.hist)
	}
	if o.Marks != nil {
		marks, err := o.Marks()
		if err != nil {
			return res, fmt.Errorf("bench: marks: %w", err)
		}
		for _, m := range marks {
			res.Stalls = append(res.Stalls, r.stalls.after(m.Sub(r.start)).Round(stallBucket))
		}
	}
	res.Duration = o.Duration
	if cancelled != nil {
		res.Duration = max(0, min(time.Since(r.start), r.end)-r.warmEnd)
	}
	if res.Duration > 0 {
		res.RepliesPerSec = float64(windowOK) / res.Duration.Seconds()
	}
	res.P50 = h.quantile(0.50)
	res.P90 = h.quantile(0.90)
	res.P99 = h.quantile(0.99)
	res.P999 = h.quantile(0.999)
	res.Max = h.max
	return res, cancelled
}

// splitAddrs is the addresses of Options.Addr: one, or several separated
// by commas (spaces around them ignored). An empty one is an error.
func splitAddrs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("bench: no address")
	}
	addrs := strings.Split(s, ",")
	for i, a := range addrs {
		addrs[i] = strings.TrimSpace(a)
		if addrs[i] == "" {
			return nil, fmt.Errorf("bench: empty address in %q", s)
		}
	}
	return addrs, nil
}

// dial opens connection i to addr: TCP, and the WebSocket handshake with
// Options.WS.
func dial(ctx context.Context, d *net.Dialer, i int, addr string, o Options) (*conn, error) {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if !o.WS {
		return newConn(i, nc, box.NewReader(nc, 0).Next, nc, o), nil
	}
	br, err := dialWS(nc, addr, o.WSPath, o.DialTimeout)
	if err != nil {
		nc.Close()
		return nil, err
	}
	w := &wsWriter{nc: nc}
	return newConn(i, nc, newWSReader(br, w.pong).Next, w, o), nil
}

func progress(conns []*conn, dialErrs int64) Progress {
	p := Progress{ConnErrors: dialErrs}
	for _, c := range conns {
		p.Sent += c.sent.Load()
		p.Answered += c.answered.Load()
		p.Busy += c.busy.Load()
		p.Failed += c.failed.Load()
		p.Mismatches += c.mismatches.Load()
		if c.broken.Load() {
			p.ConnErrors++
		}
	}
	p.InFlight = p.Sent - p.Answered
	return p
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		c.close()
	}
}

// run is the timing shared by the connections of one Run. Times are
// offsets from start, read from the monotonic clock.
type run struct {
	start    time.Time
	warmEnd  time.Duration // the measured window is [warmEnd, end)
	end      time.Duration
	stopSend chan struct{} // closed at end (or on cancel): writers stop
	stopOnce sync.Once
	stalls   *stalls // with Options.Marks
}

func (r *run) now() time.Duration { return time.Since(r.start) }

func (r *run) stop() { r.stopOnce.Do(func() { close(r.stopSend) }) }
