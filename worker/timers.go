package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// Timers and periodic jobs. A handler's ScheduleAfter adds an envelope to
// a partition's timer set in Redis; the timers duty of the partition's
// leaseholder moves it into the stream once due (timer_due.lua, so each
// timer enters the stream once), from where it is delivered like a frame.
// A periodic job's period is claimed farm-wide (cron_claim.lua), which
// queues its run in the same step.

// ScheduleAfter queues a frame (cmd, body) for the workers after d, as a
// System request. The timer lives in Redis: it fires once, on some live
// worker, even if this one is gone by then. It returns an id for
// CancelTimer.
func (r *Request) ScheduleAfter(ctx context.Context, d time.Duration, cmd int32, body []byte) (string, error) {
	return r.svc.q.ScheduleAfter(ctx, r.svc.parts, d, cmd, body)
}

// CancelTimer drops a timer that has not fired; it reports whether it was
// still pending.
func (r *Request) CancelTimer(ctx context.Context, id string) (bool, error) {
	return r.Store.CancelTimer(ctx, id)
}

// timers moves the timers of this worker's partitions into their streams
// as they fall due, and starts the periods of periodic jobs, every
// Options.TimerTick.
type timers struct {
	q     *queue.Broker
	log   *slog.Logger
	stats *Stats
	parts int
	tick  time.Duration
	jobs  []*job
	table interface{ active() []int }

	ctx    context.Context
	cancel context.CancelFunc
}

type timersParams struct {
	queue      *queue.Broker
	log        *slog.Logger
	stats      *Stats
	partitions int
	tick       time.Duration
	jobs       []*job
	table      interface{ active() []int }
}

func newTimers(p timersParams) *timers {
	ctx, cancel := context.WithCancel(context.Background())
	return &timers{q: p.queue, log: p.log, stats: p.stats, parts: p.partitions, tick: p.tick, jobs: p.jobs,
		table: p.table, ctx: ctx, cancel: cancel}
}

// start runs the timers until shutdown.
func (t *timers) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); t.run(t.ctx) }()
}

func (t *timers) shutdown() { t.cancel() }

func (t *timers) run(ctx context.Context) {
	tick := time.NewTicker(t.tick)
	defer tick.Stop()
	last := make(map[string]int64, len(t.jobs)) // period last claimed, per job
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		t.moveDue(ctx, now)
		for _, j := range t.jobs {
			n := now.UnixNano() / int64(j.period)
			if l, ok := last[j.name]; ok && l == n {
				continue
			}
			if _, err := t.q.ClaimPeriod(ctx, t.parts, j.name, n, j.period); err != nil {
				if ctx.Err() == nil {
					t.log.Error("periodic job claim failed", "job", j.name, "err", err)
				}
				continue
			}
			last[j.name] = n
		}
	}
}

// moveDue moves the timers due at now: all partitions in one round trip,
// again for those with more due.
func (t *timers) moveDue(ctx context.Context, now time.Time) {
	for parts := t.table.active(); len(parts) > 0; {
		n, err := t.q.MoveDueTimersOf(ctx, parts, now, 256)
		if err != nil {
			if ctx.Err() == nil {
				t.stats.RedisErrs.Add(1)
				t.log.Error("moving due timers failed", "partitions", parts, "err", err)
			}
			return
		}
		more := parts[:0]
		for i, p := range parts {
			if n[i] == 256 {
				more = append(more, p)
			}
		}
		parts = more
	}
}
