package worker

import (
	"context"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
)

// leaseKeeper keeps this worker's share of the partitions. It alone
// changes the partition table.
//
// Two clocks run it. The liveness round, Options.Liveness/livenessRounds
// apart, renews this worker's liveness (one round trip of native
// commands, whatever the partitions: queue.LiveRound) and learns who is
// alive and who died. The lease round, every Options.Lease/4, heartbeats,
// renews each partition's lease (one pipeline for all), takes
// free partitions up to ceil(partitions/live workers) and hands extra
// ones back once their frames are done; a worker short of its share looks
// for free partitions every Lease/10. A liveness round that finds
// a worker newly dead, or the number of workers changed, runs the lease
// round's taking at once, taking the dead worker's partitions as if free:
// a SIGKILLed worker's players wait about one Liveness, not one Lease.
//
// That is safe because a worker fences itself: once its liveness could
// have run out by Redis's clock (Liveness after it sent its last renewal
// that succeeded, less fenceMargin), it drops every partition, and drops
// one whose lease renewals failed for Lease less fenceMargin. A frame of
// a dropped partition that has not started is left pending for the next
// owner (processor.handle); one running finishes, as when a lease is lost.
//
// So no partition runs on two workers at once. Worker B names A dead only
// when an EXISTS of A's mark found none (queue.LiveRound): Redis expired
// it, Liveness after it ran A's last SET, or A deleted it on a clean stop
// after giving its leases up. A sent that SET before Redis ran it, and
// its fence counts from the send, so A dropped every partition before B
// could see it dead (fenceMargin covers a timer firing late). The round's
// commands need not run atomically: the verdict rests on that one EXISTS,
// and B may act on it a moment later because after a fence A never holds
// a partition under the old name again: it leases under a new name (gen).
// Lease renewals go in one pipeline, all sent after the instant their
// fence counts from, as each one was when they went one by one.
type leaseKeeper struct {
	q        *queue.Broker
	log      *slog.Logger
	logs     *ratelog.Limiter
	stats    *Stats
	id       string
	parts    int
	ttl      time.Duration // Options.Lease
	liveness time.Duration // Options.Liveness
	table    *partitionTable
	taker    taker
	held     heldEntries
	out      interface{ flush(ctx context.Context) }
	marks    interface{ forgetPartition(p int) }
	ready    chan struct{} // closed after the first round
	// timers, if not nil, polls its timers in the liveness round's round
	// trip (timers.probes).
	timers *timers

	// mu orders the fence against adding partitions: none is added
	// while the liveness is out, and the fence drops what was added.
	mu         sync.Mutex
	aliveUntil time.Time         // the fence: when the liveness may run out
	renewed    map[int]time.Time // per partition: when its last good renewal was sent
	fence      *time.Timer
	// gen counts the fences. The worker leases under its id, then, after
	// a fence, under <id>~g<gen>: other workers may still name the old
	// name dead (a round's list is a moment old), so it is never alive
	// again.
	gen int

	// What the rounds learnt (the rounds' goroutine only).
	live    []string        // workers alive at the last liveness round
	dead    map[string]bool // workers seen dead by the last liveness round
	workers int             // live workers at the last round
	legacy  int             // workers alive by heartbeat only (an older release)

	// The rounds run until shutdown; releases until the drain is over
	// (stop).
	roundsCtx  context.Context
	stopRounds context.CancelFunc
	life       context.Context
	abandon    context.CancelFunc
	releases   sync.WaitGroup
}

// name is what the worker leases under now, and its generation.
func (lk *leaseKeeper) name() (string, int) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.gen == 0 {
		return lk.id, 0
	}
	return lk.id + "~g" + strconv.Itoa(lk.gen), lk.gen
}

// workerOf is the worker id of a lease name.
func workerOf(name string) string {
	if i := strings.LastIndex(name, "~g"); i > 0 {
		return name[:i]
	}
	return name
}

// livenessRounds is how many liveness rounds run per Options.Liveness: a
// worker is seen dead only after that many missed renewals in a row, and
// one that died is seen at most Liveness/livenessRounds late.
const livenessRounds = 7

// fenceMargin is how long before its liveness (or a lease) could run out
// by Redis's clock a worker gives its partitions up: time for a write
// sent before that to land, and for the timer to fire late.
func fenceMargin(d time.Duration) time.Duration { return d / livenessRounds }

// taker takes a partition's pending entries over, and reads a partition
// just taken on its own until its main reads take it in (the reader).
type taker interface {
	takeOver(ctx context.Context, p int) error
	interimReads() bool
	readInterim(p int, l *lease)
}

// heldEntries says when a partition's entries are all done (the
// dispatcher).
type heldEntries interface {
	waitPartition(ctx context.Context, p int) bool
	holdsPartition(p int) bool
}

type leaseParams struct {
	queue      *queue.Broker
	log        *slog.Logger
	logs       *ratelog.Limiter
	stats      *Stats
	id         string
	partitions int
	lease      time.Duration
	liveness   time.Duration
	table      *partitionTable
	taker      taker
	held       heldEntries
	outbox     interface{ flush(ctx context.Context) }
	marks      interface{ forgetPartition(p int) }
	ready      chan struct{}
	timers     *timers
}

func newLeaseKeeper(p leaseParams) *leaseKeeper {
	lk := &leaseKeeper{
		q: p.queue, log: p.log, logs: p.logs, stats: p.stats, id: p.id, parts: p.partitions,
		ttl: p.lease, liveness: p.liveness,
		table: p.table, taker: p.taker, held: p.held, out: p.outbox, marks: p.marks, ready: p.ready, timers: p.timers,
		renewed: make(map[int]time.Time), dead: make(map[string]bool),
	}
	lk.life, lk.abandon = context.WithCancel(context.Background())
	lk.roundsCtx, lk.stopRounds = context.WithCancel(lk.life)
	return lk
}

// start runs the rounds until shutdown.
func (lk *leaseKeeper) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); lk.run(lk.roundsCtx) }()
}

// shutdown stops the rounds: no partition is taken or renewed any more.
// Partitions go back with handBack.
func (lk *leaseKeeper) shutdown() { lk.stopRounds() }

func (lk *leaseKeeper) run(ctx context.Context) {
	offset := mrand.IntN(lk.parts)
	tick := time.NewTicker(lk.liveness / livenessRounds)
	defer tick.Stop()
	defer lk.stopFence()
	var lastLease, lastTake time.Time
	for first := true; ; first = false {
		changed := lk.livenessRound(ctx)
		switch now := time.Now(); {
		case first || now.Sub(lastLease) >= lk.ttl/4:
			lastLease, lastTake = now, now
			lk.leaseRound(ctx, offset)
		case changed || now.Sub(lastTake) >= lk.ttl/10 && lk.short():
			lastTake = now
			lk.take(ctx, offset)
		}
		if first {
			close(lk.ready)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// livenessRound renews this worker's liveness and moves the fence on. It
// reports whether a worker died or the number of workers changed since
// the last round: partitions are then to be taken at once.
func (lk *leaseKeeper) livenessRound(ctx context.Context) (changed bool) {
	me, _ := lk.name()
	sent := time.Now()
	// The workers of the last round: their marks are read in the same
	// round trip as the renewal.
	known := append(make([]string, 0, len(lk.live)+len(lk.dead)), lk.live...)
	for d := range lk.dead {
		known = append(known, d)
	}
	var probe *queue.TimerProbe
	if lk.timers != nil {
		probe = lk.timers.probe(sent)
	}
	live, dead, err := lk.q.LiveRound(ctx, me, lk.liveness, lk.ttl, known, probe)
	if err != nil {
		if ctx.Err() == nil {
			lk.stats.RedisErrs.Add(1)
			lk.logs.Error("liveness renewal failed", "err", err)
		}
		return false
	}
	if probe != nil {
		lk.timers.probed(probe)
	}
	lk.alive(sent)
	lk.live = live
	for _, d := range dead {
		if !lk.dead[d] {
			changed = true
			lk.log.Info("worker stopped renewing its liveness: taking its partitions over", "dead", d)
		}
	}
	clear(lk.dead)
	for _, d := range dead {
		lk.dead[d] = true
	}
	if n := len(live) + lk.legacy; n != lk.workers {
		changed = true
		lk.workers = n
	}
	return changed
}

// alive moves the fence to Liveness after sent, less the margin.
func (lk *leaseKeeper) alive(sent time.Time) {
	until := sent.Add(lk.liveness - fenceMargin(lk.liveness))
	lk.mu.Lock()
	defer lk.mu.Unlock()
	lk.aliveUntil = until
	if lk.fence == nil {
		lk.fence = time.AfterFunc(time.Until(until), lk.fenceOut)
	} else {
		lk.fence.Reset(time.Until(until))
	}
}

// fenceOut drops every partition: the liveness may have run out, and
// other workers may be taking them over.
func (lk *leaseKeeper) fenceOut() {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if time.Now().Before(lk.aliveUntil) { // renewed since the timer fired
		return
	}
	held := lk.table.held()
	lk.gen++
	if len(held) > 0 {
		lk.log.Warn("liveness not renewed in time: giving every partition up", "partitions", len(held),
			"liveness", lk.liveness)
	}
	for _, p := range held {
		lk.dropLocked(p)
	}
}

func (lk *leaseKeeper) stopFence() {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.fence != nil {
		lk.fence.Stop()
	}
}

// dropLocked forgets partition p at once (lost or fenced): its frames not
// started stay pending for the next owner.
func (lk *leaseKeeper) dropLocked(p int) {
	lk.table.remove(p, nil)
	lk.marks.forgetPartition(p)
	delete(lk.renewed, p)
	lk.stats.LeasesLost.Add(1)
	lk.stats.Partitions.Store(int64(lk.table.activeCount()))
}

// leaseRound heartbeats, renews the leases held, gives extra partitions
// back and takes free ones.
func (lk *leaseKeeper) leaseRound(ctx context.Context, offset int) {
	now := time.Now()
	if err := lk.q.Heartbeat(ctx, lk.q.Keys.Workers(), lk.id, now); err != nil {
		if ctx.Err() == nil {
			lk.stats.RedisErrs.Add(1)
			lk.logs.Error("heartbeat failed", "err", err)
		}
		return
	}
	// Workers of an older release heartbeat but have no liveness: they
	// count for the share too.
	if alive, err := lk.q.Alive(ctx, lk.q.Keys.Workers(), now, lk.ttl); err == nil && lk.live != nil {
		lk.legacy = 0
		known := make(map[string]bool, len(lk.live)+len(lk.dead))
		for _, n := range lk.live {
			known[workerOf(n)] = true
		}
		for n := range lk.dead {
			known[workerOf(n)] = true
		}
		for _, id := range alive {
			if !known[id] {
				lk.legacy++
			}
		}
		lk.workers = len(lk.live) + lk.legacy
	}

	// Renew what we hold, in one round trip. Every renewal was sent after
	// sent: a lease's fence counts from there, early if anything.
	me, gen := lk.name()
	held := lk.table.held()
	sent := time.Now()
	oks, errs := lk.q.RenewLeases(ctx, held, me, lk.ttl)
	var orphans []int
	lk.mu.Lock()
	for i, p := range held {
		ok, err := oks[i], errs[i]
		switch {
		case gen != lk.gen:
			// A fence dropped it meanwhile.
		case err == nil && ok && !lk.table.holds(p):
			// Given back meanwhile: a renewal takes a free lease, so this
			// one may have taken it again after the release. Nobody would
			// read it until the lease ran out.
			orphans = append(orphans, p)
		case err == nil && ok:
			lk.renewed[p] = sent
		case err == nil:
			lk.log.Warn("lease lost", "partition", p)
			lk.dropLocked(p)
		case time.Since(lk.renewed[p]) > lk.ttl-fenceMargin(lk.ttl):
			lk.log.Warn("lease not renewed in time: giving the partition up", "partition", p, "err", err)
			lk.dropLocked(p)
		default:
			lk.stats.RedisErrs.Add(1) // keep it; the next round retries
		}
	}
	lk.mu.Unlock()
	if len(orphans) > 0 {
		if err := lk.q.ReleaseLeases(ctx, orphans, me); err != nil && ctx.Err() == nil {
			lk.logs.Error("release failed", "partitions", orphans, "err", err)
		}
	}
	lk.take(ctx, offset)
}

// share is this worker's share of the partitions.
func (lk *leaseKeeper) share() int {
	return (lk.parts + lk.workers - 1) / max(lk.workers, 1)
}

// short reports whether this worker holds fewer partitions than its
// share: it looks for free ones more often than it renews.
func (lk *leaseKeeper) short() bool { return lk.table.activeCount() < lk.share() }

// take gives partitions over this worker's share back, once their frames
// are done, and takes free ones, and dead workers', up to the share.
func (lk *leaseKeeper) take(ctx context.Context, offset int) {
	if lk.workers == 0 {
		return
	}
	target := lk.share()
	active := lk.table.activeCount()
	for _, p := range lk.table.held() {
		if active <= target {
			break
		}
		if lk.release(lk.life, p) {
			active--
		}
	}
	dead := make([]string, 0, len(lk.dead))
	for d := range lk.dead {
		dead = append(dead, d)
	}
	me, gen := lk.name()
	for i := 0; i < lk.parts && active < target; i++ {
		p := (offset + i) % lk.parts
		if lk.table.holds(p) {
			continue
		}
		if lk.held.holdsPartition(p) {
			// Entries of p read before this worker dropped it (a fence,
			// a lost lease) are still in flight: their envelopes not yet
			// run are being left pending (processor.handle: kept). Taken
			// now, p would run the later ones of those entries and the
			// pending ones would never be read again (their entries are
			// held: takeOver leaves them alone), or run after later
			// frames of their connections and be dropped as copies. A
			// later round takes p, once they are all left pending.
			continue
		}
		sent := time.Now()
		ok, err := lk.q.AcquireLease(ctx, p, me, lk.ttl, dead...)
		if err != nil || !ok {
			continue
		}
		lk.mu.Lock()
		if gen != lk.gen || time.Now().After(lk.aliveUntil) {
			// The fence passed (or never moved): the next round retries.
			lk.mu.Unlock()
			_ = lk.q.ReleaseLease(ctx, p, me)
			continue
		}
		// Held, so that the entries taken over run (a fence drops them),
		// but not read until they are admitted: later ones must not
		// overtake them.
		l := lk.table.addOpening(p)
		lk.renewed[p] = sent
		lk.mu.Unlock()
		if err := lk.taker.takeOver(ctx, p); err != nil {
			lk.log.Error("claim failed; giving the partition back", "partition", p, "err", err)
			lk.mu.Lock()
			lk.table.remove(p, l)
			delete(lk.renewed, p)
			lk.mu.Unlock()
			_ = lk.q.ReleaseLease(ctx, p, me)
			continue
		}
		interim := lk.taker.interimReads()
		lk.table.open(l, interim)
		if interim {
			lk.taker.readInterim(p, l)
		}
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
	me, _ := lk.name()
	lk.releases.Add(1)
	go func() { defer lk.releases.Done(); lk.giveBack(ctx, p, l, me) }()
	return true
}

// giveBack hands partition p back once its reads are over and its frames
// handled and acknowledged. If ctx ends first (shutdown), the partition
// stays listed, and giveUpAll gives its lease up when the worker stops.
// me is the name p was leased under.
func (lk *leaseKeeper) giveBack(ctx context.Context, p int, l *lease, me string) {
	if !lk.table.waitReads(ctx, l) || !lk.held.waitPartition(ctx, p) {
		return
	}
	lk.out.flush(ctx)
	if ctx.Err() != nil {
		return
	}
	lk.mu.Lock()
	lk.table.remove(p, l)
	delete(lk.renewed, p)
	lk.mu.Unlock()
	lk.marks.forgetPartition(p)
	if err := lk.q.ReleaseLease(ctx, p, me); err != nil {
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
// rather than after the lease. It asks for every partition, not only
// those listed: a take or renewal cut short by the shutdown may have
// reached Redis without its reply reaching us, and that partition's
// players would wait out the lease.
func (lk *leaseKeeper) giveUpAll(ctx context.Context) {
	me, _ := lk.name()
	all := make([]int, lk.parts)
	for p := range all {
		all[p] = p
	}
	if err := lk.q.ReleaseLeases(ctx, all, me); err != nil {
		lk.log.Warn("giving leases up failed: their partitions wait for the lease", "err", err)
	}
	_ = lk.q.Deregister(ctx, lk.q.Keys.Workers(), lk.id)
	_ = lk.q.LiveForget(ctx, me)
	lk.stats.Partitions.Store(0)
}
