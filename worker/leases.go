package worker

import (
	"context"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// leaseKeeper keeps this worker's share of the partitions: every Lease/10
// it heartbeats, renews its leases, takes free partitions up to
// ceil(partitions/live workers), and hands extra ones back once their
// frames are done, so a new worker gets work and a dead one's partitions
// move on within one lease. It alone changes the partition table.
type leaseKeeper struct {
	q     *queue.Broker
	log   *slog.Logger
	stats *Stats
	id    string
	parts int
	ttl   time.Duration // Options.Lease
	table *partitionTable
	taker taker
	held  heldEntries
	out   interface{ flush(ctx context.Context) }
	marks interface{ forgetPartition(p int) }
	ready chan struct{} // closed after the first round

	// The rounds run until shutdown; releases until the drain is over
	// (stop).
	roundsCtx  context.Context
	stopRounds context.CancelFunc
	life       context.Context
	abandon    context.CancelFunc
	releases   sync.WaitGroup
}

// taker takes a partition's pending entries over (the reader).
type taker interface {
	takeOver(ctx context.Context, p int) error
}

// heldEntries says when a partition's entries are all done (the
// dispatcher).
type heldEntries interface {
	waitPartition(ctx context.Context, p int) bool
}

type leaseParams struct {
	queue      *queue.Broker
	log        *slog.Logger
	stats      *Stats
	id         string
	partitions int
	lease      time.Duration
	table      *partitionTable
	taker      taker
	held       heldEntries
	outbox     interface{ flush(ctx context.Context) }
	marks      interface{ forgetPartition(p int) }
	ready      chan struct{}
}

func newLeaseKeeper(p leaseParams) *leaseKeeper {
	lk := &leaseKeeper{
		q: p.queue, log: p.log, stats: p.stats, id: p.id, parts: p.partitions, ttl: p.lease,
		table: p.table, taker: p.taker, held: p.held, out: p.outbox, marks: p.marks, ready: p.ready,
	}
	lk.life, lk.abandon = context.WithCancel(context.Background())
	lk.roundsCtx, lk.stopRounds = context.WithCancel(lk.life)
	return lk
}

// start runs lease rounds until shutdown.
func (lk *leaseKeeper) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); lk.run(lk.roundsCtx) }()
}

// shutdown stops the lease rounds: no partition is taken or renewed any
// more. Partitions go back with handBack.
func (lk *leaseKeeper) shutdown() { lk.stopRounds() }

func (lk *leaseKeeper) run(ctx context.Context) {
	offset := mrand.IntN(lk.parts)
	tick := time.NewTicker(lk.ttl / 10)
	defer tick.Stop()
	first := true
	for {
		lk.round(ctx, offset)
		if first {
			first = false
			close(lk.ready)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (lk *leaseKeeper) round(ctx context.Context, offset int) {
	now := time.Now()
	if err := lk.q.Heartbeat(ctx, lk.q.Keys.Workers(), lk.id, now); err != nil {
		if ctx.Err() == nil {
			lk.stats.RedisErrs.Add(1)
			lk.log.Error("heartbeat failed", "err", err)
		}
		return
	}
	alive, err := lk.q.Alive(ctx, lk.q.Keys.Workers(), now, lk.ttl)
	if err != nil || len(alive) == 0 {
		return
	}
	target := (lk.parts + len(alive) - 1) / len(alive)

	// Renew what we hold.
	held := lk.table.held()
	for _, p := range held {
		ok, err := lk.q.AcquireLease(ctx, p, lk.id, lk.ttl)
		if err != nil {
			lk.stats.RedisErrs.Add(1)
			continue // keep it; the next round retries
		}
		if !ok {
			lk.log.Warn("lease lost", "partition", p)
			lk.table.remove(p, nil)
			lk.marks.forgetPartition(p)
		}
	}

	// Give extra partitions back, once their frames are done.
	active := lk.table.activeCount()
	for _, p := range held {
		if active <= target {
			break
		}
		if lk.release(lk.life, p) {
			active--
		}
	}

	// Take free partitions up to our share.
	for i := 0; i < lk.parts && active < target; i++ {
		p := (offset + i) % lk.parts
		if lk.table.holds(p) {
			continue
		}
		ok, err := lk.q.AcquireLease(ctx, p, lk.id, lk.ttl)
		if err != nil || !ok {
			continue
		}
		if err := lk.taker.takeOver(ctx, p); err != nil {
			lk.log.Error("claim failed; giving the partition back", "partition", p, "err", err)
			_ = lk.q.ReleaseLease(ctx, p, lk.id)
			continue
		}
		lk.table.add(p)
		active++
		lk.log.Debug("partition acquired", "partition", p)
	}
	lk.stats.Partitions.Store(int64(active))
}

// release starts giving partition p back, unless it is going back
// already; it reports whether it started.
func (lk *leaseKeeper) release(ctx context.Context, p int) bool {
	l := lk.table.giveBack(p)
	if l == nil {
		return false
	}
	lk.releases.Add(1)
	go func() { defer lk.releases.Done(); lk.giveBack(ctx, p, l) }()
	return true
}

// giveBack hands partition p back once its reads are over and its frames
// handled and acknowledged. If ctx ends first (shutdown), the partition
// stays listed, and giveUpAll gives its lease up when the worker stops.
func (lk *leaseKeeper) giveBack(ctx context.Context, p int, l *lease) {
	if !lk.table.waitReads(ctx, l) || !lk.held.waitPartition(ctx, p) {
		return
	}
	lk.out.flush(ctx)
	if ctx.Err() != nil {
		return
	}
	lk.table.remove(p, l)
	lk.marks.forgetPartition(p)
	if err := lk.q.ReleaseLease(ctx, p, lk.id); err != nil {
		lk.log.Error("release failed", "partition", p, "err", err)
	}
	lk.log.Debug("partition released", "partition", p)
}

// handBack gives every partition back as soon as its frames are done, so
// other workers (a reload's new process) take over without waiting for
// the whole drain. The channel is closed once every release, these and
// those of earlier rounds, is over.
func (lk *leaseKeeper) handBack(ctx context.Context) <-chan struct{} {
	for _, p := range lk.table.held() {
		lk.release(ctx, p)
	}
	done := make(chan struct{})
	go func() { lk.releases.Wait(); close(done) }()
	return done
}

// stop ends the releases still waiting (the drain is over): their
// partitions stay listed, for giveUpAll.
func (lk *leaseKeeper) stop() { lk.abandon() }

// giveUpAll gives up every lease still held and takes the worker off the
// list of live workers: other workers take its partitions over at once
// rather than after the lease.
func (lk *leaseKeeper) giveUpAll(ctx context.Context) {
	for _, p := range lk.table.held() {
		_ = lk.q.ReleaseLease(ctx, p, lk.id)
	}
	_ = lk.q.Deregister(ctx, lk.q.Keys.Workers(), lk.id)
	lk.stats.Partitions.Store(0)
}
