package worker

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/retry"
	"github.com/maple-farm/maple/internal/stages"
)

// reader brings the leased partitions' entries in: new ones, one
// XREADGROUP for all of them (one per partition on Redis Cluster, where
// they live in different slots), as many per partition as fit the room the
// dispatcher has; and the pending ones, when the lease keeper takes a
// partition over (takeOver) or a read's reply was lost (what it took is
// pending under this worker's name). Whatever it brings goes through
// deliver: handled marks first, then the dispatcher.
type reader struct {
	q, rq    *queue.Broker // rq is on the blocking client, its read timeout past mainBlock
	log      *slog.Logger
	stats    *Stats
	id       string // the consumer name
	cluster  bool
	batch    int // Options.Batch
	table    readTable
	dispatch intake
	marks    interface {
		learn(ctx context.Context, ds []queue.Delivery)
	}
	bundles interface{ sawBundle(gw string) } // the outbox

	ctx     context.Context
	cancel  context.CancelFunc
	wg      *sync.WaitGroup // the reads' goroutines
	recover atomic.Bool     // an interim read failed: recover what it took
	sizes   entrySizes      // what recent reads returned, for all reads
}

// entrySizes is what recent reads returned per entry: envelopes, on
// average, and bytes, the biggest entry's, decaying, assumed big until
// reads tell, so that a read does not overshoot the byte cap by much.
type entrySizes struct {
	mu       sync.Mutex
	envs     float64
	bytes    float64
	learning bool // set once a read returned something
}

func (z *entrySizes) get() (envs, bytes float64) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if !z.learning {
		return 1, maxEntryGuess
	}
	return z.envs, z.bytes
}

// learn takes in what a read returned.
func (z *entrySizes) learn(ds []queue.Delivery) {
	entries := countEntries(ds)
	if entries == 0 {
		return
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if !z.learning {
		z.learning, z.envs, z.bytes = true, 1, maxEntryGuess
	}
	z.envs = 0.8*z.envs + 0.2*float64(len(ds))/float64(entries)
	z.bytes = max(0.9*z.bytes, float64(biggestEntry(ds)))
}

// readTable is what the reader asks of the partition table.
type readTable interface {
	active() []int
	startRead(want []int) (parts []int, done func())
	startInterim(p int, l *lease) (ok bool, done func())
	adopt(want []int) <-chan struct{}
	notHeld(parts []int) []int
}

// mainBlock is how long the main read blocks: a partition taken
// meanwhile waits at most this long for it (readInterim covers it).
const mainBlock = 500 * time.Millisecond

// interimBlock is how long an interim read blocks. The main read, when
// it adopts the partition, waits for the interim read in progress (and
// reads none of its partitions meanwhile), so it is short: interim reads
// live until the main read's next round, at most 500 ms.
const interimBlock = 10 * time.Millisecond

// intake is what the reader asks of the dispatcher.
type intake interface {
	waitRoom(ctx context.Context) bool
	room() (conns, envs int, bytes int64)
	admit(ds []queue.Delivery, recovered bool) int
	handOff() // after admit: let a runner it woke run now
}

type readerParams struct {
	queue, blocking *queue.Broker
	log             *slog.Logger
	stats           *Stats
	id              string
	cluster         bool
	batch           int
	table           readTable
	dispatch        intake
	marks           interface {
		learn(ctx context.Context, ds []queue.Delivery)
	}
	bundles interface{ sawBundle(gw string) }
}

func newReader(p readerParams) *reader {
	ctx, cancel := context.WithCancel(context.Background())
	return &reader{q: p.queue, rq: p.blocking, log: p.log, stats: p.stats, id: p.id, cluster: p.cluster,
		batch: p.batch, table: p.table, dispatch: p.dispatch, marks: p.marks, bundles: p.bundles,
		ctx: ctx, cancel: cancel}
}

// start reads until shutdown.
func (r *reader) start(wg *sync.WaitGroup) {
	r.wg = wg
	wg.Add(1)
	go func() { defer wg.Done(); r.run(r.ctx) }()
}

// shutdown stops reading; a read in progress is cut short.
func (r *reader) shutdown() { r.cancel() }

func (r *reader) run(ctx context.Context) {
	if !r.cluster {
		r.loop(ctx, r.log, r.table.active, false)
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
		for _, p := range r.table.active() {
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
					if slices.Contains(r.table.active(), p) {
						return []int{p}
					}
					return nil
				}
				r.loop(ctx, r.log.With("partition", p), one, true)
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

// loop reads the partitions parts() names until ctx ends (or, with once,
// until parts() is empty).
func (r *reader) loop(ctx context.Context, log *slog.Logger, parts func() []int, once bool) {
	backoff := retry.New(10*time.Millisecond, time.Second)
	recoverOwn := false
	main := r.rq.InboundReads(r.id)
	for ctx.Err() == nil {
		if !r.dispatch.waitRoom(ctx) {
			return
		}
		if r.recover.Swap(false) {
			recoverOwn = true
		}
		want := parts()
		if len(want) == 0 {
			if once {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		// Partitions just taken are read on their own until now: wait
		// for every such read in progress (each ends within interimBlock,
		// and none starts once adopted).
		for wait := r.table.adopt(want); wait != nil; wait = r.table.adopt(want) {
			select {
			case <-ctx.Done():
				return
			case <-wait:
			}
		}
		// Read only partitions still held and not being given back; their
		// releases wait for done.
		reading, done := r.table.startRead(want)
		if len(reading) == 0 {
			// All of them are read by interim reads, adopted soon.
			done()
			select {
			case <-ctx.Done():
			case <-time.After(interimBlock):
			}
			continue
		}
		if recoverOwn {
			// A read may have been served but its reply lost: what it
			// took is pending under our name and would never come back.
			ds, err := r.pending(ctx, reading, false)
			if err != nil {
				// Nothing new may be read before these: their connections'
				// later frames would overtake them.
				done()
				r.stats.RedisErrs.Add(1)
				backoff.Wait(ctx)
				continue
			}
			recoverOwn = false
			if n := r.deliver(ctx, ds, reading, true); n > 0 {
				log.Warn("recovered frames read before a connection failure", "n", n)
			}
		}
		r.stats.Reads.Add(1)
		ds, err := main.Read(ctx, reading, r.readCount(), mainBlock)
		if err != nil {
			done()
			recoverOwn = true
			if ctx.Err() != nil {
				return
			}
			r.stats.RedisErrs.Add(1)
			log.Error("read failed, retrying", "err", err, "backoff", backoff.Delay())
			backoff.Wait(ctx)
			continue
		}
		if len(ds) > 0 {
			stages.Mark("wk.read")
		}
		backoff.Reset()
		r.sizes.learn(ds)
		r.deliver(ctx, ds, reading, false)
		done()
	}
}

// interimReads reports whether a partition just taken is read on its own
// first (readInterim): one read blocks on all partitions, and a partition
// added while it waits (up to 500 ms) would wait with it. On a cluster
// each partition has its own reads from the start.
func (r *reader) interimReads() bool { return !r.cluster }

// readInterim reads partition p, just taken (lease l), on its own until
// the main reads adopt it (partitionTable.startRead) or it goes back.
func (r *reader) readInterim(p int, l *lease) {
	if r.wg == nil || r.ctx.Err() != nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, log := r.ctx, r.log.With("partition", p)
		for ctx.Err() == nil {
			if !r.dispatch.waitRoom(ctx) {
				return
			}
			ok, done := r.table.startInterim(p, l)
			if !ok {
				return
			}
			r.stats.Reads.Add(1)
			ds, err := r.rq.ReadInbound(ctx, r.id, []int{p}, r.readCount(), interimBlock)
			if err != nil {
				done()
				// What the read took may be pending under our name: the
				// main loop takes it back before reading on.
				r.recover.Store(true)
				if ctx.Err() == nil {
					r.stats.RedisErrs.Add(1)
					log.Error("read failed", "err", err)
				}
				return
			}
			r.sizes.learn(ds)
			r.deliver(ctx, ds, []int{p}, false)
			done()
		}
	}()
}

// takeOver takes over the entries of partition p, which the lease keeper
// just leased, that were read and never acknowledged: other workers' and
// this worker's own, in stream order, with their delivery counts. They are
// admitted before p is read.
func (r *reader) takeOver(ctx context.Context, p int) error {
	ds, err := r.pending(ctx, []int{p}, true)
	if err != nil {
		return err
	}
	if len(ds) > 0 {
		r.log.Info("took over frames of a stopped worker", "partition", p, "n", len(ds))
		r.stats.Redelivered.Add(int64(len(ds)))
	}
	r.deliver(ctx, ds, nil, true)
	return nil
}

// pending reads the entries of parts pending under this worker's own name
// and, with claim (one partition), claims those pending under others'
// (XPENDING + XCLAIM), merged into stream order.
func (r *reader) pending(ctx context.Context, parts []int, claim bool) ([]queue.Delivery, error) {
	// First the entries pending under this worker's own name, which
	// ClaimPending leaves alone: a read that returned after an earlier
	// lease of the partition was lost (Redis failover) delivered them
	// here, and nothing else would ever hand them out. Read before
	// claiming, as the claimed entries are pending under this name
	// afterwards.
	own, err := r.rq.ReadOwnPending(ctx, r.id, parts)
	if err != nil || !claim {
		return own, err
	}
	claimed, err := r.q.ClaimPending(ctx, parts[0], r.id)
	if err != nil {
		return nil, err
	}
	if len(own) > 0 {
		r.log.Warn("took back frames read under an earlier lease", "partition", parts[0], "n", len(own))
		claimed = mergeDeliveries(claimed, own)
	}
	return claimed, nil
}

// deliver hands what a read of parts returned to the dispatcher: first
// the handled marks of the connections this worker may not know all about
// (marks.learn), then each envelope behind its connection's. Entries of a
// partition whose lease was lost while it was read are left pending: the
// next owner claims them. recovered says the entries may be held here
// already (dispatcher.admit). It returns how many envelopes it admitted.
func (r *reader) deliver(ctx context.Context, ds []queue.Delivery, parts []int, recovered bool) int {
	if len(ds) == 0 {
		return 0
	}
	r.marks.learn(ctx, ds)
	for i := range ds {
		if ds[i].Bundled && ds[i].Index == 0 && ds[i].Env.Gateway != "" {
			r.bundles.sawBundle(ds[i].Env.Gateway)
		}
	}
	if lost := r.table.notHeld(parts); len(lost) > 0 {
		ds = slices.DeleteFunc(ds, func(d queue.Delivery) bool { return slices.Contains(lost, d.Part) })
	}
	n := r.dispatch.admit(ds, recovered)
	r.dispatch.handOff()
	return n
}

// readCount is how many entries the next read takes per partition: as
// many as fit the room left, in connections and envelopes (an entry adds
// at most perEntry of each, the envelopes per entry of recent reads) and
// in bytes (bytesPerEntry), between 1 and Options.Batch.
func (r *reader) readCount() int64 {
	perEntry, bytesPerEntry := r.sizes.get()
	conns, envs, bytes := r.dispatch.room()
	perEntry = max(perEntry, 1)
	n := min(float64(conns)/perEntry, float64(envs)/perEntry, float64(bytes)/max(bytesPerEntry, 1))
	return min(max(int64(n), 1), int64(r.batch))
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
