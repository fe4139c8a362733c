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
	// probes, when the timers' tick is the liveness round's, brings what
	// each liveness round asked Redis in its own round trip: which of the
	// partitions held have a timer due (leaseKeeper.livenessRound). The
	// duty then polls on no clock of its own: at idle a round trip costs
	// Redis far more than the few commands in it, and the timer poll was
	// one per worker per tick. nil: the duty polls on its own clock.
	probes chan *queue.TimerProbe

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
	probed     bool // the liveness rounds poll the timers (timers.probes)
}

func newTimers(p timersParams) *timers {
	ctx, cancel := context.WithCancel(context.Background())
	t := &timers{q: p.queue, log: p.log, stats: p.stats, parts: p.partitions, tick: p.tick, jobs: p.jobs,
		table: p.table, ctx: ctx, cancel: cancel}
	if p.probed {
		t.probes = make(chan *queue.TimerProbe, 1)
	}
	return t
}

// probe is the poll of the partitions held at now, for a liveness round
// to carry.
func (t *timers) probe(now time.Time) *queue.TimerProbe {
	return &queue.TimerProbe{Parts: t.table.active(), Now: now}
}

// probed hands the duty a poll's answer. If the duty is still busy with
// the last one, this one is dropped, as a ticker drops ticks: the next
// round polls again.
func (t *timers) probed(tp *queue.TimerProbe) {
	select {
	case t.probes <- tp:
	default:
	}
}

// start runs the timers until shutdown.
func (t *timers) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); t.run(t.ctx) }()
}

func (t *timers) shutdown() { t.cancel() }

func (t *timers) run(ctx context.Context) {
	var tickC <-chan time.Time
	if t.probes == nil {
		tick := time.NewTicker(t.tick)
		defer tick.Stop()
		tickC = tick.C
	}
	last := make(map[string]int64, len(t.jobs)) // period last claimed, per job
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case <-tickC:
			now = time.Now()
			t.moveDue(ctx, now)
		case tp := <-t.probes:
			now = tp.Now
			t.moveProbed(ctx, tp)
		}
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

// moveProbed moves the timers a liveness round found due.
func (t *timers) moveProbed(ctx context.Context, tp *queue.TimerProbe) {
	parts, err := tp.Due()
	if err != nil {
		if ctx.Err() == nil {
			t.stats.RedisErrs.Add(1)
			t.log.Error("moving due timers failed", "partitions", tp.Parts, "err", err)
		}
		return
	}
	t.move(ctx, parts, tp.Now, t.q.MoveTimersOf)
}

// moveDue moves the timers due at now: all partitions in one round trip,
// again for those with more due.
func (t *timers) moveDue(ctx context.Context, now time.Time) {
	t.move(ctx, t.table.active(), now, t.q.MoveDueTimersOf)
}

// move moves up to 256 timers due at now per partition of parts with
// moveOf, again for those with more due.
func (t *timers) move(ctx context.Context, parts []int, now time.Time,
	moveOf func(ctx context.Context, parts []int, now time.Time, max int) ([]int, error)) {
	for len(parts) > 0 {
		n, err := moveOf(ctx, parts, now, 256)
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
