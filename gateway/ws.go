package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/maple-farm/maple/box"
)

// This file is the WebSocket transport (Options.WSListen): players in
// browsers and mini-programs, who cannot open raw TCP sockets, join the
// same farm through it. It sits behind the same seam as evio.go (peer,
// events), so a WebSocket player is a connection like any other: same
// ids, sessions, groups, triggers, ordering, slow-client policy and stats.
//
// The wire: each binary message carries exactly one Box frame, both ways.
// A text message, a message holding part of a frame or several frames, or
// a bad frame closes that connection with a close code and a log line.
// Messages are capped at MaxFrame bytes (close code 1009 past it).
//
// Per connection, one goroutine (the HTTP handler's) reads messages and
// reports opened, data... and closed to the core, in order; one goroutine
// writes: send only queues (bounded by OutBuffer) and never blocks. The
// writer also pings the client every WSPing and closes a connection from
// which nothing, not even a pong, came for WSIdleTimeout.

// Defaults of the WebSocket options.
const (
	DefaultWSPath        = "/ws"
	DefaultWSPing        = 20 * time.Second
	DefaultWSIdleTimeout = 60 * time.Second
)

// Close codes a WebSocket client sees (RFC 6455 section 7.4.1), besides
// 1009 (message over MaxFrame).
const (
	WSCloseNormal    = websocket.StatusNormalClosure   // 1000: closed by the farm (kick, close_users, drain)
	WSCloseGoingAway = websocket.StatusGoingAway       // 1001: the gateway stops
	WSCloseText      = websocket.StatusUnsupportedData // 1003: a text message
	WSCloseBadFrame  = websocket.StatusPolicyViolation // 1008: not exactly one valid Box frame
	WSCloseTooBig    = websocket.StatusMessageTooBig   // 1009: a message over MaxFrame
	WSCloseFull      = websocket.StatusTryAgainLater   // 1013: at MaxConns
)

// Why a WebSocket message was refused.
var (
	errWSText    = errors.New("gateway: websocket text message (binary Box frames only)")
	errWSPartial = errors.New("gateway: websocket message holds part of a frame")
	errWSSeveral = errors.New("gateway: websocket message holds more than one frame")
)

// wsRefusal is a bad message: the reason a connection ends and its close
// code.
type wsRefusal struct {
	code   websocket.StatusCode
	reason string // sent to the client (at most 123 bytes)
	err    error
}

func (r *wsRefusal) Error() string { return r.err.Error() }
func (r *wsRefusal) Unwrap() error { return r.err }

// wsTransport serves WebSocket players on one HTTP listener; Options.Web,
// if set, is served on every other path of it.
type wsTransport struct {
	ln       net.Listener
	path     string
	origins  []string
	maxFrame int
	outLimit int
	stall    time.Duration
	ping     time.Duration // 0: no pings
	idle     time.Duration // 0: never idle
	web      http.Handler
	ev       events
	bad      func(c *conn, err error) // counts and logs a refused message
	log      *slog.Logger

	srv      *http.Server
	mu       sync.Mutex
	peers    map[*wsPeer]struct{}
	stopping bool
	handlers sync.WaitGroup
}

// listenWS binds Options.WSListen; it returns nil when the option is
// empty. Run calls it before Ready, so WSAddr is valid once Ready.
func (s *Server) listenWS() (*wsTransport, error) {
	o := s.opts
	if o.WSListen == "" {
		return nil, nil
	}
	t := &wsTransport{
		path: o.WSPath, origins: o.WSOrigins, maxFrame: o.MaxFrame, outLimit: o.OutBuffer,
		stall: o.WriteStall, ping: o.WSPing, idle: o.WSIdleTimeout, web: o.Web,
		ev: s, bad: s.badMessage, log: s.log.With("transport", "ws"),
		peers: make(map[*wsPeer]struct{}),
	}
	if t.path == "" {
		t.path = DefaultWSPath
	}
	switch {
	case t.ping == 0:
		t.ping = DefaultWSPing
	case t.ping < 0:
		t.ping = 0
	}
	switch {
	case t.idle == 0:
		t.idle = DefaultWSIdleTimeout
	case t.idle < 0:
		t.idle = 0
	}
	lc := net.ListenConfig{}
	if o.ReusePort {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", o.WSListen)
	if err != nil {
		return nil, fmt.Errorf("gateway: websocket listen %s: %w", o.WSListen, err)
	}
	t.ln = ln
	s.wsAddr = ln.Addr()
	s.log.Info("websocket listening", "addr", ln.Addr().String(), "path", t.path, "web", o.Web != nil)
	return t, nil
}

// WSAddr returns the bound WebSocket listen address (after Ready), or nil
// when Options.WSListen is empty.
func (s *Server) WSAddr() net.Addr { return s.wsAddr }

// badMessage counts and logs a WebSocket message that was not exactly one
// valid frame; its connection is closed.
func (s *Server) badMessage(c *conn, err error) {
	s.Stats.BadFrames.Add(1)
	s.log.Warn("bad websocket message: closing connection", "conn", c.id, "addr", c.addr, "err", err)
}

// start serves WebSocket players until serveCtx ends; when ctx (Run's)
// ends it stops accepting, so that a drain only serves the players it has.
// The returned function waits until every connection was closed and
// reported. t may be nil (no WebSocket listener): then it does nothing.
func (t *wsTransport) start(ctx, serveCtx context.Context) (wait func()) {
	if t == nil {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc(t.path, t.handle)
	if t.web != nil {
		mux.Handle("/", t.web)
	}
	t.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute, // between page requests; upgraded connections have their own
		ErrorLog:          slog.NewLogLogger(t.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, rawConnKey{}, c)
		},
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := t.srv.Serve(t.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.log.Error("websocket server stopped", "err", err)
		}
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			_ = t.ln.Close() // stop accepting; the drain goes on
			<-serveCtx.Done()
		case <-serveCtx.Done():
		}
		_ = t.srv.Close() // the listener and page requests; not the upgraded connections
		t.mu.Lock()
		t.stopping = true
		peers := make([]*wsPeer, 0, len(t.peers))
		for p := range t.peers {
			peers = append(peers, p)
		}
		t.mu.Unlock()
		for _, p := range peers {
			p.abort(errShutdown)
		}
		t.handlers.Wait()
		<-served
	}()
	return func() { <-stopped }
}

// rawConnKey finds the TCP connection under an HTTP request, so that a
// close that the client does not answer can be cut short.
type rawConnKey struct{}

// handle upgrades one HTTP request and serves the connection until it
// ends: opened, data..., closed, all on this goroutine.
func (t *wsTransport) handle(w http.ResponseWriter, r *http.Request) {
	raw, _ := r.Context().Value(rawConnKey{}).(net.Conn)
	p := &wsPeer{t: t, raw: raw, addr: r.RemoteAddr, wake: make(chan struct{}, 1), writerDone: make(chan struct{})}
	p.touch()
	// Registered before anything else, so that a shutdown from now on
	// aborts it (the abort waits in p.kill for the writer).
	t.mu.Lock()
	if t.stopping {
		t.mu.Unlock()
		http.Error(w, "gateway stopping", http.StatusServiceUnavailable)
		return
	}
	t.handlers.Add(1)
	t.peers[p] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.peers, p)
		t.mu.Unlock()
		t.handlers.Done()
	}()

	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns: t.origins,
		OnPongReceived: func(context.Context, []byte) { p.touch() },
		OnPingReceived: func(context.Context, []byte) bool { p.touch(); return true },
	})
	if err != nil {
		// Accept answered the request (403 for a foreign origin, 426 ...).
		t.log.Info("websocket handshake refused", "addr", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	c.SetReadLimit(int64(t.maxFrame))
	p.c = c
	core, err := t.ev.opened(p)
	if err != nil {
		_ = p.closeWith(WSCloseFull, "too many connections")
		return
	}
	p.core = core
	go p.writeLoop()

	end := p.readLoop()

	p.mu.Lock()
	p.ended = true
	if p.kill == nil {
		p.kill = end
	}
	reason := p.kill
	p.mu.Unlock()
	p.signal()
	<-p.writerDone
	var ref *wsRefusal
	if errors.As(reason, &ref) {
		reason = ref.err
	}
	if errors.Is(reason, errPeerClosed) {
		reason = nil
	}
	t.ev.closed(core, reason)
}

// errPeerClosed marks a connection the client closed (or that broke).
var errPeerClosed = errors.New("gateway: websocket closed by the client")

// readLoop reads messages until the connection ends and returns why: a
// refusal (bad message), or errPeerClosed wrapping what the read said.
func (p *wsPeer) readLoop() error {
	t := p.t
	for {
		typ, msg, err := p.readMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				// The library has sent close code 1009 already.
				ref := &wsRefusal{code: WSCloseTooBig, reason: "message too big", err: fmt.Errorf("%w: over %d bytes", box.ErrTooLarge, t.maxFrame)}
				t.bad(p.core, ref.err)
				return ref
			}
			return fmt.Errorf("%w: %w", errPeerClosed, err)
		}
		p.touch()
		if typ != websocket.MessageBinary {
			t.bad(p.core, errWSText)
			return &wsRefusal{code: WSCloseText, reason: "binary Box frames only", err: errWSText}
		}
		frame, err := box.Split(msg, t.maxFrame)
		switch {
		case err != nil:
		case frame == nil:
			err = errWSPartial
		case len(frame) != len(msg):
			err = errWSSeveral
		}
		if err != nil {
			t.bad(p.core, err)
			return &wsRefusal{code: WSCloseBadFrame, reason: "one whole Box frame per message", err: err}
		}
		if err := t.ev.data(p.core, msg); err != nil {
			return &wsRefusal{code: WSCloseBadFrame, reason: "bad frame", err: err}
		}
	}
}

// readMessage reads one message, telling the core how much of it is held
// while it arrives: a message counts in the gateway's partial frames
// (budget and frame timeout, limits.go) like a TCP frame not yet whole.
func (p *wsPeer) readMessage() (websocket.MessageType, []byte, error) {
	typ, r, err := p.c.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(max(cap(buf), 512), 256<<10))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.t.ev.partial(p.core, 0)
			return 0, nil, err
		}
		p.t.ev.partial(p.core, cap(buf))
	}
	p.t.ev.partial(p.core, 0)
	return typ, buf, nil
}

// wsPeer is one WebSocket connection.
type wsPeer struct {
	t       *wsTransport
	c       *websocket.Conn
	raw     net.Conn // under c: closed to cut a close short
	addr    string
	core    *conn
	lastIn  atomic.Int64 // unix ns of the last message, ping or pong
	pinging atomic.Bool

	mu      sync.Mutex
	queue   [][]byte // output not yet taken by the writer
	queued  int      // bytes queued and not yet written
	closing bool     // close once the queue is written
	kill    error    // end now, for this reason
	ended   bool     // the reader is done

	wake       chan struct{} // cap 1: the writer has something to do
	writerDone chan struct{}
}

func (p *wsPeer) remoteAddr() string { return p.addr }

func (p *wsPeer) touch() { p.lastIn.Store(time.Now().UnixNano()) }

func (p *wsPeer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// send implements peer: it queues and never blocks. Past OutBuffer bytes
// not yet written the client is dropped as slow.
func (p *wsPeer) send(b []byte) {
	if len(b) == 0 {
		return
	}
	p.mu.Lock()
	if p.kill != nil || p.ended {
		p.mu.Unlock()
		return
	}
	if p.queued+len(b) > p.t.outLimit {
		p.kill = errSlowClient
		p.queue = nil
		if p.raw != nil {
			// A write blocked on this client fails at once; the writer
			// then closes the connection.
			_ = p.raw.Close()
		}
	} else {
		p.queue = append(p.queue, append([]byte(nil), b...))
		p.queued += len(b)
	}
	p.mu.Unlock()
	p.signal()
}

// close implements peer: close code 1000 once the queued output is
// written, or after closeGrace.
func (p *wsPeer) close() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.signal()
}

// abort ends the connection without writing what is queued.
func (p *wsPeer) abort(reason error) {
	p.mu.Lock()
	if p.kill == nil {
		p.kill = reason
	}
	p.mu.Unlock()
	p.signal()
}

// writeLoop writes queued frames, one per binary message, pings, and
// closes the connection when told to or when the client is idle or slow.
func (p *wsPeer) writeLoop() {
	defer close(p.writerDone)
	t := p.t
	var tick <-chan time.Time
	if every := t.tickEvery(); every > 0 {
		tk := time.NewTicker(every)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-p.wake:
		case now := <-tick:
			if t.idle > 0 && now.Sub(time.Unix(0, p.lastIn.Load())) > t.idle {
				p.abort(errIdle)
			} else if t.ping > 0 && p.pinging.CompareAndSwap(false, true) {
				go func() {
					defer p.pinging.Store(false)
					ctx, cancel := context.WithTimeout(context.Background(), t.ping)
					defer cancel()
					_ = p.c.Ping(ctx) // the pong, if any, touches lastIn
				}()
			}
		}
		for {
			p.mu.Lock()
			q := p.queue
			p.queue = nil
			kill, closing := p.kill, p.closing
			p.mu.Unlock()
			if kill != nil {
				p.finish(kill)
				return
			}
			if len(q) == 0 {
				if closing {
					p.finish(nil)
					return
				}
				break
			}
			if err := p.write(q, closing); err != nil {
				p.abort(err)
			}
		}
	}
}

// tickEvery is how often the writer pings and checks idleness.
func (t *wsTransport) tickEvery() time.Duration {
	switch {
	case t.ping > 0 && t.idle > 0:
		return min(t.ping, t.idle/2)
	case t.ping > 0:
		return t.ping
	case t.idle > 0:
		return t.idle / 4
	}
	return 0
}

// write sends queued chunks, each cut into frames, one frame per binary
// message. A write that makes no progress for WriteStall (closeGrace when
// closing) drops the client as slow.
func (p *wsPeer) write(q [][]byte, closing bool) error {
	stall := p.t.stall
	if closing {
		stall = min(stall, closeGrace)
	}
	for _, chunk := range q {
		for len(chunk) > 0 {
			p.mu.Lock()
			kill := p.kill
			p.mu.Unlock()
			if kill != nil {
				return kill
			}
			f, err := box.Split(chunk, math.MaxInt32)
			if err != nil || f == nil {
				p.t.log.Error("dropping output that is not whole frames", "conn", p.core.id, "n", len(chunk), "err", err)
				break
			}
			chunk = chunk[len(f):]
			ctx, cancel := context.WithTimeout(context.Background(), stall)
			err = p.c.Write(ctx, websocket.MessageBinary, f)
			timedOut := ctx.Err() != nil
			cancel()
			if err != nil {
				if timedOut {
					return errSlowClient
				}
				return fmt.Errorf("%w: %w", errPeerClosed, err)
			}
			p.mu.Lock()
			p.queued -= len(f)
			p.mu.Unlock()
		}
	}
	return nil
}

// finish closes the connection for reason (nil: a normal close asked by
// the farm) with the matching close code. A client that does not answer
// the close is cut off after closeGrace.
func (p *wsPeer) finish(reason error) {
	var ref *wsRefusal
	switch {
	case reason == nil:
		_ = p.closeWith(WSCloseNormal, "")
	case errors.As(reason, &ref):
		_ = p.closeWith(ref.code, ref.reason)
	case errors.Is(reason, errShutdown):
		_ = p.closeWith(WSCloseGoingAway, "gateway stopping")
	default:
		// A slow or idle client, or a connection already gone: no close
		// handshake with a client that does not read or answer.
		_ = p.c.CloseNow()
	}
}

// closeWith closes with a close code and a handshake bounded by closeGrace.
func (p *wsPeer) closeWith(code websocket.StatusCode, reason string) error {
	cut := time.AfterFunc(closeGrace, func() {
		if p.raw != nil {
			_ = p.raw.Close()
		}
	})
	defer cut.Stop()
	return p.c.Close(code, reason)
}
