package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/store"
)

// Defaults for Options; each is defined once and reused by the CLI's help.
const (
	DefaultListen      = ":28000"
	DefaultMaxConns    = 100_000
	DefaultIdleTimeout = 5 * time.Minute
	DefaultWriteStall  = 15 * time.Second
	DefaultBacklog     = 100_000 // frames held while Redis is slow or away
	DefaultQueueBound  = 1_000_000
	DefaultLoops       = 1
	DefaultCloseGrace  = 5 * time.Second

	// Limits on what one client may cost (docs/operations.md, "Limits
	// and abuse").
	DefaultMaxInflight   = 64               // frames of one connection queued and not answered
	DefaultFrameTimeout  = 10 * time.Second // a started frame must be complete within it
	DefaultPartialBudget = 64 << 20         // bytes of partial frames, all connections together
)

// DefaultOutBuffer is the output buffer of a client for a largest frame of
// maxFrame bytes: two of them and room for small pushes, so a client that
// reads never hits it.
func DefaultOutBuffer(maxFrame int) int { return 2*maxFrame + 64<<10 }

// Options configure a gateway. Zero values mean the defaults above.
type Options struct {
	// Listen is the TCP address, like ":28000". With ReusePort several
	// gateways can bind the same port (rolling restart).
	Listen    string
	ReusePort bool
	// Redis connects to the farm's Redis (required).
	Redis *redis.UniversalOptions
	// Prefix starts every key name; "" means store.DefaultPrefix.
	Prefix string
	// Partitions is used only if this gateway is the farm's first process.
	Partitions int
	// ID names the gateway farm-wide; "" means a random one.
	ID string
	// MaxFrame is the largest packet_len accepted; 0 means box.DefaultMaxFrame.
	MaxFrame int
	// MaxConns is the most client connections held; more are refused.
	MaxConns int
	// IdleTimeout closes a client that sent nothing this long; -1 disables.
	IdleTimeout time.Duration
	// OutBuffer bounds the bytes queued for one client; a client that does
	// not read past it is closed, so memory stays bounded. 0 means
	// DefaultOutBuffer(MaxFrame); it is never less than two largest frames.
	OutBuffer int
	// MaxInflight is how many frames one connection may have queued and
	// not answered; past it frames are answered -10002 at once. 0 means
	// DefaultMaxInflight, -1 unbounded.
	MaxInflight int
	// MaxConnsPerIP is how many connections one client address may hold;
	// more are refused. 0 means no limit.
	MaxConnsPerIP int
	// FrameTimeout is how long a frame may take to arrive once its first
	// byte did; a connection that is slower is closed. 0 means
	// DefaultFrameTimeout, -1 never.
	FrameTimeout time.Duration
	// PartialBudget bounds the bytes of frames not yet complete, all
	// connections together; past it the connections with the oldest
	// partial frames are closed. 0 means DefaultPartialBudget.
	PartialBudget int
	// WriteBudget is the most bytes of one stream entry or pipeline; 0
	// means 8 MiB, as worker.DefaultWriteBudget.
	WriteBudget int
	// WriteStall closes a client whose queued output has not moved this long.
	WriteStall time.Duration
	// Backlog is how many frames wait in the gateway while Redis is slow or
	// unreachable; past it frames are answered -10002 (busy).
	Backlog int
	// QueueBound is the number of frames this gateway has queued and
	// workers have not finished past which frames are answered -10002
	// instead of queued; -1 means unbounded.
	QueueBound int
	// Loops is the number of event loops (goroutines serving sockets).
	Loops int
	// DrainTimeout is how long a stopping gateway keeps serving the players
	// it has, after it stopped accepting new ones and told them to move
	// (rolling restart: a new gateway on the same port takes them as they
	// reconnect). Then it stops taking their frames (answered
	// box.RetMoved) and closes each once it is owed no reply. 0 means it
	// does that at once (drain.go).
	DrainTimeout time.Duration
	// CloseGrace bounds the wait for owed replies once the drain is over;
	// connections still owed replies then are closed, logged and counted.
	CloseGrace time.Duration
	// Logger receives lifecycle and error logs; nil means slog.Default().
	Logger *slog.Logger

	// WebSocket players (ws.go). WSListen is the HTTP address, like
	// ":28080"; "" means no WebSocket listener. Each binary message
	// carries exactly one frame; MaxFrame caps a message, and MaxConns,
	// OutBuffer, WriteStall and ReusePort apply as for TCP.
	WSListen string
	// WSPath is the URL path of the WebSocket endpoint; "" means "/ws".
	WSPath string
	// WSOrigins lists the host patterns of foreign page origins allowed to
	// connect (path.Match, like "*.example.com"); the listener's own host
	// is always allowed, and clients that send no Origin header too.
	WSOrigins []string
	// WSPing is how often the gateway pings a WebSocket client; 0 means
	// DefaultWSPing, -1 none.
	WSPing time.Duration
	// WSIdleTimeout closes a WebSocket client from which nothing came, not
	// even a pong, this long; 0 means DefaultWSIdleTimeout, -1 never.
	WSIdleTimeout time.Duration
	// Web, if set, is served on the WebSocket listener on every path but
	// WSPath (a game's web page).
	Web http.Handler
}

func (o Options) withDefaults() Options {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = box.DefaultMaxFrame
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	} else if o.IdleTimeout < 0 {
		o.IdleTimeout = 0
	}
	if o.OutBuffer <= 0 {
		o.OutBuffer = DefaultOutBuffer(o.MaxFrame)
	}
	// A client that reads must be able to get two largest frames in a row.
	o.OutBuffer = max(o.OutBuffer, 2*o.MaxFrame)
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	} else if o.MaxInflight < 0 {
		o.MaxInflight = 0
	}
	if o.MaxConnsPerIP < 0 {
		o.MaxConnsPerIP = 0
	}
	if o.FrameTimeout == 0 {
		o.FrameTimeout = DefaultFrameTimeout
	} else if o.FrameTimeout < 0 {
		o.FrameTimeout = 0
	}
	if o.PartialBudget <= 0 {
		o.PartialBudget = DefaultPartialBudget
	}
	if o.WriteBudget <= 0 {
		o.WriteBudget = queue.DefaultWriteBudget
	}
	// One frame's envelope must fit in an entry.
	o.WriteBudget = max(o.WriteBudget, o.MaxFrame+64<<10)
	if o.WriteStall <= 0 {
		o.WriteStall = DefaultWriteStall
	}
	if o.Backlog <= 0 {
		o.Backlog = DefaultBacklog
	}
	if o.QueueBound == 0 {
		o.QueueBound = DefaultQueueBound
	} else if o.QueueBound < 0 {
		o.QueueBound = 0
	}
	if o.Loops <= 0 {
		o.Loops = DefaultLoops
	}
	if o.CloseGrace <= 0 {
		o.CloseGrace = DefaultCloseGrace
	}
	if o.ID == "" {
		o.ID = randomID()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// hostOf returns the host part of a client address ("ip:port").
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Stats are a gateway's counters since it started.
type Stats struct {
	Conns       atomic.Int64 // open now
	Accepted    atomic.Int64
	Refused     atomic.Int64 // over MaxConns
	FramesIn    atomic.Int64
	FramesOut   atomic.Int64
	BytesIn     atomic.Int64
	BytesOut    atomic.Int64
	BadFrames   atomic.Int64
	Busy        atomic.Int64 // frames answered -10002
	SlowClosed  atomic.Int64 // clients dropped for not reading
	IdleClosed  atomic.Int64
	RedisErrs   atomic.Int64
	Pipelines   atomic.Int64 // Redis round trips of the pusher
	Triggers    atomic.Int64 // triggers applied
	BadTriggers atomic.Int64 // malformed triggers ignored
	// Limits (docs/operations.md, "Limits and abuse").
	OverInflight   atomic.Int64 // frames answered -10002: their connection was at MaxInflight
	PerIPRefused   atomic.Int64 // connections refused at MaxConnsPerIP
	FrameTimeouts  atomic.Int64 // connections closed: a frame took longer than FrameTimeout
	PartialShed    atomic.Int64 // connections closed: partial frames over PartialBudget
	OversizeOut    atomic.Int64 // frames for clients (pushes, triggers) over MaxFrame, not sent
	RedisRefused   atomic.Int64 // frames answered -10002: Redis refused their entry (out of memory...)
	QueueBoundBusy atomic.Int64 // frames answered -10002 at QueueBound (also in Busy)
	// Rolling restart (drain.go).
	MovesSent    atomic.Int64 // connections sent the move push (box.CmdMove)
	DrainRefused atomic.Int64 // frames answered box.RetMoved: sent after the drain stopped taking their connection's work
	DrainCutOff  atomic.Int64 // connections closed with answers still owed when CloseGrace ran out
	// Output (evio.go, evio_direct.go).
	DirectWrites atomic.Int64 // sends written to the socket at once, not through the event loop
	Wakes        atomic.Int64 // sends handed to the event loop with a Wake (nothing direct possible)
	// Latency is the time from a frame read to its reply handed to the
	// socket: Redis both ways, queueing and the handler.
	Latency stat.Histogram
}

// Server is a gateway: it holds client connections, queues their frames in
// Redis and writes back what workers send.
type Server struct {
	opts  Options
	log   *slog.Logger
	keys  keys.Keys
	rdb   redis.UniversalClient // pipelines
	block redis.UniversalClient // the blocking pop of the outbound list
	st    *store.Store          // group members, for triggers
	q     *queue.Broker         // the queues
	parts int

	Stats Stats

	connSeq atomic.Uint64
	mu      sync.RWMutex
	conns   map[string]*conn
	byUID   map[string][]*conn // logged-in connections by user id

	perIP map[string]int // connections per client address, with MaxConnsPerIP

	partials  partialFrames // connections holding part of a frame (limits.go)
	closedIDs closedConns   // connections closed, for their late marks (forget.go)

	queue *pushQueue
	limit *ratelog.Limiter // logs of what clients cause, rate-limited per cause
	addr  chan net.Addr
	ready chan struct{}
	bound net.Addr

	wsAddr net.Addr // the WebSocket listener's, if any (ws.go)

	draining atomic.Bool // the drain has begun (drain.go)
}

// New checks opts and returns a gateway; Run starts it.
func New(opts Options) (*Server, error) {
	if opts.Redis == nil {
		return nil, errors.New("gateway: Options.Redis is required")
	}
	o := opts.withDefaults()
	if strings.ContainsAny(o.ID, "{}") {
		return nil, fmt.Errorf("gateway: id %q may not contain braces", o.ID)
	}
	log := o.Logger.With("gw", o.ID)
	s := &Server{
		opts:  o,
		log:   log,
		limit: ratelog.New(log, ratelog.DefaultBurst, ratelog.DefaultEvery),
		keys:  keys.New(o.Prefix),
		conns: make(map[string]*conn),
		byUID: make(map[string][]*conn),
		perIP: make(map[string]int),
		queue: newPushQueue(o.Backlog),
		addr:  make(chan net.Addr, 1),
		ready: make(chan struct{}),
	}
	return s, nil
}

// ID returns the gateway's farm-wide id.
func (s *Server) ID() string { return s.opts.ID }

// Ready is closed once the gateway listens; Addr is then valid.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the bound listen address (after Ready).
func (s *Server) Addr() net.Addr { return s.bound }

// Run connects to Redis, serves clients until ctx is cancelled, then closes
// every connection, queues their close events and returns.
func (s *Server) Run(ctx context.Context) error {
	ro := *s.opts.Redis
	s.rdb = queue.NewClient(&ro)
	defer s.rdb.Close()
	// BLMOVE's own client: a BLMOVE whose reply was lost surfaces as an
	// error, so that the next take asks for the transit batch again.
	s.block = queue.NewBlockingClient(&ro, 2)
	defer s.block.Close()
	s.st = store.New(s.rdb, s.opts.Prefix)
	s.q = queue.New(s.rdb, s.opts.Prefix)
	s.partials.init(s.opts.PartialBudget)

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	parts, err := s.q.Partitions(cctx, s.opts.Partitions)
	if err == nil {
		err = queue.LoadScripts(cctx, s.rdb)
	}
	cancel()
	if err != nil {
		err = store.PermissionError(err) // the Redis user's ACL refused a command, key or channel
		return fmt.Errorf("gateway: redis %v: %w", ro.Addrs, err)
	}
	s.parts = parts
	ws, err := s.listenWS() // WebSocket players (ws.go); nil without WSListen
	if err != nil {
		return err
	}

	listen := "tcp://" + s.opts.Listen
	if s.opts.ReusePort {
		listen += "?reuseport=true"
	}
	t := &evioTransport{
		listen: listen, loops: s.opts.Loops, outLimit: s.opts.OutBuffer,
		stall: s.opts.WriteStall, idle: s.opts.IdleTimeout,
		ev: s, log: s.log, addr: s.addr,
	}
	t.wakes, t.direct = &s.Stats.Wakes, &s.Stats.DirectWrites

	serveCtx, stopServe := context.WithCancel(context.Background())
	defer stopServe()
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	pusherDone := make(chan struct{})
	wg.Add(4)
	go func() { defer wg.Done(); s.runTriggers(bg) }()
	go func() { defer wg.Done(); s.runFrameTimeouts(bg) }() // limits.go
	go func() { defer wg.Done(); s.runOutbound(bg) }()
	go func() { defer wg.Done(); s.runHeartbeat(bg) }()
	go func() { defer close(pusherDone); s.runPusher(bg) }()

	serveErr := make(chan error, 1)
	go func() { serveErr <- t.serve(serveCtx) }()
	wsWait := ws.start(ctx, serveCtx) // ws.go
	select {
	case a := <-s.addr:
		s.bound = a
		close(s.ready)
		s.log.Info("listening", "addr", a.String(), "partitions", parts)
	case err := <-serveErr:
		stopServe()
		wsWait()
		stopBG()
		wg.Wait()
		return fmt.Errorf("gateway: listen %s: %w", s.opts.Listen, err)
	}
	select {
	case <-ctx.Done():
		s.drain(serveErr)
	case err = <-serveErr:
	}
	s.log.Info("stopping", "conns", s.Stats.Conns.Load())
	stopServe()
	if err == nil {
		err = <-serveErr // evio closed every connection: close events are queued
	}
	wsWait() // and so did the WebSocket transport
	// The pusher hands the last events to Redis before it returns.
	s.queue.finish()
	select {
	case <-pusherDone:
	case <-time.After(10 * time.Second):
		s.log.Error("gave up flushing frames to redis", "n", s.queue.len())
	}
	stopBG()
	wg.Wait()
	s.forgetSelf(forgetWait) // forget.go
	s.log.Info("stopped")
	return err
}

// runHeartbeat tells the farm this gateway is alive, once a second.
func (s *Server) runHeartbeat(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastForget := time.Now()
	for {
		now := time.Now()
		if err := s.q.Heartbeat(ctx, s.keys.Gateways(), s.opts.ID, now); err != nil && ctx.Err() == nil {
			s.log.Debug("heartbeat failed", "err", err)
		}
		if now.Sub(lastForget) > time.Minute {
			lastForget = now
			s.forgetMarks(ctx, now) // forget.go
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) lookup(id string) *conn {
	s.mu.RLock()
	c := s.conns[id]
	s.mu.RUnlock()
	return c
}

// opened implements events.
func (s *Server) opened(p peer) (*conn, error) {
	if s.Stats.Conns.Load() >= int64(s.opts.MaxConns) {
		s.Stats.Refused.Add(1)
		s.limit.Warn("max conns", "connection refused: at --max-conns", "addr", p.remoteAddr(), "n", s.opts.MaxConns)
		return nil, errors.New("gateway: too many connections")
	}
	addr := p.remoteAddr()
	ip := hostOf(addr)
	s.mu.Lock()
	if s.opts.MaxConnsPerIP > 0 && s.perIP[ip] >= s.opts.MaxConnsPerIP {
		s.mu.Unlock()
		s.Stats.PerIPRefused.Add(1)
		s.limit.Warn("max conns per ip", "connection refused: at --max-conns-per-ip", "addr", addr, "n", s.opts.MaxConnsPerIP)
		return nil, errors.New("gateway: too many connections from one address")
	}
	s.perIP[ip]++
	id := s.opts.ID + "-" + strconv.FormatUint(s.connSeq.Add(1), 10)
	c := &conn{id: id, addr: addr, ip: ip, peer: p, part: queue.PartitionOf(id, s.parts)}
	s.conns[id] = c
	s.mu.Unlock()
	s.Stats.Conns.Add(1)
	s.Stats.Accepted.Add(1)
	s.enqueue(c, queue.KindOpen, nil)
	s.log.Debug("opened", "conn", id, "addr", c.addr)
	return c, nil
}

// data implements events: it cuts frames out of the stream and queues them.
// It runs on the event loop, so it never waits on Redis.
func (s *Server) data(c *conn, in []byte) error {
	s.Stats.BytesIn.Add(int64(len(in)))
	buf := in
	if len(c.in.b) > 0 {
		c.in.add(in)
		buf = c.in.b
	}
	started := false // a frame completed: the tail's frame started in this read
	for {
		frame, err := box.Split(buf, s.opts.MaxFrame)
		if err != nil {
			s.Stats.BadFrames.Add(1)
			s.limit.Warn("bad frame", "bad frame: closing connection", "conn", c.id, "addr", c.addr, "err", err)
			return err
		}
		if frame == nil {
			break
		}
		buf = buf[len(frame):]
		started = true
		s.Stats.FramesIn.Add(1)
		if !s.admit(c, frame) {
			continue // a draining gateway stopped taking c's work: answered RetMoved (drain.go)
		}
		if s.opts.MaxInflight > 0 && c.inflight.Load() >= int64(s.opts.MaxInflight) {
			// One connection may not hold more of the farm than this: its
			// later frames are answered at once, not queued.
			s.Stats.OverInflight.Add(1)
			s.Stats.Busy.Add(1)
			s.limit.Warn("max inflight", "connection at --max-inflight: frame answered -10002", "conn", c.id, "addr", c.addr, "n", s.opts.MaxInflight)
			c.peer.send(busyReply(frame))
			c.owed.Add(-1) // after the answer: a drain closes c once it is owed nothing
			continue
		}
		if !s.enqueueFrame(c, frame) {
			s.Stats.Busy.Add(1)
			s.limit.Warn("backlog", "backlog full (Redis slow or away): frame answered -10002", "conn", c.id, "n", s.opts.Backlog)
			c.peer.send(busyReply(frame))
			c.owed.Add(-1)
			continue
		}
		c.queued()
	}
	// Keep the unparsed tail; evio reuses its input buffer, so copy it.
	if len(buf) == 0 {
		c.in.reset()
		s.partials.done(c)
		return nil
	}
	if len(c.in.b) == 0 || &buf[0] != &c.in.b[0] {
		c.in.keep(buf)
	}
	s.partials.hold(c, c.in.held(), started)
	return nil
}

// closed implements events: the workers get the connection's close event
// after all its frames.
func (s *Server) closed(c *conn, err error) {
	s.mu.Lock()
	delete(s.conns, c.id)
	s.unindexLocked(c)
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	s.mu.Unlock()
	s.partials.done(c)
	c.in.release()
	s.closedIDs.add(c.id, time.Now())
	s.Stats.Conns.Add(-1)
	switch {
	case errors.Is(err, errSlowClient):
		s.Stats.SlowClosed.Add(1)
		s.limit.Warn("slow client", "client does not read: closed", "conn", c.id, "addr", c.addr)
	case errors.Is(err, errFrameTimeout):
		s.Stats.FrameTimeouts.Add(1)
		s.limit.Warn("frame timeout", "frame not complete within --frame-timeout: closed", "conn", c.id, "addr", c.addr, "timeout", s.opts.FrameTimeout)
	case errors.Is(err, errPartialBudget):
		s.Stats.PartialShed.Add(1)
		s.limit.Warn("partial budget", "partial frames over --partial-budget: closed the connection with the oldest", "conn", c.id, "addr", c.addr, "budget", s.opts.PartialBudget)
	case errors.Is(err, errIdle):
		s.Stats.IdleClosed.Add(1)
		s.log.Debug("idle client closed", "conn", c.id, "addr", c.addr)
	}
	s.enqueue(c, queue.KindClose, nil)
	s.log.Debug("closed", "conn", c.id, "addr", c.addr, "err", err)
}

// enqueueFrame hands a frame of c to the pusher; false if the backlog is
// full. A connection's only frame in flight is queued even at the queue
// bound: the bound stops bulk, not a player waiting for one answer.
func (s *Server) enqueueFrame(c *conn, frame []byte) bool {
	return s.enqueueItem(c, queue.KindFrame, frame, c.inflight.Load() == 0)
}

// enqueue hands an open or close event of c to the pusher; they always go
// through.
func (s *Server) enqueue(c *conn, kind queue.Kind, frame []byte) bool {
	return s.enqueueItem(c, kind, frame, true)
}

// enqueueItem hands an event of c to the pusher; past the backlog frames
// are refused. always: the queue bound does not apply.
func (s *Server) enqueueItem(c *conn, kind queue.Kind, frame []byte, always bool) bool {
	c.seq++
	e := queue.Envelope{Kind: kind, Seq: c.seq, At: time.Now().UnixNano(), Gateway: s.opts.ID, Conn: c.id, Addr: c.addr, UID: c.userID(), Frame: frame}
	enc := queue.AppendEnvelope(make([]byte, 0, queue.EnvelopeSize(&e)), &e)
	it := pushItem{c: c, env: enc, kind: kind, always: always}
	if kind == queue.KindFrame {
		h, _ := box.ParseHeader(frame)
		it.cmd, it.sn, it.frame = h.Cmd, h.SN, true
	}
	if !s.queue.push(it) {
		c.seq-- // not queued: the workers must not see a gap
		return false
	}
	return true
}

// busyReply answers a frame that could not be queued.
func busyReply(frame []byte) []byte {
	h, _ := box.ParseHeader(frame)
	return busyAnswer(h.Cmd, h.SN)
}

// busyAnswer answers frame cmd, sn: it was not queued.
func busyAnswer(cmd int32, sn uint32) []byte { return box.Append(nil, cmd, box.RetBusy, sn, nil) }

// setUID records that c is logged in as uid ("" for logged out).
func (s *Server) setUID(c *conn, uid string) {
	if err := store.CheckName("user id", uid); err != nil {
		// Workers refuse such logins; this gateway will not copy one into
		// every envelope either.
		s.limit.Error("long uid", "bind refused", "conn", c.id, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unindexLocked(c)
	if uid == "" {
		c.uid.Store(nil)
		return
	}
	c.uid.Store(&uid)
	s.byUID[uid] = append(s.byUID[uid], c)
}

func (s *Server) unindexLocked(c *conn) {
	uid := c.userID()
	if uid == "" {
		return
	}
	list := s.byUID[uid]
	for i, x := range list {
		if x == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byUID, uid)
	} else {
		s.byUID[uid] = list
	}
}
