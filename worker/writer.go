package worker

import (
	"context"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// writer owns the worker's writes to Redis: replies, pushes and control
// messages for gateways, handled marks and acknowledgements. It gathers
// whatever piled up into one queue.Batch, which queue.Broker.Commit sends
// in one pipeline (several past the write budget) in the order that
// keeps it safe: a reply always reaches Redis before its frame's handled
// mark and the acknowledgement of its entry, and replies to one
// connection keep the order of its requests.
//
// A runner that runs out of work sends what is queued itself if no send is
// in progress (tryDrain), rather than waiting for the writer goroutine to
// wake: on a quiet farm's reply path that saves a thread wake-up. Sends
// are serialized by sending, and each takes the whole queue, so the order
// holds whoever sends.
type writer struct {
	w      *Worker
	ctx    context.Context // sends give up when it ends
	mu     sync.Mutex
	queue  []writeOp
	room   *sync.Cond    // the queue was taken: pushers past maxQueued go on
	signal chan struct{} // something was queued

	sending sync.Mutex // held by the one sending; guards what follows
	spare   []writeOp
	batch   queue.Batch // the writes of one Commit, reused
	lastTr  time.Time
}

type writeOp struct {
	gw      string // outbound message for this gateway...
	payload []byte
	conn    string // ...or handled mark of conn (of gateway gw)
	seq     uint64
	entry   *entry        // ...or acknowledgement of an entry
	barrier chan struct{} // ...or a flush request
}

// maxQueued bounds the writes waiting for the writer; handlers that send
// past it wait (Redis is slow or away).
const maxQueued = 8192

func newWriter(w *Worker, ctx context.Context) *writer {
	wr := &writer{w: w, ctx: ctx, signal: make(chan struct{}, 1)}
	wr.room = sync.NewCond(&wr.mu)
	// Once the writer stops, pushers waiting for room must not wait on.
	context.AfterFunc(ctx, func() {
		wr.mu.Lock()
		wr.room.Broadcast()
		wr.mu.Unlock()
	})
	return wr
}

// push queues op. A queue behind a mutex rather than a channel: the
// writer takes everything in one swap, and a send wakes it only when the
// queue was empty. Once the writer has stopped (shutdown), op is dropped:
// nothing would send it, and what it answers stays pending in Redis for
// the next worker.
func (wr *writer) push(op writeOp) {
	wr.mu.Lock()
	for len(wr.queue) >= maxQueued && wr.ctx.Err() == nil {
		wr.room.Wait()
	}
	if wr.ctx.Err() != nil {
		wr.mu.Unlock()
		return
	}
	wr.queue = append(wr.queue, op)
	first := len(wr.queue) == 1
	wr.mu.Unlock()
	if first {
		select {
		case wr.signal <- struct{}{}:
		default:
		}
	}
}

// take swaps the queue out for spare.
func (wr *writer) take(spare []writeOp) []writeOp {
	wr.mu.Lock()
	ops := wr.queue
	wr.queue = spare[:0]
	wr.mu.Unlock()
	wr.room.Broadcast()
	return ops
}

// queued reports whether writes wait to be sent.
func (wr *writer) queued() bool {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return len(wr.queue) > 0
}

func (wr *writer) out(gw string, payload []byte) { wr.push(writeOp{gw: gw, payload: payload}) }

func (wr *writer) mark(gw, conn string, seq uint64) {
	wr.push(writeOp{gw: gw, conn: conn, seq: seq})
}

func (wr *writer) ack(e *entry) { wr.push(writeOp{entry: e}) }

// flush returns once everything queued before it is in Redis (or ctx
// ends, or the writer stops).
func (wr *writer) flush(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	ch := make(chan struct{})
	wr.push(writeOp{barrier: ch})
	select {
	case <-ch:
	case <-ctx.Done():
	case <-wr.ctx.Done():
	}
}

// run sends what others queued and did not send themselves, until ctx
// ends.
func (wr *writer) run(ctx context.Context) {
	for {
		select {
		case <-wr.signal:
		case <-ctx.Done():
			return
		}
		wr.sending.Lock()
		ok := wr.drain(ctx)
		wr.sending.Unlock()
		if !ok {
			return
		}
	}
}

// tryDrain sends what is queued unless another send is in progress, whose
// sender then sends it (it looks at the queue again after unlocking).
func (wr *writer) tryDrain() {
	for wr.queued() && wr.sending.TryLock() {
		wr.drain(wr.ctx)
		wr.sending.Unlock()
	}
}

// drain sends batch after batch until the queue is empty, each in one
// Commit, which retries a failed pipeline with backoff. It reports false
// if ctx ended first. The caller holds sending.
func (wr *writer) drain(ctx context.Context) bool {
	for {
		ops := wr.take(wr.spare)
		if len(ops) == 0 {
			wr.spare = ops
			return true
		}
		wr.gather(ops)
		err := wr.w.q.Commit(ctx, &wr.batch, queue.CommitOptions{
			Budget:       wr.w.opts.WriteBudget,
			ReadsBatches: wr.w.readsBatches,
			Sent:         func() { wr.w.Stats.Writes.Add(1) },
			Retry: func(err error, wait time.Duration) {
				wr.w.Stats.RedisErrs.Add(1)
				wr.w.log.Error("redis write failed, retrying", "duty", "writer", "n", len(ops), "err", err, "backoff", wait)
			},
			Refused: func(cmd string, err error) {
				wr.w.Stats.RefusedWrites.Add(1)
				wr.w.logs.Error("refused write "+cmd, "redis refused a write; not retried", "cmd", cmd, "err", err)
			},
		})
		if err != nil {
			wr.w.Stats.RedisErrs.Add(1)
			wr.w.log.Error("stopped with writes not sent", "duty", "writer", "n", len(ops), "err", err)
			return false
		}
		for i, op := range ops {
			if op.barrier != nil {
				close(op.barrier)
			}
			ops[i] = writeOp{}
		}
		wr.spare = ops
	}
}

// messageSlack is what an outbound message carries beside its frames
// (kind, connection, user id, time); the budget always fits one message
// of Options.MaxFrame.
const messageSlack = 4 << 10

// gather turns queued writes into the batch of one Commit, which writes
// them in the order that keeps them safe (queue.Broker.Commit): outbound
// messages per gateway, handled marks, the frames finished per gateway
// (their frame counts) and the acknowledgements per partition, then the
// marks of connections that closed and the start counts of redelivered
// entries, and now and then, trims.
func (wr *writer) gather(ops []writeOp) {
	b := &wr.batch
	b.Reset()
	for _, op := range ops {
		switch {
		case op.entry != nil:
			e := op.entry
			b.Ack(e.part, e.id)
			if e.bundled > 0 && !wr.w.gatewayDead(e.gw) { // a dead gateway's count was deleted with it
				b.Finished(e.gw, e.bundled)
			}
			for _, c := range e.forget {
				b.ForgetHandled(c.gw, c.conn)
			}
			if e.redelivered {
				b.ClearTries(e.part, e.id)
			}
		case op.conn != "":
			b.Mark(op.gw, op.conn, op.seq)
		case op.gw != "":
			b.Out(op.gw, op.payload)
		}
	}
	if now := time.Now(); now.Sub(wr.lastTr) > 200*time.Millisecond {
		wr.lastTr = now
		for _, p := range wr.w.activeParts() {
			b.Trim(p)
		}
	}
}
