package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// Every so often the janitor forgets what nobody needs any more.
const (
	// forgetClosedEvery: the handled marks of connections closed over
	// forgetClosedAfter ago (marks.forgetClosed).
	forgetClosedEvery = 5 * time.Second
	// forgetConsumersEvery: the consumer names of worker processes that
	// are gone, from the groups of the partitions this worker holds.
	forgetConsumersEvery = 30 * time.Second
)

// janitor forgets, in memory, the marks of connections closed a while ago
// and, in Redis, the consumer names of gone workers (each process reads
// under a name of its own, so names would pile up with every restart). It
// starts once the first lease round is over, so that it finds partitions
// to clean.
type janitor struct {
	q     *queue.Broker
	log   *slog.Logger
	id    string
	lease time.Duration // Options.Lease: a worker's heartbeat is that old at most
	marks interface{ forgetClosed() }
	table interface{ active() []int }
	ready <-chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
}

type janitorParams struct {
	queue *queue.Broker
	log   *slog.Logger
	id    string
	lease time.Duration
	marks interface{ forgetClosed() }
	table interface{ active() []int }
	ready <-chan struct{} // closed after the lease keeper's first round
}

func newJanitor(p janitorParams) *janitor {
	ctx, cancel := context.WithCancel(context.Background())
	return &janitor{q: p.queue, log: p.log, id: p.id, lease: p.lease, marks: p.marks, table: p.table,
		ready: p.ready, ctx: ctx, cancel: cancel}
}

// start cleans once the leases are taken, then periodically, until
// shutdown.
func (j *janitor) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-j.ready:
		case <-j.ctx.Done():
			return
		}
		closed := time.NewTicker(forgetClosedEvery)
		defer closed.Stop()
		consumers := time.NewTicker(forgetConsumersEvery)
		defer consumers.Stop()
		j.marks.forgetClosed()
		j.forgetConsumers(j.ctx)
		for {
			select {
			case <-j.ctx.Done():
				return
			case <-closed.C:
				j.marks.forgetClosed()
			case <-consumers.C:
				j.forgetConsumers(j.ctx)
			}
		}
	}()
}

func (j *janitor) shutdown() { j.cancel() }

// forgetConsumers deletes the consumers of gone workers from the groups of
// the partitions this worker holds.
func (j *janitor) forgetConsumers(ctx context.Context) {
	alive, err := j.q.Alive(ctx, j.q.Keys.Workers(), time.Now(), j.lease)
	if err != nil {
		return
	}
	live := make(map[string]bool, len(alive)+1)
	for _, id := range alive {
		live[id] = true
	}
	live[j.id] = true
	for _, p := range j.table.active() {
		n, err := j.q.ForgetConsumers(ctx, p, func(name string) bool { return live[name] })
		if err != nil {
			j.log.Debug("forgetting gone consumers failed", "partition", p, "err", err)
			continue
		}
		if n > 0 {
			j.log.Debug("forgot consumers of gone workers", "partition", p, "n", n)
		}
	}
}
