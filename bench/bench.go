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
// that also waits for its writes.
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
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"os"
	"sync"
	"sync/atomic"
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
	// Addr is the host:port to dial (required).
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
}

// Run dials opts.Conns connections to opts.Addr, keeps opts.Depth requests
// in flight on each for opts.Warmup plus opts.Duration, waits up to
// opts.Grace for the last replies, and reports. It returns an error if no
// connection could be dialed; if ctx ends first it stops at once and
// returns the partial Result with ctx's error.
func Run(ctx context.Context, opts Options) (Result, error) {
	o := opts.withDefaults()
	if o.Addr == "" {
		return Result{}, errors.New("bench: no address")
	}
	res := Result{Addr: o.Addr, Conns: o.Conns, Depth: o.Depth, Size: o.Size, Cmd: o.Cmd}

	var conns []*conn
	var dialErrs int64
	var firstErr error
	d := net.Dialer{Timeout: o.DialTimeout}
	for i := 0; i < o.Conns; i++ {
		nc, err := d.DialContext(ctx, "tcp", o.Addr)
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
		conns = append(conns, newConn(i, nc, o))
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
}

func (r *run) now() time.Duration { return time.Since(r.start) }

func (r *run) stop() { r.stopOnce.Do(func() { close(r.stopSend) }) }

// sent is what a connection remembers of a request in flight.
type sent struct {
	at       time.Duration // offset of the write
	measured bool          // written during the measured window
}

// conn is one connection: write owns sn and the write buffer, read owns the
// histogram and windowOK; inflight and done are shared under mu. The
// counters are atomic so Run can report progress while they move.
type conn struct {
	id    int
	nc    net.Conn
	run   *run
	depth int
	cmd   int32
	echo  bool
	grace time.Duration
	tmpl  []byte // the body pattern; its first 8 bytes are stamped per request

	credits chan struct{} // one per free in-flight slot
	dead    chan struct{} // closed when the connection is closed
	deadOne sync.Once
	closing atomic.Bool // closed by Run: later I/O errors are not ConnErrors
	broken  atomic.Bool // failed by itself: counted once in ConnErrors

	mu       sync.Mutex
	inflight map[uint32]sent
	done     bool // the writer has stopped

	sent, answered, busy, failed, mismatches, pushes, duplicates atomic.Int64
	maxSent                                                      atomic.Uint32 // highest sn written

	// Reader-owned.
	hist     histogram
	windowOK int64
}

func newConn(id int, nc net.Conn, o Options) *conn {
	c := &conn{
		id: id, nc: nc, depth: o.Depth, cmd: o.Cmd, echo: o.Cmd == DefaultCmd, grace: o.Grace,
		tmpl:     make([]byte, o.Size),
		credits:  make(chan struct{}, o.Depth),
		dead:     make(chan struct{}),
		inflight: make(map[uint32]sent, o.Depth),
	}
	for i := range c.tmpl {
		c.tmpl[i] = byte('a' + (id+i)%26)
	}
	for range o.Depth {
		c.credits <- struct{}{}
	}
	return c
}

// close closes the connection on Run's behalf.
func (c *conn) close() {
	c.closing.Store(true)
	c.shut()
}

func (c *conn) shut() {
	c.deadOne.Do(func() {
		close(c.dead)
		c.nc.Close()
	})
}

// fail records that the connection broke by itself, then closes it.
func (c *conn) fail() {
	if !c.closing.Load() {
		c.broken.Store(true)
	}
	c.shut()
}

// stamp writes the per-request part of a body: sn and connection id, so a
// reply that went to the wrong request or connection does not match.
func (c *conn) stamp(body []byte, sn uint32) {
	var s [8]byte
	binary.BigEndian.PutUint32(s[0:4], sn)
	binary.BigEndian.PutUint32(s[4:8], uint32(c.id))
	copy(body, s[:])
}

func (c *conn) bodyOK(got []byte, sn uint32) bool {
	if len(got) != len(c.tmpl) {
		return false
	}
	var s [8]byte
	binary.BigEndian.PutUint32(s[0:4], sn)
	binary.BigEndian.PutUint32(s[4:8], uint32(c.id))
	n := min(8, len(got))
	return string(got[:n]) == string(s[:n]) && string(got[n:]) == string(c.tmpl[n:])
}

// write keeps the pipeline full: it waits for a free slot, takes every
// other free slot that is waiting, and writes that many frames at once.
func (c *conn) write() {
	defer func() {
		c.mu.Lock()
		c.done = true
		empty := len(c.inflight) == 0
		c.mu.Unlock()
		if empty {
			c.nc.SetReadDeadline(time.Now()) // nothing to wait for: wake the reader
		} else {
			c.nc.SetReadDeadline(time.Now().Add(c.grace))
		}
	}()
	var (
		sn   uint32
		sns  = make([]uint32, 0, c.depth)
		buf  = make([]byte, 0, c.depth*(box.HeaderLen+len(c.tmpl)))
		body = make([]byte, len(c.tmpl))
	)
	copy(body, c.tmpl)
	for {
		select {
		case <-c.run.stopSend:
			return
		case <-c.dead:
			return
		case <-c.credits:
		}
		n := 1
	gather:
		for n < c.depth {
			select {
			case <-c.credits:
				n++
			default:
				break gather
			}
		}
		buf, sns = buf[:0], sns[:0]
		for range n {
			sn++
			if sn == 0 { // sn 0 marks pushes
				sn++
			}
			sns = append(sns, sn)
			c.maxSent.Store(sn)
			c.stamp(body, sn)
			buf = box.Append(buf, c.cmd, 0, sn, body)
		}
		at := c.run.now()
		if at >= c.run.end {
			return
		}
		s := sent{at: at, measured: at >= c.run.warmEnd}
		c.mu.Lock()
		for _, sn := range sns {
			c.inflight[sn] = s
		}
		c.mu.Unlock()
		c.sent.Add(int64(n))
		if _, err := c.nc.Write(buf); err != nil {
			c.fail()
			return
		}
	}
}

// read checks every reply until the writer has stopped and nothing is in
// flight, the grace deadline passes, or the connection breaks.
func (c *conn) read() {
	r := box.NewReader(c.nc, 0)
	for {
		b, err := r.Next()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.mu.Lock()
				done := c.done
				c.mu.Unlock()
				if done {
					// Either all answered, or the grace is over: what is
					// left in flight is Unanswered.
					c.shut()
					return
				}
			}
			c.fail()
			return
		}
		at := c.run.now()
		if b.SN == 0 {
			c.pushes.Add(1)
			continue
		}
		c.mu.Lock()
		s, ok := c.inflight[b.SN]
		if ok {
			delete(c.inflight, b.SN)
		}
		finished := c.done && len(c.inflight) == 0
		c.mu.Unlock()
		if !ok {
			if b.SN <= c.maxSent.Load() {
				c.duplicates.Add(1) // answered before
			} else {
				c.mismatches.Add(1)
			}
			continue
		}
		select {
		case c.credits <- struct{}{}:
		default:
		}
		c.answered.Add(1)
		switch {
		case b.Cmd != c.cmd:
			c.mismatches.Add(1)
		case b.Ret == box.RetBusy:
			c.busy.Add(1)
		case b.Ret != box.RetOK:
			c.failed.Add(1)
		case c.echo && !c.bodyOK(b.Body, b.SN):
			c.mismatches.Add(1)
		default:
			if s.measured {
				c.hist.record(at - s.at)
			}
			if at >= c.run.warmEnd && at < c.run.end {
				c.windowOK++
			}
		}
		if finished {
			c.shut()
			return
		}
	}
}

// histogram counts durations in log-linear buckets: exact below 256 ns,
// then 128 buckets per power of two, so a bucket is under 0.8% wide.
// Durations of 2^40 ns (18 minutes) and more share the last bucket.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxBits = 40
	histBuckets = (histMaxBits-histSubBits)*histSub + histSub
)

func histIndex(d time.Duration) int {
	v := uint64(max(d, 0))
	shift := bits.Len64(v) - (histSubBits + 1)
	if shift <= 0 {
		return int(v)
	}
	i := shift*histSub + int(v>>uint(shift))
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i.
func histValue(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	shift := i/histSub - 1
	lo := uint64(i-shift*histSub) << uint(shift)
	return time.Duration(lo + (uint64(1)<<uint(shift))/2)
}

func (h *histogram) record(d time.Duration) {
	h.counts[histIndex(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0..1), never above max; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var cum uint64
	for i, n := range h.counts {
		cum += n
		if cum >= rank {
			return min(histValue(i), h.max)
		}
	}
	return h.max
}

// ServeReference serves ln as the bench's reference: an echo server with no
// Redis and no routes. Each connection gets a goroutine that reads frames
// with box.Reader and answers each with the same cmd, sn and body and ret 0;
// replies are buffered and flushed only when the read buffer is empty, so a
// pipelined client gets them in batches. It closes ln and every connection
// and returns nil when ctx ends; any other Accept error is returned.
func ServeReference(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, nil)
}

// serve is ServeReference with a hook for tests that play a broken server:
// edit, if set, may change each reply before it is written, and returns how
// many copies of it to write (0 drops it); a negative count hangs up.
func serve(ctx context.Context, ln net.Listener, edit func(*box.Box) int) error {
	var (
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
		wg     sync.WaitGroup
	)
	shutdown := func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			closed = true
			ln.Close()
			for nc := range conns {
				nc.Close()
			}
		}
	}
	defer context.AfterFunc(ctx, shutdown)()
	for {
		nc, err := ln.Accept()
		if err != nil {
			shutdown()
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: accept: %w", err)
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			nc.Close()
			continue
		}
		conns[nc] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			echo(nc, edit)
			mu.Lock()
			delete(conns, nc)
			mu.Unlock()
			nc.Close()
		}()
	}
}

// echo answers one connection until it ends or sends a bad frame.
func echo(nc net.Conn, edit func(*box.Box) int) {
	w := bufio.NewWriterSize(nc, 64<<10)
	r := box.NewReader(flushingReader{nc: nc, w: w}, 0)
	var frame []byte
	for {
		b, err := r.Next()
		if err != nil {
			return
		}
		b.Ret = box.RetOK
		copies := 1
		if edit != nil {
			if copies = edit(&b); copies < 0 {
				return
			}
		}
		frame = box.Append(frame[:0], b.Cmd, b.Ret, b.SN, b.Body)
		for range copies {
			if _, err := w.Write(frame); err != nil {
				return
			}
		}
	}
}

// flushingReader flushes w before every read from the socket. box.Reader
// reads from it only when its buffer holds no whole frame, so replies go
// out when the requests at hand are all answered.
type flushingReader struct {
	nc net.Conn
	w  *bufio.Writer
}

func (f flushingReader) Read(p []byte) (int, error) {
	if f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.nc.Read(p)
}
