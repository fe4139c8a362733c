package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/store"
)

// Defaults for Options; each is defined once and reused by the CLI's help.
const (
	DefaultConcurrency     = 64
	DefaultLease           = 5 * time.Second
	DefaultLiveness        = 700 * time.Millisecond
	DefaultShutdownTimeout = 10 * time.Second
	DefaultMaxDeliveries   = 5
	DefaultHandlerTimeout  = 30 * time.Second
	DefaultBatch           = 256
	DefaultGatewayTimeout  = 10 * time.Second
	DefaultTimerTick       = 100 * time.Millisecond
	DefaultMaxHeldBytes    = 64 << 20
	DefaultMaxFrame        = box.DefaultMaxFrame
	DefaultWriteBudget     = 8 << 20
)

// Options configure a worker. Zero values mean the defaults above.
type Options struct {
	// Redis connects to the farm's Redis (required).
	Redis *redis.UniversalOptions
	// Prefix starts every key name; "" means store.DefaultPrefix.
	Prefix string
	// Partitions is used only if this worker is the farm's first process.
	Partitions int
	// ID names the worker (a StatefulSet's or systemd instance's name);
	// "" means a random one. A fixed ID is a label: each process adds a
	// random suffix ("<ID>-<6 hex>"), its instance id (Worker.ID), under
	// which it leases partitions and reads as a consumer. Two processes
	// started with one ID, as a reload's replacement is, then never act
	// as one consumer: the new one takes partitions over as the old one
	// hands them back, and what the old one left pending is claimed.
	ID string
	// Concurrency is how many handlers run at once. Frames of one
	// connection always run one at a time, in order.
	Concurrency int
	// Lease is how long a partition stays with a worker that stopped
	// renewing it and cannot be seen dead (Liveness): one of an older
	// release, or one whose liveness renewals work while its lease
	// renewals fail.
	Lease time.Duration
	// Liveness is how long a worker that stopped (SIGKILL, a lost host)
	// counts as alive: its partitions move to the other workers about
	// Liveness after it stopped. A worker that cannot renew its liveness
	// in time (Redis away, the process starved of CPU that long) gives
	// its partitions up first. Raised to at least 70 ms, and kept below
	// Lease.
	Liveness time.Duration
	// ShutdownTimeout bounds the drain after Run's ctx is cancelled.
	ShutdownTimeout time.Duration
	// MaxDeliveries is how often a frame is tried before it goes to the
	// dead-letter stream.
	MaxDeliveries int
	// HandlerTimeout is the deadline of each handler's ctx.
	HandlerTimeout time.Duration
	// Batch is how many entries one read takes per partition.
	Batch int
	// LoginMode says what Request.Login does when the user is connected
	// elsewhere: store.Kick (default) closes the older connection,
	// store.Refuse fails the new login.
	LoginMode store.LoginMode
	// GatewayTimeout is how long a gateway may miss heartbeats before its
	// sessions are removed (it died without saying so).
	GatewayTimeout time.Duration
	// TimerTick is how often due timers are moved to the streams: a
	// timer fires at most this late (plus queueing). When it is
	// Liveness/7 (the defaults), the liveness rounds poll the timers in
	// their own round trip, saving Redis one round trip per tick (not on
	// a Redis Cluster).
	TimerTick time.Duration
	// MaxHeldBytes bounds the bytes of envelopes a worker holds, read and
	// not yet done: past it, it reads nothing new until some are done.
	MaxHeldBytes int64
	// MaxFrame is the largest frame (header and body) a handler may send
	// to a client: a reply or push over it is refused with
	// ErrFrameTooLarge, so no player is dropped for a message it cannot
	// take.
	MaxFrame int
	// WriteBudget is the most bytes of one outbound list element or one
	// pipeline the worker sends to Redis: bigger batches are split. It is
	// raised to fit one message of MaxFrame.
	WriteBudget int
	// Logger receives lifecycle and error logs; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Liveness <= 0 {
		o.Liveness = DefaultLiveness
	}
	o.Liveness = min(max(o.Liveness, 70*time.Millisecond), o.Lease)
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.MaxDeliveries <= 0 {
		o.MaxDeliveries = DefaultMaxDeliveries
	}
	if o.HandlerTimeout <= 0 {
		o.HandlerTimeout = DefaultHandlerTimeout
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.LoginMode == "" {
		o.LoginMode = store.Kick
	}
	if o.GatewayTimeout <= 0 {
		o.GatewayTimeout = DefaultGatewayTimeout
	}
	if o.TimerTick <= 0 {
		o.TimerTick = DefaultTimerTick
	}
	if o.MaxHeldBytes <= 0 {
		o.MaxHeldBytes = DefaultMaxHeldBytes
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.WriteBudget <= 0 {
		o.WriteBudget = DefaultWriteBudget
	}
	// One message (a frame of MaxFrame and its envelope) always fits.
	o.WriteBudget = max(o.WriteBudget, o.MaxFrame+messageSlack)
	if o.ID == "" {
		o.ID = randomHex(6)
	} else {
		o.ID += "-" + randomHex(3)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Stats are a worker's counters since it started.
type Stats struct {
	Handled     atomic.Int64 // requests that ran
	Failed      atomic.Int64 // handler errors and panics (-10001)
	NoRoute     atomic.Int64
	Redelivered atomic.Int64
	Duplicates  atomic.Int64 // copies dropped by sequence number
	DeadLetters atomic.Int64
	InFlight    atomic.Int64
	HandlerNs   atomic.Int64 // total handler time
	RedisErrs   atomic.Int64
	Reads       atomic.Int64 // Redis round trips reading
	Writes      atomic.Int64 // Redis round trips writing
	Partitions  atomic.Int64 // leased now
	// LeasesLost counts partitions dropped at once: their lease went to
	// another worker, or this worker's liveness or lease renewals failed
	// too long.
	LeasesLost  atomic.Int64
	PushSkipped atomic.Int64 // pushes to users who were not connected
	// ClosedDropped counts frames dropped unrun because their connection
	// closed before they started: nobody reads their answer.
	ClosedDropped atomic.Int64
	// OversizeRefused counts replies and pushes refused for a frame over
	// Options.MaxFrame (ErrFrameTooLarge).
	OversizeRefused atomic.Int64
	// RefusedWrites counts commands Redis refused for their content (out
	// of memory, too big...): never retried.
	RefusedWrites atomic.Int64
	HeldBytes     atomic.Int64 // bytes of envelopes held now
	// HandlerTime is how long handlers ran (hooks included).
	HandlerTime stat.Histogram
}

// Worker pulls the farm's frames from Redis and runs an App on them. It
// holds no game state: any number of workers may run, start, stop or die.
//
// A Worker is a set of components, each in a file named after its duty,
// each owning its state and talking to the others through small
// interfaces (docs/design.md, "Architecture"):
//
//	leases.go      leaseKeeper: heartbeat, this worker's share of the partitions
//	partitions.go  partitionTable: the partitions leased, shared read-only
//	reader.go      reader: new entries, and pending ones taken over
//	dispatcher.go  dispatcher: per-connection queues, fair admission, runners
//	processor.go   processor: one envelope through the app
//	marks.go       marks: handled marks, copies dropped
//	outbound.go    outbound: what handlers send, as gateway messages
//	outbox.go      outbox: every write to Redis, in order
//	timers.go      timers: due timers and periodic jobs
//	reaper.go      reaper: dead gateways
//	janitor.go     janitor: closed connections' marks, gone consumers
type Worker struct {
	app   *App
	opts  Options
	log   *slog.Logger
	ready chan struct{}
	Stats Stats

	// The components, built by build when Run starts.
	table    *partitionTable
	leases   *leaseKeeper
	reader   *reader
	dispatch *dispatcher
	proc     *processor
	marks    *marks
	out      *outbound
	outbox   *outbox
	timers   *timers
	reaper   *reaper
	janitor  *janitor
}

// New returns a worker that runs app.
func New(app *App, opts Options) (*Worker, error) {
	if app == nil {
		return nil, errors.New("worker: nil app")
	}
	if opts.Redis == nil {
		return nil, errors.New("worker: Options.Redis is required")
	}
	o := opts.withDefaults()
	if o.LoginMode != store.Kick && o.LoginMode != store.Refuse {
		return nil, fmt.Errorf("worker: login mode %q: want %q or %q", o.LoginMode, store.Kick, store.Refuse)
	}
	return newWorker(app, o, o.Logger.With("worker", o.ID)), nil
}

// newWorker returns a worker of options with their defaults.
func newWorker(app *App, o Options, log *slog.Logger) *Worker {
	return &Worker{app: app, opts: o, log: log, ready: make(chan struct{})}
}

// Ready is closed once the worker is registered and taking partitions.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// ID returns the worker's farm-wide id.
func (w *Worker) ID() string { return w.opts.ID }

// Run serves until ctx is cancelled, then drains: it stops reading,
// finishes and acknowledges what it holds (up to ShutdownTimeout), gives
// its partitions up and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	w.app.build()
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	w.build(conn.st, conn.q, conn.rq, conn.parts, conn.cluster)
	w.log.Info("started", "partitions", conn.parts, "concurrency", w.opts.Concurrency)

	// The duties that take work in (intake) stop when the drain starts;
	// the outbox (sending) and the runners (running) once it is over.
	var intake, sending, running sync.WaitGroup
	w.outbox.start(&sending)
	w.dispatch.start(&running)
	// The reader first: the lease keeper starts its interim reads of
	// partitions taken over (reader.readInterim), which need it started.
	w.reader.start(&intake)
	w.leases.start(&intake)
	w.timers.start(&intake)
	w.reaper.start(&intake)
	w.janitor.start(&intake)

	<-ctx.Done()
	w.shutdown(&intake, &sending, &running)
	return nil
}

// build makes the components and wires them to each other; nothing runs
// yet. st is the handlers' store (Request.Store), q the queues and rq the
// queues on the blocking client; all may be nil in tests that only run
// handlers.
func (w *Worker) build(st *store.Store, q, rq *queue.Broker, parts int, cluster bool) {
	o, stats := w.opts, &w.Stats
	duty := func(name string) *slog.Logger { return w.log.With("duty", name) }
	logs := ratelog.New(w.log, ratelog.DefaultBurst, ratelog.DefaultEvery)
	// A stack trace is long: one per route and interval, then counts.
	panics := ratelog.New(w.log, 1, ratelog.DefaultEvery)

	w.table = newPartitionTable()
	w.reaper = newReaper(reaperParams{queue: q, log: w.log, gatewayTimeout: o.GatewayTimeout})
	w.marks = newMarks(marksParams{queue: q, stats: stats, log: w.log, partitions: parts})
	w.outbox = newOutbox(outboxParams{queue: q, writeBudget: o.WriteBudget, stats: stats, log: w.log, logs: logs,
		gateways: w.reaper, partitions: w.table})
	w.out = newOutbound(outboundParams{store: st, log: w.log, logs: logs, stats: stats, maxFrame: o.MaxFrame,
		gateways: w.reaper, outbox: w.outbox})
	w.proc = newProcessor(processorParams{app: w.app, store: st, queue: q, log: w.log, stats: stats,
		maxDeliveries: o.MaxDeliveries, handlerTimeout: o.HandlerTimeout, logs: logs, panics: panics,
		marks: w.marks, outbound: w.out, outbox: w.outbox, table: w.table,
		services: &services{out: w.out, q: q, users: w.marks, log: w.log, loginMode: o.LoginMode,
			gatewayTimeout: o.GatewayTimeout, parts: parts}})
	w.dispatch = newDispatcher(dispatcherParams{log: w.log, stats: stats, concurrency: o.Concurrency,
		maxHeldBytes: o.MaxHeldBytes, proc: w.proc, out: w.outbox, gateways: w.reaper})
	w.reader = newReader(readerParams{queue: q, blocking: rq, log: duty("reader"), stats: stats, id: o.ID,
		cluster: cluster, batch: o.Batch, table: w.table, dispatch: w.dispatch, marks: w.marks, bundles: w.outbox})
	// At the defaults the timers' tick is the liveness round's: the rounds
	// poll the timers in their round trip (timers.probes). Not on a
	// Cluster, where the timers live on every master: a master that does
	// not answer (failing over; a dial waits out its timeout) would hold
	// up the liveness round, and every worker would fence itself.
	probed := o.TimerTick == o.Liveness/livenessRounds && !cluster
	w.timers = newTimers(timersParams{queue: q, log: duty("timers"), stats: stats, partitions: parts,
		tick: o.TimerTick, jobs: w.app.jobs, table: w.table, probed: probed})
	var polls *timers
	if probed {
		polls = w.timers
	}
	w.leases = newLeaseKeeper(leaseParams{queue: q, log: duty("leases"), logs: logs, stats: stats, id: o.ID,
		partitions: parts, lease: o.Lease, liveness: o.Liveness, table: w.table, taker: w.reader, held: w.dispatch, outbox: w.outbox, marks: w.marks,
		ready: w.ready, timers: polls})
	w.janitor = newJanitor(janitorParams{queue: q, log: w.log, id: o.ID, lease: o.Lease, marks: w.marks,
		table: w.table, ready: w.ready})
}

// connection is a running worker's Redis: a client for commands and one
// for blocking reads, the farm's partition count.
type connection struct {
	rdb, read redis.UniversalClient
	st        *store.Store  // the handlers' (Request.Store)
	q, rq     *queue.Broker // the queues; rq is on read
	parts     int
	cluster   bool
}

func (c *connection) close() {
	c.read.Close()
	c.rdb.Close()
}

// connect opens the worker's Redis clients and makes sure of the farm's
// partitions, consumer groups and scripts.
func (w *Worker) connect(ctx context.Context) (*connection, error) {
	ro := *w.opts.Redis
	rdb := queue.NewClient(&ro)
	q := queue.New(rdb, w.opts.Prefix)

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	parts, err := q.Partitions(sctx, w.opts.Partitions)
	if err == nil {
		err = q.EnsureGroups(sctx, parts)
	}
	if err == nil {
		err = queue.LoadScripts(sctx, rdb)
	}
	cancel()
	if err != nil {
		rdb.Close()
		err = store.PermissionError(err) // the Redis user's ACL refused a command, key or channel
		return nil, fmt.Errorf("worker: redis %v: %w", ro.Addrs, err)
	}
	// The blocking reads' own client: a read whose reply was lost
	// surfaces as an error, so the reader recovers what it took
	// (ReadOwnPending). A blocked read holds a connection: one per
	// partition at most (on a cluster, per node), plus room for recovery
	// reads. Its reads time out past the main read's block: that read
	// brings no deadline of its own (queue.InboundReads).
	read := queue.NewBlockingClient(&ro, max(ro.PoolSize, parts+4), mainBlock)
	_, cluster := rdb.(*redis.ClusterClient)
	return &connection{rdb: rdb, read: read, st: store.New(rdb, w.opts.Prefix), q: q, rq: queue.New(read, w.opts.Prefix),
		parts: parts, cluster: cluster}, nil
}

// After the drain (ShutdownTimeout), Run waits at most stopWait for the
// outbox and again for the runners, then cleanupWait for giving its
// leases up: ShutdownTimeout + 1 s in all, even while Redis is away.
const (
	stopWait    = 200 * time.Millisecond
	cleanupWait = 400 * time.Millisecond
)

// shutdown drains, in this order, every wait ending by ShutdownTimeout:
//
//  1. Stop taking work in: reading, lease rounds, timers, reaper, janitor.
//  2. Hand each partition back as soon as its frames are done.
//  3. Let the handlers finish what was read, and the outbox write what
//     they sent; wait for the partitions to be handed back.
//  4. Hard stop: the outbox stops (later writes are dropped), handlers'
//     contexts end, runners take nothing more. What is not done stays
//     pending in Redis, for other workers.
//  5. Give up the leases still held, and deregister.
func (w *Worker) shutdown(intake, sending, running *sync.WaitGroup) {
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(w.opts.ShutdownTimeout))
	defer cancel()
	w.log.Info("draining", "inflight", w.dispatch.holding())
	w.reader.shutdown()
	w.leases.shutdown()
	w.timers.shutdown()
	w.reaper.shutdown()
	w.janitor.shutdown()
	waitCtx(ctx, intake)

	released := w.leases.handBack(ctx)
	if !w.dispatch.waitIdle(ctx) {
		w.log.Warn("shutdown timeout: leaving frames to other workers", "inflight", w.dispatch.holding())
	}
	w.outbox.flush(ctx)
	select {
	case <-released:
	case <-ctx.Done():
	}

	w.outbox.shutdown()
	w.proc.shutdown()
	w.leases.stop()
	w.dispatch.shutdown()
	waitAtMost(stopWait, sending)
	if !waitAtMost(stopWait, running) {
		// A handler that ignores its ctx must not keep the process up.
		w.log.Warn("stopped with handlers still running; their frames go to other workers", "inflight", w.dispatch.holding())
	}

	// Short, as Redis may be away.
	rctx, rcancel := context.WithTimeout(context.Background(), cleanupWait)
	defer rcancel()
	w.leases.giveUpAll(rctx)
	w.Stats.InFlight.Store(0)
	w.log.Info("stopped", "dur", time.Since(start))
}

// waitCtx waits for wg, or until ctx ends.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// waitAtMost waits for wg up to d; it reports whether wg was done.
func waitAtMost(d time.Duration, wg *sync.WaitGroup) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	waitCtx(ctx, wg)
	return ctx.Err() == nil
}
