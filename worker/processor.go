package worker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/internal/retry"
	"github.com/maple-farm/maple/store"
)

// processor runs one envelope for a runner: it drops a copy of an
// envelope already done, counts the start of a redelivered one (and
// dead-letters the one that kills every worker it starts on), runs the app
// with a deadline, a recovered panic and retries through a Redis outage,
// and maps the handler's error to the client's answer (docs/protocol.md
// section 2).
type processor struct {
	app           *App
	st            *store.Store  // the handlers' (Request.Store)
	q             *queue.Broker // the queues
	log           *slog.Logger
	stats         *Stats
	maxDeliveries int
	timeout       time.Duration // Options.HandlerTimeout
	// logs rate-limits lines a client can cause per frame (handler
	// failures, no route, refused writes); panics rate-limits the stack
	// traces of panicking routes harder.
	logs, panics *ratelog.Limiter
	marks        interface {
		duplicate(d queue.Delivery) bool
		uidOf(conn string) string
	}
	out    *outbound
	outbox interface{ flush(ctx context.Context) }
	svc    *services                      // lent to each Request
	table  interface{ holds(p int) bool } // the partitions leased

	deadlines deadlines
	stop      context.CancelFunc // ends the handlers' contexts
	suspect   sync.Mutex         // held while a redelivered entry runs
}

type processorParams struct {
	app            *App
	store          *store.Store
	queue          *queue.Broker
	log            *slog.Logger
	stats          *Stats
	maxDeliveries  int
	handlerTimeout time.Duration
	logs, panics   *ratelog.Limiter
	marks          interface {
		duplicate(d queue.Delivery) bool
		uidOf(conn string) string
	}
	outbound *outbound
	outbox   interface{ flush(ctx context.Context) }
	services *services
	table    interface{ holds(p int) bool }
}

func newProcessor(p processorParams) *processor {
	pr := &processor{app: p.app, st: p.store, q: p.queue, log: p.log, stats: p.stats, maxDeliveries: p.maxDeliveries,
		timeout: p.handlerTimeout, logs: p.logs, panics: p.panics, marks: p.marks, out: p.outbound,
		outbox: p.outbox, svc: p.services, table: p.table}
	pr.deadlines.base, pr.stop = context.WithCancel(context.Background())
	return pr
}

// shutdown ends the contexts of running handlers, and of their retries
// (the drain is over).
func (pr *processor) shutdown() { pr.stop() }

// handle runs the app on one envelope.
func (pr *processor) handle(d queue.Delivery) outcome {
	if pr.table != nil && !pr.table.holds(d.Part) {
		// The partition was dropped (lost, or this worker fenced itself)
		// after the entry was read: its next owner runs it.
		return kept
	}
	if d.Env.Kind == 0 {
		pr.log.Error("unreadable entry: moving to dead letters", "partition", d.Part, "id", d.ID, "index", d.Index)
		return pr.deadLetter(d, "unreadable entry")
	}
	if !d.Requeued && pr.marks.duplicate(d) {
		pr.stats.Duplicates.Add(1)
		return skipped
	}
	if d.Deliveries > 1 {
		// A worker died with this entry, maybe because of this envelope.
		// Run it alone, with everything before it acknowledged, and count
		// the start in Redis first: an envelope that kills every worker
		// it starts on is then found, and dead-lettered alone.
		pr.suspect.Lock()
		defer pr.suspect.Unlock()
		pr.outbox.flush(pr.deadlines.parent())
		sctx, cancel := context.WithTimeout(pr.deadlines.parent(), 5*time.Second)
		starts, err := pr.q.StartTry(sctx, d.Part, d.ID, d.Index)
		cancel()
		if err != nil {
			pr.stats.RedisErrs.Add(1)
			pr.log.Warn("could not count a redelivered frame's start; running it", "id", d.ID, "err", err)
		}
		// Its tries so far: the lone starts before this one, and the first
		// delivery, which ran beside others.
		if err == nil && starts >= int64(pr.maxDeliveries) {
			pr.log.Error("frame failed too often: moving to dead letters",
				"partition", d.Part, "id", d.ID, "index", d.Index, "conn", d.Env.Conn, "n", starts)
			d.Deliveries = starts
			if pr.deadLetter(d, "max deliveries") == kept {
				return kept
			}
			if d.Env.Kind == queue.KindFrame {
				if b, err := box.Decode(d.Env.Frame); err == nil {
					pr.out.sendFrame(d.Env.Gateway, d.Env.Conn, d.Env.At, b.Cmd, box.RetHandlerFailed, b.SN, nil)
				} else {
					pr.out.complete(d.Env)
				}
			}
			return finished
		}
	}
	r := &Request{
		Kind:       Kind(d.Env.Kind),
		Conn:       Conn{Gateway: d.Env.Gateway, ID: d.Env.Conn, Addr: d.Env.Addr, UID: d.Env.UID},
		Deliveries: d.Deliveries,
		Store:      pr.st,
		svc:        pr.svc,
		at:         d.Env.At,
	}
	if r.Conn.UID == "" && r.Conn.ID != "" {
		// Logged in by an earlier frame whose bind the gateway had not
		// seen when it queued this one.
		r.Conn.UID = pr.marks.uidOf(r.Conn.ID)
	}
	if len(d.Env.Frame) > 0 {
		b, err := box.Decode(d.Env.Frame)
		if err != nil {
			o := pr.deadLetter(d, "bad frame: "+err.Error())
			if o == finished {
				pr.out.complete(d.Env)
			}
			return o
		}
		r.Box = b
	}
	start := time.Now() // one clock read for both: 95 ns each on a VM
	ctx := pr.deadlines.get(start, pr.timeout)
	err := pr.serve(ctx, r)
	for backoff := retry.New(50*time.Millisecond, time.Second); err != nil && !r.replied && retry.IsTransient(err) && ctx.Err() == nil; {
		// Redis was unreachable: run the handler again once it is back
		// rather than failing the player's request.
		pr.stats.RedisErrs.Add(1)
		pr.logs.Warn("redis outage", "handler hit a Redis outage; retrying", "cmd", r.Box.Cmd, "conn", r.Conn.ID, "err", err, "backoff", backoff.Delay())
		backoff.Wait(ctx)
		err = pr.serve(ctx, r)
	}
	took := time.Since(start)
	pr.stats.HandlerNs.Add(int64(took))
	pr.stats.HandlerTime.Observe(took)
	pr.stats.Handled.Add(1)
	pr.answer(r, err)
	if r.Kind == Frame && !r.replied {
		pr.out.complete(d.Env)
	}
	if r.Kind == Close && r.Conn.UID != "" {
		// A disconnect ends the session, unless a newer login replaced it.
		uctx, cancel := context.WithTimeout(pr.deadlines.parent(), 5*time.Second)
		if _, err := pr.st.UnbindUser(uctx, r.Conn.UID, store.Session{Gateway: r.Conn.Gateway, Conn: r.Conn.ID}); err != nil {
			pr.logs.Error("unbind on close", "unbind on close failed", "uid", r.Conn.UID, "conn", r.Conn.ID, "err", err)
		}
		cancel()
	}
	return finished
}

// serve runs the app, turning a panic into an error.
func (pr *processor) serve(ctx context.Context, r *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: stack()}
		}
	}()
	return pr.app.ServeBox(ctx, r)
}

// answer maps a handler's error to the reply the client gets (spec §2).
func (pr *processor) answer(r *Request, err error) {
	if err == nil || errors.Is(err, ErrStop) {
		return
	}
	var we *Error
	var pe *panicError
	switch {
	case errors.As(err, &we):
		if we.Ret == box.RetNoRoute {
			pr.stats.NoRoute.Add(1)
			pr.logs.Log(slog.LevelDebug, "no route", "no route", "cmd", r.Box.Cmd, "conn", r.Conn.ID)
		}
		if r.Kind == Frame && !r.replied {
			_ = r.ReplyRet(we.Ret, nil)
		}
		return
	case errors.As(err, &pe):
		// One client can make a route panic on every frame: a stack
		// trace per route and interval, the rest counted (Stats.Failed).
		pr.stats.Failed.Add(1)
		pr.panics.Error("panic "+routeOf(r), "handler panicked", "cmd", r.Box.Cmd, "conn", r.Conn.ID, "kind", r.Kind.String(),
			"err", pe.value, "stack", string(pe.stack))
	default:
		pr.stats.Failed.Add(1)
		pr.logs.Error("failed "+routeOf(r), "handler failed", "cmd", r.Box.Cmd, "conn", r.Conn.ID, "kind", r.Kind.String(), "err", err)
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

// dropClosed is what becomes of a frame whose connection's close event
// was admitted before it started: the client left, so nobody reads its
// answer; it is not run, and its mark moves on as if it had.
func (pr *processor) dropClosed(d queue.Delivery) outcome {
	if !d.Requeued && pr.marks.duplicate(d) {
		pr.stats.Duplicates.Add(1)
		return skipped
	}
	pr.stats.ClosedDropped.Add(1)
	return finished
}

// deadLetter moves d to its partition's dead letters, retrying through a
// Redis outage for a while. If that fails, d's entry is not acknowledged:
// it stays pending, and comes back when its partition changes hands.
func (pr *processor) deadLetter(d queue.Delivery, reason string) outcome {
	ctx, cancel := context.WithTimeout(pr.deadlines.parent(), 10*time.Second)
	defer cancel()
	for backoff := retry.New(50*time.Millisecond, time.Second); ; {
		err := pr.q.DeadLetter(ctx, d, reason)
		if err == nil {
			pr.stats.DeadLetters.Add(1)
			return finished
		}
		if !retry.IsTransient(err) || ctx.Err() != nil {
			pr.stats.RedisErrs.Add(1)
			pr.log.Error("dead letter failed; the entry stays pending", "id", d.ID, "err", err)
			return kept
		}
		backoff.Wait(ctx)
	}
}

// deadlines hands out handlers' contexts. A context with a timer of its
// own for every frame costs more than a small handler does, so handlers
// that start within the same deadlineStep share one, whose deadline is at
// most deadlineStep past their own.
type deadlines struct {
	base   context.Context // nil: context.Background(); ends when the processor shuts down
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

// get returns a context that ends at least timeout after now.
func (d *deadlines) get(now time.Time, timeout time.Duration) context.Context {
	want := now.Add(timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil || d.at.Before(want) {
		d.at = want.Add(deadlineStep)
		d.ctx, d.cancel = context.WithDeadline(d.parent(), d.at)
	}
	return d.ctx
}
