package worker

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"sync"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/stages"
)

// dispatcher owns the envelopes this worker holds, read and not yet done:
// it queues each behind the earlier envelopes of its connection, and its
// Concurrency runner goroutines take the queues that have work, each
// connection's envelopes one at a time, in order, different connections in
// parallel. It decides when the reader may read more (fair admission) and
// tells the outbox when an entry is done.
//
// Four kinds of waiters wait on it, each on a signal of its own, made only
// while somebody waits: runners for work (work), the reader for room
// (roomFreed), the drain for nothing held (idle), and a partition's release
// for its entries to be done (partEntries.idle).
type dispatcher struct {
	log         *slog.Logger
	stats       *Stats
	concurrency int
	maxBytes    int64 // Options.MaxHeldBytes
	proc        envelopeRunner
	out         results
	gws         gatewayBook

	mu      sync.Mutex
	queues  map[string]*connQueue // connections with work (see roomLocked)
	entries map[int]*partEntries  // entries in flight, per partition
	// inflight and held count the envelopes read and not yet done, and
	// their bytes: hard caps on the memory a worker's reads take.
	inflight int
	held     int64
	// runnable lists the connection queues with envelopes and no runner;
	// the runners take them (work signals one).
	runnable []*connQueue
	work     *sync.Cond
	waiting  int           // runners waiting for work
	woke     bool          // an admission since handOff woke a runner of an idle worker
	stopped  bool          // the drain is over: runners take nothing more
	roomWait chan struct{} // made by a reader waiting for room; closed when there is
	idleWait chan struct{} // made by the drain; closed when nothing is held
}

// envelopeRunner runs one envelope (the processor).
type envelopeRunner interface {
	// handle runs the app on d.
	handle(d queue.Delivery) outcome
	// dropClosed is what becomes of d, a frame whose connection's close
	// event was admitted before it started: it is not run.
	dropClosed(d queue.Delivery) outcome
}

// results takes what the dispatcher finished, in order (the outbox).
type results interface {
	mark(gw, conn string, seq uint64) // a connection's handled mark
	ack(a *ack)                       // an entry all of whose envelopes are done
	tryDrain()                        // send what is queued, unless a send is in progress
}

// gatewayBook says which gateways were found dead (the reaper).
type gatewayBook interface{ dead(gw string) bool }

// entry is a stream entry being worked on. A gateway's entry bundles many
// envelopes, of many connections; it is acknowledged once all are done.
type entry struct {
	ack        // what its acknowledgement carries; forget grows as its envelopes finish
	left  int  // envelopes not done yet
	taken int  // envelopes admitted: at most all of them, once each
	keep  bool // an envelope could not be finished: do not acknowledge
}

// partEntries are one partition's entries in flight, by id.
type partEntries struct {
	byID map[string]*entry
	idle chan struct{} // made by a release waiting; closed when byID empties
}

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

// outcome is what became of an envelope.
type outcome int

const (
	finished outcome = iota // ran, or went to the dead letters: its mark moves on
	skipped                 // a copy of one finished before
	kept                    // not finished (dead-lettering failed): its entry stays pending
)

type dispatcherParams struct {
	log          *slog.Logger
	stats        *Stats
	concurrency  int
	maxHeldBytes int64
	proc         envelopeRunner
	out          results
	gateways     gatewayBook
}

func newDispatcher(p dispatcherParams) *dispatcher {
	d := &dispatcher{
		log:         p.log,
		stats:       p.stats,
		concurrency: p.concurrency,
		maxBytes:    p.maxHeldBytes,
		proc:        p.proc,
		out:         p.out,
		gws:         p.gateways,
		queues:      make(map[string]*connQueue),
		entries:     make(map[int]*partEntries),
	}
	d.work = sync.NewCond(&d.mu)
	return d
}

// start starts the runners. They live as long as the worker, so their
// stacks stay grown; shutdown stops them.
func (d *dispatcher) start(wg *sync.WaitGroup) {
	for range d.concurrency {
		wg.Add(1)
		go func() { defer wg.Done(); d.runner() }()
	}
}

// shutdown ends the runners once their current envelope is done: what is
// left stays pending in Redis, for other workers.
func (d *dispatcher) shutdown() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.work.Broadcast()
}

// A worker's room is counted in connections with work, not envelopes, so
// that one connection's long serial backlog holds one place, not the
// whole room: a worker keeps reading while fewer than roomConns
// connections have envelopes queued or running (an envelope with no
// connection counts as one), so other connections' frames are read and
// run beside it. Hard caps bound the memory: the envelopes held
// (maxHeld) and their bytes (Options.MaxHeldBytes). A read takes whole
// entries, so each bound is approximate (reader.readCount).
func (d *dispatcher) roomConns() int { return 4 * d.concurrency }

func (d *dispatcher) maxHeld() int { return 64 * d.concurrency }

// roomLocked reports whether the worker may read more.
func (d *dispatcher) roomLocked() bool {
	return len(d.queues) < d.roomConns() && d.inflight < d.maxHeld() && d.held < d.maxBytes
}

// room returns the room left: connections, envelopes and bytes.
func (d *dispatcher) room() (conns, envs int, bytes int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.roomConns() - len(d.queues), d.maxHeld() - d.inflight, d.maxBytes - d.held
}

// waitRoom returns once the worker may read more (true), or when ctx ends
// (false).
func (d *dispatcher) waitRoom(ctx context.Context) bool {
	d.mu.Lock()
	for !d.roomLocked() {
		ch := signalOf(&d.roomWait)
		d.mu.Unlock()
		if !waitSignal(ctx, ch) {
			return false
		}
		d.mu.Lock()
	}
	d.mu.Unlock()
	return true
}

// freedLocked wakes the readers waiting for room, if there is room now.
func (d *dispatcher) freedLocked() {
	if d.roomWait != nil && d.roomLocked() {
		close(d.roomWait)
		d.roomWait = nil
	}
}

// waitIdle returns once nothing is queued or running (true), or when ctx
// ends (false).
func (d *dispatcher) waitIdle(ctx context.Context) bool {
	d.mu.Lock()
	if d.inflight == 0 {
		d.mu.Unlock()
		return true
	}
	ch := signalOf(&d.idleWait)
	d.mu.Unlock()
	return waitSignal(ctx, ch)
}

// holdsPartition reports whether an entry of partition p is in flight.
func (d *dispatcher) holdsPartition(p int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	pe := d.entries[p]
	return pe != nil && len(pe.byID) > 0
}

// waitPartition returns once no entry of partition p is in flight (true),
// or when ctx ends (false).
func (d *dispatcher) waitPartition(ctx context.Context, p int) bool {
	d.mu.Lock()
	pe := d.entries[p]
	if pe == nil || len(pe.byID) == 0 {
		d.mu.Unlock()
		return true
	}
	ch := signalOf(&pe.idle)
	d.mu.Unlock()
	return waitSignal(ctx, ch)
}

// signalOf returns the signal *sig, made now if nobody waits on it yet:
// a signal exists only while somebody waits, and whoever ends the wait
// closes it and sets *sig to nil. Call with d.mu held.
func signalOf(sig *chan struct{}) chan struct{} {
	if *sig == nil {
		*sig = make(chan struct{})
	}
	return *sig
}

// waitSignal returns true once ch is closed, false if ctx ends first.
func waitSignal(ctx context.Context, ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// holding returns how many envelopes are held.
func (d *dispatcher) holding() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight
}

// admit queues ds behind the envelopes of their connections, in order;
// the envelopes of one entry are admitted together. With recovered, the
// entries this worker holds already (read before a failure, or under an
// earlier lease of their partition) are left alone. It returns how many
// envelopes it admitted.
func (d *dispatcher) admit(ds []queue.Delivery, recovered bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	type entryKey struct {
		part int
		id   string
	}
	var busy map[entryKey]bool
	if recovered {
		for i := range ds {
			if pe := d.entries[ds[i].Part]; pe != nil && pe.byID[ds[i].ID] != nil {
				if busy == nil {
					busy = make(map[entryKey]bool)
				}
				busy[entryKey{ds[i].Part, ds[i].ID}] = true
			}
		}
	}
	n := 0
	for i := range ds {
		if busy[entryKey{ds[i].Part, ds[i].ID}] {
			continue
		}
		if d.admitLocked(&ds[i]) {
			n++
		}
	}
	return n
}

// admitLocked queues one envelope; it reports false for a copy of one
// admitted already.
func (d *dispatcher) admitLocked(dl *queue.Delivery) bool {
	pe := d.entries[dl.Part]
	if pe == nil {
		pe = &partEntries{byID: make(map[string]*entry)}
		d.entries[dl.Part] = pe
	}
	e := pe.byID[dl.ID]
	if e == nil {
		e = &entry{ack: ack{part: dl.Part, id: dl.ID, redelivered: dl.Deliveries > 1}, left: dl.Count}
		if dl.Bundled && dl.Env.Gateway != "" {
			e.gw, e.bundled = dl.Env.Gateway, int64(dl.Count)
		}
		pe.byID[dl.ID] = e
	}
	if e.taken == dl.Count {
		// Admitted already (a bug elsewhere if it happens): running it
		// twice would acknowledge the entry before its last envelope.
		d.log.Error("envelope admitted twice; ignoring the copy", "partition", dl.Part, "id", dl.ID, "index", dl.Index)
		return false
	}
	e.taken++
	d.inflight++
	d.stats.InFlight.Store(int64(d.inflight))
	d.held += heldSize(dl)
	d.stats.HeldBytes.Store(d.held)
	key := dl.Env.Conn
	if key == "" {
		key = "\x00" + dl.ID + "/" + strconv.Itoa(dl.Index) // no connection: no order to keep
	}
	q := d.queues[key]
	if q == nil {
		q = connQueues.Get().(*connQueue)
		q.key = key
		d.queues[key] = q
	}
	q.items = append(q.items, item{d: dl, e: e})
	if dl.Env.Kind == queue.KindClose {
		q.closing++ // the frames queued before it are dropped (runner)
	}
	if !q.running {
		q.running = true
		d.runnable = append(d.runnable, q)
		if d.waiting == d.concurrency {
			d.woke = true
		}
		d.work.Signal()
	}
	return true
}

// handOff lets the runner that an admission since the last call woke on
// an idle worker run at once on the calling goroutine's thread: the
// reader calls it once it has admitted a read. Signalled, the runner
// would wait for the Go scheduler to wake another thread to take it,
// about 30 µs of a 1 x 1 round trip on a 2-core machine
// (docs/benchmarks.md); yielding runs it here, and the reader's next read
// follows as soon as the runner has sent its results and waits on the
// network. A busy worker's runners are awake already: no yield.
func (d *dispatcher) handOff() {
	d.mu.Lock()
	woke := d.woke
	d.woke = false
	d.mu.Unlock()
	if woke {
		runtime.Gosched()
	}
}

// envelopeOverhead is what an envelope held costs beyond its bytes: its
// delivery, item and decoded fields.
const envelopeOverhead = 256

// heldSize is what envelope d counts against Options.MaxHeldBytes.
func heldSize(d *queue.Delivery) int64 { return int64(len(d.Raw)) + envelopeOverhead }

// runTurn is how many envelopes a runner takes from one connection before
// it lets the others have a turn.
const runTurn = 16

// runner runs the envelopes of runnable connection queues, each queue's
// one after another, until shutdown. Concurrency runners make the
// handlers' parallelism.
func (d *dispatcher) runner() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for len(d.runnable) == 0 && !d.stopped {
			d.waiting++
			d.work.Wait()
			d.waiting--
		}
		if d.stopped {
			return // the drain is over: what is left stays pending in Redis
		}
		q := d.runnable[0]
		d.runnable[0] = nil
		d.runnable = d.runnable[1:]
		for n := 0; n < runTurn && len(q.items) > 0 && !d.stopped; n++ {
			it := q.items[0]
			q.items[0] = item{}
			q.items = q.items[1:]
			drop := it.d.Env.Kind == queue.KindFrame && q.closing > 0
			if it.d.Env.Kind == queue.KindClose {
				q.closing--
			}
			d.mu.Unlock()
			if drop {
				d.finish(it, d.proc.dropClosed(*it.d))
			} else {
				stages.Mark("wk.run")
				d.finish(it, d.proc.handle(*it.d))
			}
			d.mu.Lock()
		}
		if len(q.items) > 0 {
			d.runnable = append(d.runnable, q) // back of the line
		} else {
			q.running = false
			delete(d.queues, q.key)
			q.key, q.items, q.closing = "", q.items[:0], 0
			connQueues.Put(q) // with its items' room, for the next connection
			d.freedLocked()   // one connection fewer with work: room to read
		}
		if len(d.runnable) == 0 {
			// Nothing else to run: send what this runner queued rather
			// than wait for the outbox's goroutine to wake (the reply path
			// of a quiet farm). While there is work, the outbox batches.
			d.mu.Unlock()
			d.out.tryDrain()
			d.mu.Lock()
		}
	}
}

// finish records what became of an envelope: it queues the connection's
// handled mark behind whatever the handler sent, and the entry's
// acknowledgement once this was its last envelope. Only then does the
// worker forget the envelope, so a release that waits for the partition's
// entries finds the acknowledgement queued.
func (d *dispatcher) finish(it item, o outcome) {
	dl, e := it.d, it.e
	// A dead gateway's marks were deleted with it.
	conn := dl.Env.Conn != "" && dl.Env.Gateway != "" && dl.Env.Seq > 0 && !d.gws.dead(dl.Env.Gateway)
	d.mu.Lock()
	e.left--
	last := e.left == 0
	if o == kept {
		e.keep = true
	}
	if conn && dl.Env.Kind == queue.KindClose {
		e.forget = append(e.forget, connRef{dl.Env.Gateway, dl.Env.Conn})
	}
	d.mu.Unlock()
	if o == finished && conn && !dl.Requeued { // a requeued one is older than the mark
		d.out.mark(dl.Env.Gateway, dl.Env.Conn, dl.Env.Seq)
	}
	if last && !e.keep {
		d.out.ack(&e.ack)
	}
	d.mu.Lock()
	if last {
		if pe := d.entries[e.part]; pe != nil && pe.byID[e.id] == e {
			delete(pe.byID, e.id)
			if len(pe.byID) == 0 && pe.idle != nil {
				close(pe.idle)
				pe.idle = nil
			}
		}
	}
	d.inflight--
	d.stats.InFlight.Store(int64(d.inflight))
	d.held -= heldSize(dl)
	d.stats.HeldBytes.Store(d.held)
	d.freedLocked()
	if d.inflight == 0 && d.idleWait != nil {
		close(d.idleWait)
		d.idleWait = nil
	}
	d.mu.Unlock()
}
