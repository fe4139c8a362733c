package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/internal/retry"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/store"
)

// Defaults for Options; each is defined once and reused by the CLI's help.
const (
	DefaultConcurrency     = 64
	DefaultLease           = 5 * time.Second
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
	// renewing it: a killed worker's frames go to another within it.
	Lease time.Duration
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
	// timer fires at most this late (plus queueing).
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
type Worker struct {
	app  *App
	opts Options
	log  *slog.Logger
	st   *store.Store  // the handlers' (Request.Store)
	q    *queue.Broker // the queues
	rdb  redis.UniversalClient
	read redis.UniversalClient // blocking reads hold a connection each
	rq   *queue.Broker         // the queues on read, for the blocking reads

	parts int
	Stats Stats

	mu      sync.Mutex
	owned   map[int]*partition
	queues  map[string]*connQueue // connections with work (see roomLocked)
	lastSeq map[string]seqMark
	// inflight and held count the envelopes read and not yet done, and
	// their bytes: hard caps on the memory a worker's reads take.
	inflight int
	held     int64
	space    *sync.Cond
	// runnable lists the connection queues with envelopes and no runner;
	// Concurrency runner goroutines take them (work signals one).
	runnable    []*connQueue
	work        *sync.Cond
	stopRunners bool

	gwMu   sync.RWMutex
	deadGW map[string]time.Time // gateways found dead: drop messages for them
	// batchGW lists the gateways that sent bundles: they are of a release
	// that reads queue.OutBatch messages too (an older one would drop them).
	batchGW map[string]bool

	deadlines deadlines
	// logs rate-limits lines a client can cause per frame (handler
	// failures, no route, refused writes); panics rate-limits the stack
	// traces of panicking routes harder.
	logs, panics *ratelog.Limiter

	wr       *writer
	suspect  sync.Mutex // held while a redelivered entry runs
	ready    chan struct{}
	releases sync.WaitGroup
}

// partition is a leased partition's state.
type partition struct {
	n         int
	releasing bool
	inflight  map[string]*entry // entries read, not acknowledged, by id
	// reading counts the reads of this partition in progress: a release
	// waits for them, since what they return is delivered to this worker
	// and only it can serve it (the next owner claims pending entries
	// once, when it takes the partition).
	reading int
}

// entry is a stream entry being worked on. A gateway's entry bundles many
// envelopes, of many connections; it is acknowledged once all are done.
type entry struct {
	part    int
	id      string
	left    int    // envelopes not done yet
	taken   int    // envelopes admitted: at most all of them, once each
	gw      string // the gateway that queued the bundle
	bundled int64  // envelopes counted in that gateway's Queued (bundles only)
	// redelivered: the entry came back from a worker that died; its
	// envelopes' start counts (store.StartTry) go with its acknowledgement.
	redelivered bool
	// forget lists connections that closed in this entry: their handled
	// marks go with its acknowledgement, not before, since until then the
	// entry may come back.
	forget []connRef
	keep   bool // an envelope could not be finished: do not acknowledge
}

// connRef names a connection for its handled mark.
type connRef struct{ gw, conn string }

// item is one envelope of an entry, queued behind its connection's. d
// points into the slice a read returned.
type item struct {
	d *queue.Delivery
	e *entry
}

// connQueues recycles connection queues: one is made whenever a
// connection that had nothing queued gets an envelope.
var connQueues = sync.Pool{New: func() any { return new(connQueue) }}

// connQueue holds one connection's envelopes, run one at a time.
type connQueue struct {
	key     string
	items   []item
	running bool // queued in runnable, or taken by a runner
	closing int  // close events in items: the frames before them are dropped
}

// seqMark is what a worker remembers of a connection it served.
type seqMark struct {
	seq    uint64 // last envelope handled, to drop resent copies
	closed time.Time
	uid    string // user logged in by a handler on this worker
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

// newWorker builds a worker's state from options with their defaults.
func newWorker(app *App, o Options, log *slog.Logger) *Worker {
	w := &Worker{
		app:     app,
		opts:    o,
		log:     log,
		owned:   make(map[int]*partition),
		queues:  make(map[string]*connQueue),
		lastSeq: make(map[string]seqMark),
		deadGW:  make(map[string]time.Time),
		batchGW: make(map[string]bool),
		ready:   make(chan struct{}),
		logs:    ratelog.New(log, ratelog.DefaultBurst, ratelog.DefaultEvery),
		// A stack trace is long: one per route and interval, then counts.
		panics: ratelog.New(log, 1, ratelog.DefaultEvery),
	}
	w.space = sync.NewCond(&w.mu)
	w.work = sync.NewCond(&w.mu)
	return w
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
	ro := *w.opts.Redis
	w.rdb = queue.NewClient(&ro)
	defer w.rdb.Close()
	w.st = store.New(w.rdb, w.opts.Prefix)
	w.q = queue.New(w.rdb, w.opts.Prefix)

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	parts, err := w.q.Partitions(sctx, w.opts.Partitions)
	if err == nil {
		err = w.q.EnsureGroups(sctx, parts)
	}
	if err == nil {
		err = queue.LoadScripts(sctx, w.rdb)
	}
	cancel()
	if err != nil {
		err = store.PermissionError(err) // the Redis user's ACL refused a command, key or channel
		return fmt.Errorf("worker: redis %v: %w", ro.Addrs, err)
	}
	w.parts = parts
	// The blocking reads' own client: a read whose reply was lost
	// surfaces as an error, so the reader recovers what it took
	// (ReadOwnPending). A blocked read holds a connection: one per
	// partition at most (on a cluster, per node), plus room for recovery
	// reads.
	w.read = queue.NewBlockingClient(&ro, max(ro.PoolSize, parts+4))
	defer w.read.Close()
	w.rq = queue.New(w.read, w.opts.Prefix)
	w.log.Info("started", "partitions", parts, "concurrency", w.opts.Concurrency)

	// Background duties run on their own ctx, so that on shutdown they
	// keep going until the drain is over. Handlers' contexts end with
	// stopHandlers, when the drain's time is up.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	handlers, stopHandlers := context.WithCancel(context.Background())
	defer stopHandlers()
	w.deadlines.base = handlers
	w.wr = newWriter(w, bg)
	var runners sync.WaitGroup
	for range w.opts.Concurrency {
		runners.Add(1)
		go func() { defer runners.Done(); w.runner() }()
	}
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); w.wr.run(bg) }()
	leasesDone := make(chan struct{})
	readCtx, stopRead := context.WithCancel(bg)
	go func() { defer close(leasesDone); w.runLeases(readCtx, bg) }()
	readerDone := make(chan struct{})
	go func() { defer close(readerDone); w.runReader(readCtx) }()
	timersDone := make(chan struct{})
	go func() { defer close(timersDone); w.runTimers(readCtx) }()

	<-ctx.Done()
	start := time.Now()
	w.drain(start, stopRead, readerDone, leasesDone, timersDone)

	// Hard stop: what is not done now stays pending in Redis, for other
	// workers. The writer stops (later writes are dropped), handlers' ctx
	// end, runners take nothing more.
	stopBG()
	stopHandlers()
	w.space.Broadcast() // wake release goroutines so they see bg end
	w.mu.Lock()
	w.stopRunners = true
	w.mu.Unlock()
	w.work.Broadcast()
	waitAtMost(stopWait, writerDone)
	runnersDone := make(chan struct{})
	go func() { runners.Wait(); close(runnersDone) }()
	if !waitAtMost(stopWait, runnersDone) {
		// A handler that ignores its ctx must not keep the process up.
		w.mu.Lock()
		w.log.Warn("stopped with handlers still running; their frames go to other workers", "inflight", w.inflight)
		w.mu.Unlock()
	}

	// Give up what is still leased: other workers take it over at once
	// rather than after the lease. Short, as Redis may be away.
	rctx, rcancel := context.WithTimeout(context.Background(), cleanupWait)
	defer rcancel()
	w.mu.Lock()
	owned := make([]int, 0, len(w.owned))
	for p := range w.owned {
		owned = append(owned, p)
	}
	w.mu.Unlock()
	for _, p := range owned {
		_ = w.q.ReleaseLease(rctx, p, w.opts.ID)
	}
	_ = w.q.Deregister(rctx, w.q.Keys.Workers(), w.opts.ID)
	w.Stats.Partitions.Store(0)
	w.Stats.InFlight.Store(0)
	w.log.Info("stopped", "dur", time.Since(start))
	return nil
}

// After the drain (ShutdownTimeout), Run waits at most stopWait for the
// writer and again for the runners, then cleanupWait for giving its
// leases up: ShutdownTimeout + 1 s in all, even while Redis is away.
const (
	stopWait    = 200 * time.Millisecond
	cleanupWait = 400 * time.Millisecond
)

// drain stops reading, then lets the frames held finish, their writes
// reach Redis and each partition go back as soon as its frames are done,
// until start + ShutdownTimeout. Every wait ends by then.
func (w *Worker) drain(start time.Time, stopRead func(), loops ...<-chan struct{}) {
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(w.opts.ShutdownTimeout))
	defer cancel()
	// Waits on w.space end with ctx.
	stopWake := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.space.Broadcast()
		w.mu.Unlock()
	})
	defer stopWake()
	w.mu.Lock()
	w.log.Info("draining", "inflight", w.inflight)
	w.mu.Unlock()
	stopRead()
	w.space.Broadcast()
	for _, done := range loops {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	// Hand each partition back as soon as its frames are done, so other
	// workers (a reload's new process) take over without waiting for the
	// whole drain.
	w.mu.Lock()
	for _, pt := range w.owned {
		if !pt.releasing {
			pt.releasing = true
			w.releases.Add(1)
			go func() { defer w.releases.Done(); w.release(ctx, pt) }()
		}
	}
	w.mu.Unlock()

	// Let handlers finish what was read, up to the timeout.
	if !w.waitIdle(ctx) {
		w.mu.Lock()
		w.log.Warn("shutdown timeout: leaving frames to other workers", "inflight", w.inflight)
		w.mu.Unlock()
	}
	w.wr.flush(ctx)
	released := make(chan struct{})
	go func() { w.releases.Wait(); close(released) }()
	select {
	case <-released:
	case <-ctx.Done():
	}
}

// waitAtMost waits for done up to d; it reports whether done came.
func waitAtMost(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// waitIdle returns once nothing is queued or running (true), or ctx ended
// (false; ctx's end must wake w.space).
func (w *Worker) waitIdle(ctx context.Context) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.inflight > 0 && ctx.Err() == nil {
		w.space.Wait()
	}
	return w.inflight == 0
}

// runLeases keeps this worker's share of the partitions: it renews its
// leases, takes free partitions up to ceil(partitions/live workers), and
// hands extra ones back once their frames are done, so a new worker gets
// work and a dead one's partitions move on within one lease.
func (w *Worker) runLeases(ctx, bg context.Context) {
	log := w.log.With("duty", "leases")
	every := w.opts.Lease / 10
	offset := mrand.IntN(w.parts)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastReap, lastForget, lastConsumers time.Time
	first := true
	for {
		w.leaseRound(ctx, bg, log, offset)
		if first {
			first = false
			close(w.ready)
		}
		if time.Since(lastReap) > 2*time.Second {
			lastReap = time.Now()
			w.reapGateways(ctx)
		}
		if time.Since(lastForget) > 5*time.Second {
			lastForget = time.Now()
			w.forgetClosed()
		}
		if time.Since(lastConsumers) > forgetConsumersEvery {
			lastConsumers = time.Now()
			w.forgetConsumers(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *Worker) leaseRound(ctx, bg context.Context, log *slog.Logger, offset int) {
	now := time.Now()
	if err := w.q.Heartbeat(ctx, w.q.Keys.Workers(), w.opts.ID, now); err != nil {
		if ctx.Err() == nil {
			w.Stats.RedisErrs.Add(1)
			log.Error("heartbeat failed", "err", err)
		}
		return
	}
	alive, err := w.q.Alive(ctx, w.q.Keys.Workers(), now, w.opts.Lease)
	if err != nil || len(alive) == 0 {
		return
	}
	target := (w.parts + len(alive) - 1) / len(alive)

	// Renew what we hold.
	w.mu.Lock()
	held := make([]int, 0, len(w.owned))
	for p := range w.owned {
		held = append(held, p)
	}
	w.mu.Unlock()
	for _, p := range held {
		ok, err := w.q.AcquireLease(ctx, p, w.opts.ID, w.opts.Lease)
		if err != nil {
			w.Stats.RedisErrs.Add(1)
			continue // keep it; the next round retries
		}
		if !ok {
			log.Warn("lease lost", "partition", p)
			w.mu.Lock()
			delete(w.owned, p)
			w.forgetPartitionLocked(p)
			w.mu.Unlock()
		}
	}

	w.mu.Lock()
	active := 0
	for _, pt := range w.owned {
		if !pt.releasing {
			active++
		}
	}
	w.mu.Unlock()

	// Give extra partitions back, once their frames are done.
	for _, p := range held {
		if active <= target {
			break
		}
		w.mu.Lock()
		pt := w.owned[p]
		if pt != nil && !pt.releasing {
			pt.releasing = true
			active--
			w.releases.Add(1)
			go func() { defer w.releases.Done(); w.release(bg, pt) }()
		}
		w.mu.Unlock()
	}

	// Take free partitions up to our share.
	for i := 0; i < w.parts && active < target; i++ {
		p := (offset + i) % w.parts
		w.mu.Lock()
		_, mine := w.owned[p]
		w.mu.Unlock()
		if mine {
			continue
		}
		ok, err := w.q.AcquireLease(ctx, p, w.opts.ID, w.opts.Lease)
		if err != nil || !ok {
			continue
		}
		// First the entries pending under this worker's own name, which
		// ClaimPending leaves alone: a read that returned after an earlier
		// lease of p was lost (Redis failover) delivered them here, and
		// nothing else would ever hand them out. Read before claiming, as
		// the claimed entries are pending under this name afterwards.
		own, err := w.rq.ReadOwnPending(ctx, w.opts.ID, []int{p})
		var claimed []queue.Delivery
		if err == nil {
			claimed, err = w.q.ClaimPending(ctx, p, w.opts.ID)
		}
		if len(own) > 0 && err == nil {
			log.Warn("took back frames read under an earlier lease", "partition", p, "n", len(own))
			claimed = mergeDeliveries(claimed, own)
		}
		if err != nil {
			log.Error("claim failed; giving the partition back", "partition", p, "err", err)
			_ = w.q.ReleaseLease(ctx, p, w.opts.ID)
			continue
		}
		w.learnHandled(ctx, claimed)
		pt := &partition{n: p, inflight: make(map[string]*entry)}
		w.mu.Lock()
		w.owned[p] = pt
		w.mu.Unlock()
		active++
		if len(claimed) > 0 {
			log.Info("took over frames of a stopped worker", "partition", p, "n", len(claimed))
			w.Stats.Redelivered.Add(int64(len(claimed)))
		}
		for i := range claimed {
			w.admit(pt, &claimed[i])
		}
		log.Debug("partition acquired", "partition", p)
	}
	w.Stats.Partitions.Store(int64(active))
}

// release hands partition pt back once its frames are handled and
// acknowledged. If ctx ends first (shutdown), the partition stays listed
// as owned, and Run gives its lease up when it stops.
func (w *Worker) release(ctx context.Context, pt *partition) {
	w.mu.Lock()
	for (len(pt.inflight) > 0 || pt.reading > 0) && ctx.Err() == nil {
		w.space.Wait()
	}
	w.mu.Unlock()
	w.wr.flush(ctx)
	if ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	if w.owned[pt.n] == pt {
		delete(w.owned, pt.n)
	}
	w.forgetPartitionLocked(pt.n)
	w.mu.Unlock()
	if err := w.q.ReleaseLease(ctx, pt.n, w.opts.ID); err != nil {
		w.log.Error("release failed", "partition", pt.n, "err", err)
	}
	w.log.Debug("partition released", "partition", pt.n)
}

// forgetPartitionLocked drops what the worker remembers of partition p's
// connections: that is the next owner's business now, and if p comes back,
// the handled marks in Redis tell what happened meanwhile.
func (w *Worker) forgetPartitionLocked(p int) {
	for conn := range w.lastSeq {
		if queue.PartitionOf(conn, w.parts) == p {
			delete(w.lastSeq, conn)
		}
	}
}

// learnHandled reads the handled marks of the connections in ds that this
// worker may not know all about: those it has not seen since it took their
// partition, and those of redelivered entries, which another worker may
// have partly done. handle then skips what is done.
func (w *Worker) learnHandled(ctx context.Context, ds []queue.Delivery) {
	var qs []queue.HandledQuery
	var at map[string]int     // gateway -> its query
	var asked map[string]bool // made on the first connection to ask for: most reads have none
	w.mu.Lock()
	for _, d := range ds {
		c := d.Env.Conn
		if c == "" || d.Env.Gateway == "" || asked[c] {
			continue
		}
		if _, known := w.lastSeq[c]; d.Deliveries <= 1 && (known || d.Env.Seq <= 1) {
			continue // seen here, or new: nothing of it can be done elsewhere
		}
		if asked == nil {
			at, asked = make(map[string]int), make(map[string]bool)
		}
		asked[c] = true
		i, ok := at[d.Env.Gateway]
		if !ok {
			i = len(qs)
			at[d.Env.Gateway] = i
			qs = append(qs, queue.HandledQuery{Gateway: d.Env.Gateway})
		}
		qs[i].Conns = append(qs[i].Conns, c)
	}
	w.mu.Unlock()
	if len(qs) == 0 {
		return
	}
	if err := w.q.HandledSeqs(ctx, qs); err != nil {
		// Run them anyway: a frame run twice beats a frame lost.
		w.Stats.RedisErrs.Add(1)
		w.log.Warn("could not read handled marks; redelivered frames may run twice", "err", err)
		return
	}
	w.mu.Lock()
	for _, q := range qs {
		for i, c := range q.Conns {
			if m := w.lastSeq[c]; q.Seqs[i] > m.seq {
				m.seq = q.Seqs[i]
				w.lastSeq[c] = m
			}
		}
	}
	w.mu.Unlock()
}

// A worker's room is counted in connections with work, not envelopes, so
// that one connection's long serial backlog holds one place, not the
// whole room: a worker keeps reading while fewer than roomConns
// connections have envelopes queued or running (an envelope with no
// connection counts as one), so other connections' frames are read and
// run beside it. Hard caps bound the memory: the envelopes held
// (maxHeld) and their bytes (Options.MaxHeldBytes). A read takes whole
// entries, so each bound is approximate (readCount).
func (w *Worker) roomConns() int { return 4 * w.opts.Concurrency }

func (w *Worker) maxHeld() int { return 64 * w.opts.Concurrency }

// roomLocked reports whether the worker may read more.
func (w *Worker) roomLocked() bool {
	return len(w.queues) < w.roomConns() && w.inflight < w.maxHeld() && w.held < w.opts.MaxHeldBytes
}

// envelopeOverhead is what an envelope held costs beyond its bytes: its
// delivery, item and decoded fields.
const envelopeOverhead = 256

// heldSize is what envelope d counts against Options.MaxHeldBytes.
func heldSize(d *queue.Delivery) int64 { return int64(len(d.Raw)) + envelopeOverhead }

// readCount is how many entries the next read takes per partition: as
// many as fit the room left, in connections and envelopes (an entry adds
// at most perEntry of each, the envelopes per entry of recent reads) and
// in bytes (bytesPerEntry), between 1 and Options.Batch.
func (w *Worker) readCount(perEntry, bytesPerEntry float64) int64 {
	w.mu.Lock()
	conns := w.roomConns() - len(w.queues)
	envs := w.maxHeld() - w.inflight
	bytes := w.opts.MaxHeldBytes - w.held
	w.mu.Unlock()
	perEntry = max(perEntry, 1)
	n := min(float64(conns)/perEntry, float64(envs)/perEntry, float64(bytes)/max(bytesPerEntry, 1))
	return min(max(int64(n), 1), int64(w.opts.Batch))
}

// runReader reads new entries of the leased partitions, one round trip for
// all of them (one per partition on Redis Cluster, where they live in
// different slots).
func (w *Worker) runReader(ctx context.Context) {
	if _, cluster := w.rdb.(*redis.ClusterClient); !cluster {
		w.readLoop(ctx, w.log.With("duty", "reader"), w.activeParts, false)
		return
	}
	// On a cluster each partition is read on its own: its stream lives in
	// its own slot, and a multi-key read would be refused (CROSSSLOT).
	var wg sync.WaitGroup
	defer wg.Wait()
	running := make(map[int]bool)
	var mu sync.Mutex
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		for _, p := range w.activeParts() {
			mu.Lock()
			if running[p] {
				mu.Unlock()
				continue
			}
			running[p] = true
			mu.Unlock()
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				one := func() []int {
					for _, q := range w.activeParts() {
						if q == p {
							return []int{p}
						}
					}
					return nil
				}
				w.readLoop(ctx, w.log.With("duty", "reader", "partition", p), one, true)
				mu.Lock()
				delete(running, p)
				mu.Unlock()
			}(p)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// readLoop reads the partitions parts() names until ctx ends (or, with
// once, until parts() is empty).
func (w *Worker) readLoop(ctx context.Context, log *slog.Logger, parts func() []int, once bool) {
	backoff := retry.New(10*time.Millisecond, time.Second)
	recoverOwn := false
	perEntry := 1.0 // envelopes per entry, on average, in recent reads
	// Bytes per entry: the biggest entry of recent reads, decaying, and
	// assumed big until reads tell, so that a read does not overshoot the
	// byte cap by much.
	bytesPerEntry := float64(maxEntryGuess)
	for ctx.Err() == nil {
		w.mu.Lock()
		for !w.roomLocked() && ctx.Err() == nil {
			w.space.Wait()
		}
		w.mu.Unlock()
		parts := parts()
		if len(parts) == 0 {
			if once {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if recoverOwn {
			// A read may have been served but its reply lost: what it
			// took is pending under our name and would never come back.
			ds, err := w.rq.ReadOwnPending(ctx, w.opts.ID, parts)
			if err != nil {
				// Nothing new may be read before these: their connections'
				// later frames would overtake them.
				w.Stats.RedisErrs.Add(1)
				backoff.Wait(ctx)
				continue
			}
			{
				recoverOwn = false
				w.learnHandled(ctx, ds)
				w.mu.Lock()
				n := 0
				busy := make(map[string]bool) // entries held already, read before the failure
				for _, d := range ds {
					if pt := w.owned[d.Part]; pt != nil && pt.inflight[d.ID] != nil {
						busy[d.ID] = true
					}
				}
				for i := range ds {
					pt := w.owned[ds[i].Part]
					if pt == nil || busy[ds[i].ID] {
						continue
					}
					w.admitLocked(pt, &ds[i])
					n++
				}
				w.mu.Unlock()
				if n > 0 {
					log.Warn("recovered frames read before a connection failure", "n", n)
				}
			}
		}
		// Read only partitions still held and not being given back, and
		// mark them read, in one step: a release that starts now waits
		// for this read, so nothing it returns is left pending under this
		// worker after the partition changed hands.
		w.mu.Lock()
		reading := make([]*partition, 0, len(parts))
		for _, p := range parts {
			if pt := w.owned[p]; pt != nil && !pt.releasing {
				pt.reading++
				reading = append(reading, pt)
			}
		}
		w.mu.Unlock()
		if len(reading) < len(parts) {
			parts = parts[:0]
			for _, pt := range reading {
				parts = append(parts, pt.n)
			}
		}
		doneReading := func() {
			for _, pt := range reading {
				pt.reading--
			}
			w.space.Broadcast()
		}
		if len(parts) == 0 {
			continue
		}
		w.Stats.Reads.Add(1)
		ds, err := w.rq.ReadInbound(ctx, w.opts.ID, parts, w.readCount(perEntry, bytesPerEntry), 500*time.Millisecond)
		if err != nil {
			w.mu.Lock()
			doneReading()
			w.mu.Unlock()
			recoverOwn = true
			if ctx.Err() != nil {
				return
			}
			w.Stats.RedisErrs.Add(1)
			log.Error("read failed, retrying", "err", err, "backoff", backoff.Delay())
			backoff.Wait(ctx)
			continue
		}
		backoff.Reset()
		if entries := countEntries(ds); entries > 0 {
			perEntry = 0.8*perEntry + 0.2*float64(len(ds))/float64(entries)
			bytesPerEntry = max(0.9*bytesPerEntry, float64(biggestEntry(ds)))
		}
		w.learnHandled(ctx, ds)
		w.mu.Lock()
		for i := range ds {
			pt := w.owned[ds[i].Part]
			if pt == nil {
				// Lease lost while reading: the entry stays pending and the
				// next owner claims it.
				continue
			}
			w.admitLocked(pt, &ds[i])
		}
		doneReading()
		w.mu.Unlock()
	}
}

// mergeDeliveries merges two lists of deliveries into stream order (by
// entry, then by envelope), dropping an envelope that is in both: each
// must be admitted once, as its entry is acknowledged when all of its
// envelopes are done.
func mergeDeliveries(a, b []queue.Delivery) []queue.Delivery {
	all := append(a, b...)
	slices.SortStableFunc(all, func(x, y queue.Delivery) int {
		if c := queue.CompareIDs(x.ID, y.ID); c != 0 {
			return c
		}
		return x.Index - y.Index
	})
	return slices.CompactFunc(all, func(x, y queue.Delivery) bool { return x.ID == y.ID && x.Index == y.Index })
}

// maxEntryGuess is the bytes an entry is assumed to hold before reads
// tell: the byte cap then lets a first read take at least
// MaxHeldBytes/maxEntryGuess entries.
const maxEntryGuess = 64 << 10

// biggestEntry returns the bytes (heldSize) of the biggest entry in ds.
func biggestEntry(ds []queue.Delivery) int64 {
	var most, cur int64
	for i := range ds {
		if i > 0 && (ds[i].ID != ds[i-1].ID || ds[i].Part != ds[i-1].Part) {
			cur = 0
		}
		cur += heldSize(&ds[i])
		most = max(most, cur)
	}
	return most
}

// countEntries counts the entries ds came in (a bundle's envelopes are
// consecutive).
func countEntries(ds []queue.Delivery) int {
	n := 0
	for i, d := range ds {
		if i == 0 || d.ID != ds[i-1].ID || d.Part != ds[i-1].Part {
			n++
		}
	}
	return n
}

func (w *Worker) admit(pt *partition, d *queue.Delivery) {
	w.mu.Lock()
	w.admitLocked(pt, d)
	w.mu.Unlock()
}

// admitLocked queues d behind the envelopes of its connection. The
// envelopes of one entry are admitted together.
func (w *Worker) admitLocked(pt *partition, d *queue.Delivery) {
	e := pt.inflight[d.ID]
	if e == nil {
		e = &entry{part: d.Part, id: d.ID, left: d.Count, redelivered: d.Deliveries > 1}
		if d.Bundled && d.Env.Gateway != "" {
			e.gw, e.bundled = d.Env.Gateway, int64(d.Count)
		}
		pt.inflight[d.ID] = e
	}
	if e.taken == d.Count {
		// Admitted already (a bug elsewhere if it happens): running it
		// twice would acknowledge the entry before its last envelope.
		w.log.Error("envelope admitted twice; ignoring the copy", "partition", d.Part, "id", d.ID, "index", d.Index)
		return
	}
	e.taken++
	if d.Bundled && d.Index == 0 && d.Env.Gateway != "" && !w.readsBatches(d.Env.Gateway) {
		w.gwMu.Lock()
		w.batchGW[d.Env.Gateway] = true
		w.gwMu.Unlock()
	}
	w.inflight++
	w.Stats.InFlight.Store(int64(w.inflight))
	w.held += heldSize(d)
	w.Stats.HeldBytes.Store(w.held)
	key := d.Env.Conn
	if key == "" {
		key = "\x00" + d.ID + "/" + strconv.Itoa(d.Index) // no connection: no order to keep
	}
	q := w.queues[key]
	if q == nil {
		q = connQueues.Get().(*connQueue)
		q.key = key
		w.queues[key] = q
	}
	q.items = append(q.items, item{d: d, e: e})
	if d.Env.Kind == queue.KindClose {
		q.closing++ // the frames queued before it are dropped (runner)
	}
	if !q.running {
		q.running = true
		w.runnable = append(w.runnable, q)
		w.work.Signal()
	}
}

// runTurn is how many envelopes a runner takes from one connection before
// it lets the others have a turn.
const runTurn = 16

// runner runs the envelopes of runnable connection queues, each queue's
// one after another, until the worker stops. Concurrency runners make the
// handlers' parallelism; they live as long as the worker, so their stacks
// stay grown.
func (w *Worker) runner() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for len(w.runnable) == 0 && !w.stopRunners {
			w.work.Wait()
		}
		if w.stopRunners {
			return // the drain is over: what is left stays pending in Redis
		}
		q := w.runnable[0]
		w.runnable[0] = nil
		w.runnable = w.runnable[1:]
		for n := 0; n < runTurn && len(q.items) > 0 && !w.stopRunners; n++ {
			it := q.items[0]
			q.items[0] = item{}
			q.items = q.items[1:]
			drop := it.d.Env.Kind == queue.KindFrame && q.closing > 0
			if it.d.Env.Kind == queue.KindClose {
				q.closing--
			}
			w.mu.Unlock()
			if drop {
				w.done(it, w.dropClosed(*it.d))
			} else {
				w.done(it, w.handle(*it.d))
			}
			w.mu.Lock()
		}
		if len(q.items) > 0 {
			w.runnable = append(w.runnable, q) // back of the line
		} else {
			q.running = false
			delete(w.queues, q.key)
			q.key, q.items, q.closing = "", q.items[:0], 0
			connQueues.Put(q)   // with its items' room, for the next connection
			w.space.Broadcast() // one connection fewer with work: room to read
		}
		if len(w.runnable) == 0 {
			// Nothing else to run: send what this runner queued rather
			// than wait for the writer goroutine to wake (the reply path
			// of a quiet farm). While there is work, the writer batches.
			w.mu.Unlock()
			w.wr.tryDrain()
			w.mu.Lock()
		}
	}
}

// outcome is what became of an envelope.
type outcome int

const (
	finished outcome = iota // ran, or went to the dead letters: its mark moves on
	skipped                 // a copy of one finished before
	kept                    // not finished (dead-lettering failed): its entry stays pending
)

// handle runs the app on one envelope.
func (w *Worker) handle(d queue.Delivery) outcome {
	if d.Env.Kind == 0 {
		w.log.Error("unreadable entry: moving to dead letters", "partition", d.Part, "id", d.ID, "index", d.Index)
		return w.deadLetter(d, "unreadable entry")
	}
	if !d.Requeued && w.duplicate(d) {
		w.Stats.Duplicates.Add(1)
		return skipped
	}
	if d.Deliveries > 1 {
		// A worker died with this entry, maybe because of this envelope.
		// Run it alone, with everything before it acknowledged, and count
		// the start in Redis first: an envelope that kills every worker
		// it starts on is then found, and dead-lettered alone.
		w.suspect.Lock()
		defer w.suspect.Unlock()
		w.wr.flush(w.deadlines.parent())
		sctx, cancel := context.WithTimeout(w.deadlines.parent(), 5*time.Second)
		starts, err := w.q.StartTry(sctx, d.Part, d.ID, d.Index)
		cancel()
		if err != nil {
			w.Stats.RedisErrs.Add(1)
			w.log.Warn("could not count a redelivered frame's start; running it", "id", d.ID, "err", err)
		}
		// Its tries so far: the lone starts before this one, and the first
		// delivery, which ran beside others.
		if err == nil && starts >= int64(w.opts.MaxDeliveries) {
			w.log.Error("frame failed too often: moving to dead letters",
				"partition", d.Part, "id", d.ID, "index", d.Index, "conn", d.Env.Conn, "n", starts)
			d.Deliveries = starts
			if w.deadLetter(d, "max deliveries") == kept {
				return kept
			}
			if d.Env.Kind == queue.KindFrame {
				if b, err := box.Decode(d.Env.Frame); err == nil {
					w.sendFrame(d.Env.Gateway, d.Env.Conn, d.Env.At, b.Cmd, box.RetHandlerFailed, b.SN, nil)
				} else {
					w.complete(d.Env)
				}
			}
			return finished
		}
	}
	r := &Request{
		Kind:       Kind(d.Env.Kind),
		Conn:       Conn{Gateway: d.Env.Gateway, ID: d.Env.Conn, Addr: d.Env.Addr, UID: d.Env.UID},
		Deliveries: d.Deliveries,
		Store:      w.st,
		w:          w,
		at:         d.Env.At,
	}
	if r.Conn.UID == "" && r.Conn.ID != "" {
		// Logged in by an earlier frame whose bind the gateway had not
		// seen when it queued this one.
		r.Conn.UID = w.uidOf(r.Conn.ID)
	}
	if len(d.Env.Frame) > 0 {
		b, err := box.Decode(d.Env.Frame)
		if err != nil {
			o := w.deadLetter(d, "bad frame: "+err.Error())
			if o == finished {
				w.complete(d.Env)
			}
			return o
		}
		r.Box = b
	}
	ctx := w.deadlines.get(w.opts.HandlerTimeout)
	start := time.Now()
	err := w.serve(ctx, r)
	for backoff := retry.New(50*time.Millisecond, time.Second); err != nil && !r.replied && retry.IsTransient(err) && ctx.Err() == nil; {
		// Redis was unreachable: run the handler again once it is back
		// rather than failing the player's request.
		w.Stats.RedisErrs.Add(1)
		w.logs.Warn("redis outage", "handler hit a Redis outage; retrying", "cmd", r.Box.Cmd, "conn", r.Conn.ID, "err", err, "backoff", backoff.Delay())
		backoff.Wait(ctx)
		err = w.serve(ctx, r)
	}
	took := time.Since(start)
	w.Stats.HandlerNs.Add(int64(took))
	w.Stats.HandlerTime.Observe(took)
	w.Stats.Handled.Add(1)
	w.answer(r, err)
	if r.Kind == Frame && !r.replied {
		w.complete(d.Env)
	}
	if r.Kind == Close && r.Conn.UID != "" {
		// A disconnect ends the session, unless a newer login replaced it.
		uctx, cancel := context.WithTimeout(w.deadlines.parent(), 5*time.Second)
		if _, err := w.st.UnbindUser(uctx, r.Conn.UID, store.Session{Gateway: r.Conn.Gateway, Conn: r.Conn.ID}); err != nil {
			w.logs.Error("unbind on close", "unbind on close failed", "uid", r.Conn.UID, "conn", r.Conn.ID, "err", err)
		}
		cancel()
	}
	return finished
}

// serve runs the app, turning a panic into an error.
func (w *Worker) serve(ctx context.Context, r *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: stack()}
		}
	}()
	return w.app.ServeBox(ctx, r)
}

// answer maps a handler's error to the reply the client gets (spec §2).
func (w *Worker) answer(r *Request, err error) {
	if err == nil || errors.Is(err, ErrStop) {
		return
	}
	var we *Error
	var pe *panicError
	switch {
	case errors.As(err, &we):
		if we.Ret == box.RetNoRoute {
			w.Stats.NoRoute.Add(1)
			w.logs.Log(slog.LevelDebug, "no route", "no route", "cmd", r.Box.Cmd, "conn", r.Conn.ID)
		}
		if r.Kind == Frame && !r.replied {
			_ = r.ReplyRet(we.Ret, nil)
		}
		return
	case errors.As(err, &pe):
		// One client can make a route panic on every frame: a stack
		// trace per route and interval, the rest counted (Stats.Failed).
		w.Stats.Failed.Add(1)
		w.panics.Error("panic "+routeOf(r), "handler panicked", "cmd", r.Box.Cmd, "conn", r.Conn.ID, "kind", r.Kind.String(),
			"err", pe.value, "stack", string(pe.stack))
	default:
		w.Stats.Failed.Add(1)
		w.logs.Error("failed "+routeOf(r), "handler failed", "cmd", r.Box.Cmd, "conn", r.Conn.ID, "kind", r.Kind.String(), "err", err)
	}
	if r.Kind == Frame && !r.replied {
		_ = r.ReplyRet(box.RetHandlerFailed, nil)
	}
}

// routeOf names r's route for a rate-limited log cause: its kind, and for
// frames its cmd.
func routeOf(r *Request) string {
	if r.Kind == Frame || r.Kind == System {
		return r.Kind.String() + " cmd=" + strconv.Itoa(int(r.Box.Cmd))
	}
	return r.Kind.String()
}

// complete tells env's gateway that a frame was handled without a reply
// (an OutWrite with no frames): the gateway counts the frames each
// connection has in flight, and would otherwise wait for an answer that
// never comes. Only messages with At count there.
func (w *Worker) complete(env queue.Envelope) {
	if env.Kind == queue.KindFrame && env.Conn != "" && env.At > 0 {
		w.sendOut(env.Gateway, &queue.Out{Kind: queue.OutWrite, Conn: env.Conn, At: env.At})
	}
}

// dropClosed is what becomes of a frame whose connection's close event
// was admitted before it started: the client left, so nobody reads its
// answer; it is not run, and its mark moves on as if it had.
func (w *Worker) dropClosed(d queue.Delivery) outcome {
	if !d.Requeued && w.duplicate(d) {
		w.Stats.Duplicates.Add(1)
		return skipped
	}
	w.Stats.ClosedDropped.Add(1)
	return finished
}

// duplicate reports whether d is a copy of an entry this worker already
// handled: a gateway resends a batch when Redis failed mid-way.
func (w *Worker) duplicate(d queue.Delivery) bool {
	if d.Env.Conn == "" || d.Env.Seq == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	m, ok := w.lastSeq[d.Env.Conn]
	if ok && d.Env.Seq <= m.seq {
		return true
	}
	m.seq = d.Env.Seq
	if d.Env.Kind == queue.KindClose {
		m.closed = time.Now()
	}
	w.lastSeq[d.Env.Conn] = m
	return false
}

// forgetClosedAfter is how long a closed connection's sequence mark is
// kept: a copy of its events cannot arrive that late.
const forgetClosedAfter = time.Minute

// forgetClosed drops the sequence marks of connections closed a while
// ago. The lease loop calls it now and then: it scans every connection,
// so it must not run per frame.
func (w *Worker) forgetClosed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	cut := time.Now().Add(-forgetClosedAfter)
	for id, m := range w.lastSeq {
		if !m.closed.IsZero() && m.closed.Before(cut) {
			delete(w.lastSeq, id)
		}
	}
}

// deadLetter moves d to its partition's dead letters, retrying through a
// Redis outage for a while. If that fails, d's entry is not acknowledged:
// it stays pending, and comes back when its partition changes hands.
func (w *Worker) deadLetter(d queue.Delivery, reason string) outcome {
	ctx, cancel := context.WithTimeout(w.deadlines.parent(), 10*time.Second)
	defer cancel()
	for backoff := retry.New(50*time.Millisecond, time.Second); ; {
		err := w.q.DeadLetter(ctx, d, reason)
		if err == nil {
			w.Stats.DeadLetters.Add(1)
			return finished
		}
		if !retry.IsTransient(err) || ctx.Err() != nil {
			w.Stats.RedisErrs.Add(1)
			w.log.Error("dead letter failed; the entry stays pending", "id", d.ID, "err", err)
			return kept
		}
		backoff.Wait(ctx)
	}
}

// done records what became of an envelope: it queues the connection's
// handled mark behind whatever the handler sent, and the entry's
// acknowledgement once this was its last envelope. Only then does the
// worker forget the envelope, so a release that waits for the partition's
// entries finds the acknowledgement queued.
func (w *Worker) done(it item, o outcome) {
	d, e := it.d, it.e
	// A dead gateway's marks were deleted with it.
	conn := d.Env.Conn != "" && d.Env.Gateway != "" && d.Env.Seq > 0 && !w.gatewayDead(d.Env.Gateway)
	w.mu.Lock()
	e.left--
	last := e.left == 0
	if o == kept {
		e.keep = true
	}
	if conn && d.Env.Kind == queue.KindClose {
		e.forget = append(e.forget, connRef{d.Env.Gateway, d.Env.Conn})
	}
	w.mu.Unlock()
	if o == finished && conn && !d.Requeued { // a requeued one is older than the mark
		w.wr.mark(d.Env.Gateway, d.Env.Conn, d.Env.Seq)
	}
	if last && !e.keep {
		w.wr.ack(e)
	}
	w.mu.Lock()
	if last {
		if pt := w.owned[e.part]; pt != nil && pt.inflight[e.id] == e {
			delete(pt.inflight, e.id)
		}
	}
	w.inflight--
	w.Stats.InFlight.Store(int64(w.inflight))
	w.held -= heldSize(d)
	w.Stats.HeldBytes.Store(w.held)
	w.mu.Unlock()
	w.space.Broadcast()
}

// readsBatches reports whether gateway gw takes queue.OutBatch messages.
func (w *Worker) readsBatches(gw string) bool {
	w.gwMu.RLock()
	defer w.gwMu.RUnlock()
	return w.batchGW[gw]
}

// gatewayDead reports whether gateway gw was found dead and reaped.
func (w *Worker) gatewayDead(gw string) bool {
	w.gwMu.RLock()
	defer w.gwMu.RUnlock()
	_, dead := w.deadGW[gw]
	return dead
}

// ErrFrameTooLarge is returned by replies and pushes whose frame (header
// and body) is over Options.MaxFrame: nothing is sent. A client is not
// made to take a frame it may be unable to read, and a gateway does not
// drop players for a message bigger than their output buffer.
var ErrFrameTooLarge = errors.New("worker: frame too large")

// checkFrame refuses a frame of cmd with a body of n bytes over MaxFrame:
// counted, logged (rate-limited), and an error wrapping ErrFrameTooLarge.
func (w *Worker) checkFrame(cmd int32, n int) error {
	size := box.HeaderLen + n
	if size <= w.opts.MaxFrame {
		return nil
	}
	w.Stats.OversizeRefused.Add(1)
	w.logs.Warn("oversize cmd="+strconv.Itoa(int(cmd)), "frame over --max-frame refused; nothing sent",
		"cmd", cmd, "bytes", size, "max", w.opts.MaxFrame)
	return fmt.Errorf("%w: cmd %d: %d bytes, at most %d", ErrFrameTooLarge, cmd, size, w.opts.MaxFrame)
}

// writeTo queues frames for a connection on a gateway.
func (w *Worker) writeTo(gw, conn string, frames []byte) {
	w.sendOut(gw, &queue.Out{Kind: queue.OutWrite, Conn: conn, Frames: frames})
}

func (w *Worker) sendOut(gw string, m *queue.Out) {
	if w.canSend(gw, m.Conn) {
		w.wr.out(gw, queue.AppendOut(make([]byte, 0, queue.OutSize(m)), m))
	}
}

// sendFrame queues one frame for a connection as an OutWrite, encoded in
// one allocation (the reply path).
func (w *Worker) sendFrame(gw, conn string, at int64, cmd, ret int32, sn uint32, body []byte) {
	if !w.canSend(gw, conn) {
		return
	}
	m := queue.Out{Kind: queue.OutWrite, Conn: conn, At: at}
	b := queue.AppendOut(make([]byte, 0, queue.OutSize(&m)+box.HeaderLen+len(body)), &m)
	w.wr.out(gw, box.Append(b, cmd, ret, sn, body)) // Frames come last
}

func (w *Worker) canSend(gw, conn string) bool {
	if gw == "" || strings.ContainsAny(gw, "{}") {
		w.log.Debug("no gateway for outbound message", "conn", conn)
		return false
	}
	// A dead gateway's list was deleted; writing would only recreate it.
	return !w.gatewayDead(gw)
}

// deadlines hands out handlers' contexts. A context with a timer of its
// own for every frame costs more than a small handler does, so handlers
// that start within the same deadlineStep share one, whose deadline is at
// most deadlineStep past their own.
type deadlines struct {
	base   context.Context // nil: context.Background(); ends when Run stops
	mu     sync.Mutex
	at     time.Time
	ctx    context.Context
	cancel context.CancelFunc // of ctx; it ends by itself at its deadline
}

const deadlineStep = 10 * time.Millisecond

// parent is the context every handler's derives from: it ends when the
// worker stops, so no handler or retry outlives Run by much.
func (d *deadlines) parent() context.Context {
	if d.base == nil {
		return context.Background()
	}
	return d.base
}

func (d *deadlines) get(timeout time.Duration) context.Context {
	want := time.Now().Add(timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil || d.at.Before(want) {
		d.at = want.Add(deadlineStep)
		d.ctx, d.cancel = context.WithDeadline(d.parent(), d.at)
	}
	return d.ctx
}
