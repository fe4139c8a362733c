package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/evio"
)

// This file is the only one that knows evio: one evio server holds every
// client connection, TCP and WebSocket players alike (a listener each,
// transport.go), and moves their bytes; each connection's protocol says
// what the bytes mean. evio v1.0.8 is frozen and has two traps
// (docs/design.md, "evio"):
//
//  1. Output returned from a Wake replaces the connection's unsent output
//     instead of appending to it. We read the unsent bytes (the unexported
//     field conn.out) on the loop goroutine and return them followed by the
//     new bytes, so nothing is lost or reordered.
//  2. A Close action waits until pending output is written, forever if the
//     client stops reading. We shut the socket down (field conn.fd), which
//     makes the pending write fail and evio close the connection.
//
// And a third: a Wake can be lost (evio_wake.go).
//
// Output does not go through evio at all when it need not: send writes to
// the socket itself when nothing of the connection's is queued anywhere
// (evio_direct.go), and the wake writes to the socket (conn.fd, on the
// loop goroutine) when evio has nothing unsent, giving evio only what the
// socket did not take (evio's own path costs a copy and two epoll_ctl
// calls per write).
//
// evio_test.go pins the fields, so an evio change fails loudly.

type evioTransport struct {
	listeners  []listener // evio's addresses, in order (transport.go)
	reusePort  bool
	loops      int
	outLimit   int           // bytes queued per connection before it is dropped
	stall      time.Duration // output with no progress this long: dropped
	sweepEvery time.Duration // how often the protocols' due runs
	log        *slog.Logger
	addrs      chan []net.Addr // the bound addresses, once serving
	stops      []func()        // run when the server has stopped
	stopping   atomic.Bool
	saidBye    bool // loop 0 only: stopping, goodbyes queued
	mu         sync.Mutex
	peers      map[*evioPeer]struct{}
	lastSweep  time.Time
	wakers     map[uintptr]*loopWaker // per evio loop, under mu (evio_wake.go)
	dups       atomic.Int64           // dups held (evio_direct.go)
	dupMax     int64
	wakes      *atomic.Int64 // Stats.Wakes
	direct     *atomic.Int64 // Stats.DirectWrites
	// afterRead runs on the loop after each read is handed over (the
	// push queue's handOff); nil: nothing.
	afterRead func()
}

// evioPeer is a connection's state shared between the loop goroutine and
// the goroutines that send to it.
type evioPeer struct {
	t     *evioTransport
	c     evio.Conn
	fd    int // the socket (evio's conn.fd), for writes from the loop goroutine
	addr  string
	proto protocol   // set once in Opened
	raw   bool       // proto writes frames as they are (boxStream)
	waker *loopWaker // its loop's (evio_wake.go); nil: Wake alone

	// mu orders every write to the socket: the loop's (wake) and send's
	// direct ones are made holding it.
	mu         sync.Mutex
	pending    []byte // output not yet handed to evio
	woken      bool   // a Wake is on its way; send need not Wake again
	closing    time.Time
	sealed     bool  // the protocol's goodbye is queued: nothing more is sent
	linger     bool  // after its goodbye, the client closes (within closeGrace)
	why        error // the reason of a close (closing), reported once closed
	kill       error // set: shut the socket down at the next wake
	lastIn     atomic.Int64
	unsent     int       // evio's unsent bytes after our last wake: written by the loop under mu, read by the sweep (loop 0)
	stallAt    time.Time // loop only: when output stopped making progress
	shutdown   bool      // set by Closed: evio's fd is gone
	wfd        int       // our dup of the socket for direct writes; -1: none (evio_direct.go)
	idleSweeps int       // sweeps since the last send, while p holds a dup
}

func (p *evioPeer) remoteAddr() string { return p.addr }

func (p *evioPeer) send(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kill != nil || p.shutdown || p.sealed {
		return
	}
	p.idleSweeps = 0
	if p.directLocked() {
		// Nothing of ours is queued anywhere: straight to the socket
		// (evio_direct.go). What it does not take goes the loop's way.
		wire := b
		if !p.raw {
			wire = p.proto.appendFrames(p.pending[:0], b)
		}
		n := writeSocket(p.wfd, wire)
		if n == len(wire) {
			if p.t.direct != nil {
				p.t.direct.Add(1)
			}
			if !p.raw && cap(wire) <= reuseOutput {
				p.pending = wire[:0]
			}
			return
		}
		if len(wire)-n > p.t.outLimit {
			p.kill = errSlowClient
			p.pending = nil
		} else {
			p.pending = append(p.pending[:0], wire[n:]...) // wire may be pending's buffer: a forward copy
		}
		p.startWakeLocked()
		return
	}
	if len(p.pending)+len(b) > p.t.outLimit {
		p.kill = errSlowClient
		p.pending = nil
	} else {
		p.pending = p.proto.appendFrames(p.pending, b)
	}
	p.startWakeLocked()
}

func (p *evioPeer) close() { p.end(nil) }

// end closes the connection for reason (nil: closed by the farm) once
// queued output and the protocol's goodbye are written, or after
// closeGrace.
func (p *evioPeer) end(reason error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.IsZero() {
		p.closing = time.Now()
		p.why = reason
	}
	if !p.sealed && p.kill == nil && !p.shutdown {
		if bye := p.proto.goodbye(reason); bye != nil {
			p.pending = append(p.pending, bye...)
			p.sealed, p.linger = true, true
		}
	}
	p.startWakeLocked()
}

// abort makes the next wake shut the connection down at once.
func (p *evioPeer) abort(reason error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kill == nil {
		p.kill = reason
	}
	p.startWakeLocked()
}

// startWakeLocked wakes p's loop unless a Wake is on its way already
// (wakes coalesce: the wake takes all that is pending). p.mu held.
func (p *evioPeer) startWakeLocked() {
	if p.woken {
		return
	}
	p.woken = true
	p.wakeLocked()
}

func (t *evioTransport) serve(ctx context.Context) error {
	defer func() {
		for _, stop := range t.stops {
			stop()
		}
	}()
	t.peers = make(map[*evioPeer]struct{})
	var ev evio.Events
	ev.NumLoops = t.loops
	ev.LoadBalance = evio.LeastConnections
	ev.Serving = func(s evio.Server) evio.Action {
		t.addrs <- s.Addrs
		return evio.None
	}
	ev.Opened = func(c evio.Conn) ([]byte, evio.Options, evio.Action) {
		p := &evioPeer{t: t, c: c, fd: connFD(c), addr: c.RemoteAddr().String(), waker: t.loopWaker(c), wfd: -1}
		p.lastIn.Store(time.Now().UnixNano())
		// p.proto is set before the core may see p (start): from then on
		// any goroutine may send to it.
		p.proto = t.listeners[c.AddrIndex()].open(p)
		_, p.raw = p.proto.(*boxStream)
		if err := p.proto.start(); err != nil {
			return nil, evio.Options{}, evio.Close
		}
		c.SetContext(p)
		t.mu.Lock()
		t.peers[p] = struct{}{}
		t.mu.Unlock()
		return nil, evio.Options{TCPKeepAlive: time.Minute, ReuseInputBuffer: true}, evio.None
	}
	ev.Closed = func(c evio.Conn, err error) evio.Action {
		p, _ := c.Context().(*evioPeer)
		if p == nil {
			return evio.None
		}
		t.mu.Lock()
		delete(t.peers, p)
		t.mu.Unlock()
		p.mu.Lock()
		p.shutdown = true
		p.dropDupLocked()
		switch {
		case p.kill != nil:
			// The reason we shut the socket down; evio reports what
			// followed from it (EPIPE when output was pending).
			err = p.kill
		case !p.closing.IsZero():
			err = p.why
		}
		p.mu.Unlock()
		if err == nil && t.stopping.Load() {
			err = errShutdown
		}
		p.proto.closed(err)
		return evio.None
	}
	ev.Detached = func(c evio.Conn, _ io.ReadWriteCloser) evio.Action {
		p := c.Context().(*evioPeer)
		t.mu.Lock()
		delete(t.peers, p)
		t.mu.Unlock()
		p.mu.Lock()
		p.shutdown = true
		p.dropDupLocked()
		p.mu.Unlock()
		// The socket is ours now: a net.Conn of its own (a dup in Go's
		// poller), and evio's descriptor closed.
		f := os.NewFile(uintptr(p.fd), p.addr)
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.log.Warn("could not hand a connection over", "addr", p.addr, "err", err)
			return evio.None
		}
		p.proto.handOver(nc)
		return evio.None
	}
	ev.Data = func(c evio.Conn, in []byte) ([]byte, evio.Action) {
		p := c.Context().(*evioPeer)
		if in == nil {
			return p.wake()
		}
		p.lastIn.Store(time.Now().UnixNano())
		out, next, reason := p.proto.read(in)
		if t.afterRead != nil {
			t.afterRead()
		}
		switch next {
		case closeNow:
			p.mu.Lock()
			p.kill = reason
			p.mu.Unlock()
			return nil, evio.Close
		case handOver:
			return nil, evio.Detach
		case keepOpen:
			if len(out) == 0 {
				return nil, evio.None
			}
		}
		return p.answer(out, next, reason)
	}
	ev.Tick = func() (time.Duration, evio.Action) {
		if t.stopping.Load() {
			if !t.saidBye && t.goodbyes() {
				return 50 * time.Millisecond, evio.None
			}
			return 0, evio.Shutdown
		}
		t.sweep()
		return 100 * time.Millisecond, evio.None
	}
	go func() {
		<-ctx.Done()
		t.stopping.Store(true)
	}()
	t.mu.Lock()
	t.wakers = make(map[uintptr]*loopWaker)
	t.mu.Unlock()
	if t.dupMax == 0 {
		t.dupMax = dupBudget()
	}
	addrs := make([]string, len(t.listeners))
	for i, l := range t.listeners {
		addrs[i] = "tcp://" + l.addr
		if t.reusePort {
			addrs[i] += "?reuseport=true"
		}
	}
	err := evio.Serve(ev, addrs...)
	t.closeWakers()
	return err
}

// answer writes what a protocol's read answered (a handshake's answer, a
// pong, a close frame) behind what is queued, and carries out a close
// (closeAfter, lingerAfter). Loop goroutine, from a read: evio holds
// nothing unsent then, so the socket takes it at once if it can.
func (p *evioPeer) answer(out []byte, next after, reason error) ([]byte, evio.Action) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kill != nil || p.shutdown {
		return nil, evio.Close
	}
	action := evio.None
	if next == closeAfter || next == lingerAfter {
		// out ends with the protocol's goodbye: nothing may follow it.
		// The sweep shuts the socket down if the client does not read it,
		// or does not close after it, within closeGrace.
		if p.closing.IsZero() {
			p.closing = time.Now()
			p.why = reason
		}
		p.sealed = true
		p.linger = next == lingerAfter
		p.dropDupLocked()
		if next == closeAfter {
			action = evio.Close
		}
	}
	buf := append(p.pending, out...)
	p.pending = nil
	n := writeSocket(p.fd, buf)
	rest := buf[n:]
	p.unsent = len(rest)
	if len(rest) == 0 {
		if action == evio.None && cap(buf) <= reuseOutput {
			p.pending = buf[:0]
		}
		return nil, action
	}
	return rest, action
}

// peerList is a copy of the connections open now, to walk without the
// lock.
func (t *evioTransport) peerList() []*evioPeer {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*evioPeer, 0, len(t.peers))
	for p := range t.peers {
		out = append(out, p)
	}
	return out
}

// goodbyes closes the connections left when the server stops, each with
// its protocol's goodbye (WebSocket: 1001) after its queued output; false
// if there are none. Loop 0 (Tick).
func (t *evioTransport) goodbyes() bool {
	t.saidBye = true
	bye := t.peerList()
	for _, p := range bye {
		p.end(errShutdown)
	}
	return len(bye) > 0
}

// listenAddrs names the listeners for errors: "tcp :28000, ws :28080".
func (t *evioTransport) listenAddrs() string {
	var b strings.Builder
	for i, l := range t.listeners {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.name + " " + l.addr)
	}
	return b.String()
}

// wake runs on the connection's loop goroutine after a Wake: it hands the
// queued output to evio behind what evio has not written yet, and carries
// out closes. It holds p.mu throughout, so send's direct writes wait for
// it and then see what it left in evio (unsent).
func (p *evioPeer) wake() ([]byte, evio.Action) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.pending
	p.pending = nil
	p.woken = false
	kill := p.kill
	closing, linger, why := p.closing, p.linger, p.why
	closeNow := !closing.IsZero() && !linger // a lingering close waits for the client

	unsent := unsentOutput(p.c)
	now := time.Now()
	if kill == nil {
		switch {
		case len(unsent)+len(out) > p.t.outLimit:
			kill = errSlowClient
		case len(unsent) == 0 || len(unsent) < p.unsent:
			p.stallAt = time.Time{} // progress
		case p.stallAt.IsZero():
			p.stallAt = now
		case p.t.stall > 0 && now.Sub(p.stallAt) > p.t.stall:
			kill = errSlowClient
		}
		if !closing.IsZero() && now.Sub(closing) > closeGrace {
			kill = errShutdown
			if why != nil {
				kill = why
			}
		}
	}
	if kill != nil {
		p.kill = kill
		p.dropDupLocked()
		shutdownSocket(p.c)
		return nil, evio.Close
	}
	if closing.IsZero() {
		p.takeDupLocked() // so that the next sends need no Wake (evio_direct.go)
	}
	if len(unsent) == 0 && len(out) > 0 {
		n := writeSocket(p.fd, out)
		if n == len(out) {
			p.unsent = 0
			if cap(out) <= reuseOutput {
				p.pending = out[:0] // written: keep the buffer for the next sends
			}
			if closeNow {
				return nil, evio.Close
			}
			return nil, evio.None
		}
		out = out[n:]
	} else if len(out) > 0 {
		out = append(unsent[:len(unsent):len(unsent)], out...)
	} else {
		out = unsent
	}
	p.unsent = len(out)
	if closeNow {
		return out, evio.Close
	}
	if len(unsent) > 0 && len(out) == len(unsent) {
		// Nothing new: returning nil keeps evio's own buffer as it is.
		return nil, evio.None
	}
	return out, evio.None
}

// sweep runs on loop 0 about every 100 ms, and does its work every
// sweepEvery: it wakes connections that are idle, closing, or whose output
// may be stuck, so their own loop acts, and queues what their protocol
// sends on a timer (pings).
func (t *evioTransport) sweep() {
	now := time.Now()
	if now.Sub(t.lastSweep) < t.sweepEvery {
		return
	}
	t.lastSweep = now
	var check []*evioPeer
	for _, p := range t.peerList() {
		send, end := p.proto.due(now, time.Unix(0, p.lastIn.Load()))
		if end != nil {
			check = append(check, p)
			p.mu.Lock()
			if p.kill == nil {
				p.kill = end
			}
			p.mu.Unlock()
			continue
		}
		p.mu.Lock()
		if send != nil && !p.sealed && p.kill == nil {
			p.pending = append(p.pending, send...)
		}
		if !p.closing.IsZero() || p.unsent > 0 || len(p.pending) > 0 {
			check = append(check, p)
		}
		if p.wfd >= 0 {
			// A connection that got nothing for a while gives its dup
			// back (evio_direct.go); the next wake takes one again.
			if p.idleSweeps++; p.idleSweeps > dupIdleSweeps {
				p.dropDupLocked()
			}
		}
		p.mu.Unlock()
	}
	// These wakes leave p.woken alone, so a send meanwhile wakes the
	// connection itself.
	for _, p := range check {
		p.mu.Lock()
		p.wakeLocked()
		p.mu.Unlock()
	}
}

// unsentOutput returns the bytes evio has not written to the socket yet.
// Only call it on the connection's loop goroutine.
func unsentOutput(c evio.Conn) []byte {
	return reflect.ValueOf(c).Elem().FieldByName("out").Bytes()
}

// reuseOutput is the largest output buffer a connection keeps for its
// next sends: enough for a burst of replies, small enough that idle
// connections stay cheap.
const reuseOutput = 4 << 10

// writeSocket writes b to the connection's socket without blocking and
// returns how much it took; on an error it returns 0 and leaves the rest
// to evio, whose own write then reports it. Loop goroutine only.
func writeSocket(fd int, b []byte) int {
	n, err := syscall.Write(fd, b)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// shutdownSocket makes evio's pending write fail so it closes the
// connection even when the client reads nothing. Loop goroutine only.
func shutdownSocket(c evio.Conn) {
	_ = syscall.Shutdown(connFD(c), syscall.SHUT_RDWR)
}

// connFD returns the connection's socket (evio's unexported conn.fd).
func connFD(c evio.Conn) int {
	return int(reflect.ValueOf(c).Elem().FieldByName("fd").Int())
}
