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
	// WSPath (a game's web page), one request per connection.
	Web http.Handler
}

// wsPath is the URL path of the WebSocket endpoint.
func wsPath(o Options) string {
	if o.WSPath == "" {
		return DefaultWSPath
	}
	return o.WSPath
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

	queue  *pushQueue
	limit  *ratelog.Limiter // logs of what clients cause, rate-limited per cause
	addr   chan []net.Addr  // the listeners' addresses, once bound (transport.go)
	ready  chan struct{}
	bound  net.Addr
	wsAddr net.Addr // the WebSocket listener's, if any

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
		addr:  make(chan []net.Addr, 1),
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

// WSAddr returns the bound WebSocket listen address (after Ready), or nil
// when Options.WSListen is empty.
func (s *Server) WSAddr() net.Addr { return s.wsAddr }

// Run connects to Redis, serves clients until ctx is cancelled, then closes
// every connection, queues their close events and returns.
func (s *Server) Run(ctx context.Context) error {
	ro := *s.opts.Redis
	s.rdb = queue.NewClient(&ro)
	defer s.rdb.Close()
	// The blocking take's own client (TakeOutWait): a take whose reply was
	// lost surfaces as an error, and the next take reads its messages again.
	s.block = queue.NewBlockingClient(&ro, 2, outWait)
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
	t := s.newTransport() // TCP and WebSocket players (transport.go)

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
	select {
	case a := <-s.addr:
		s.bound = a[0]
		if len(a) > 1 {
			s.wsAddr = a[1]
		}
		close(s.ready)
		s.log.Info("listening", "addr", s.bound.String(), "partitions", parts)
		if s.wsAddr != nil {
			s.log.Info("websocket listening", "addr", s.wsAddr.String(), "path", wsPath(s.opts), "web", s.opts.Web != nil)
		}
	case err := <-serveErr:
		stopServe()
		stopBG()
		wg.Wait()
		return fmt.Errorf("gateway: listen %s: %w", t.listenAddrs(), err)
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
