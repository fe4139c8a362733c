package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/internal/stages"
)

// outbox owns the worker's writes to Redis: replies, pushes and control
// messages for gateways, handled marks and acknowledgements. It gathers
// whatever piled up into one queue.Batch, which queue.Broker.Commit sends
// in one pipeline (several past the write budget) in the order that
// keeps it safe: a reply always reaches Redis before its frame's handled
// mark and the acknowledgement of its entry, and replies to one
// connection keep the order of its requests.
//
// A runner that runs out of work sends what is queued itself if no send is
// in progress (tryDrain), rather than waiting for the outbox goroutine to
// wake: on a quiet farm's reply path that saves a thread wake-up. Sends
// are serialized by sending, and each takes the whole queue, so the order
// holds whoever sends.
type outbox struct {
	q      *queue.Broker
	budget int // Options.WriteBudget
	stats  *Stats
	log    *slog.Logger
	logs   *ratelog.Limiter
	gws    gatewayBook
	parts  interface{ active() []int } // the partitions whose streams are trimmed

	ctx     context.Context // sends give up when it ends (shutdown)
	cancel  context.CancelFunc
	mu      sync.Mutex
	waiting []writeOp
	room    chan struct{} // made by a pusher past maxQueued; closed when the queue is taken
	signal  chan struct{} // something was queued

	sending sync.Mutex // held by the one sending; guards what follows
	spare   []writeOp
	batch   queue.Batch // the writes of one Commit, reused
	lastTr  time.Time

	// batchGW lists the gateways that sent bundles: they are of a release
	// that reads queue.OutBatch messages too (an older one would drop them).
	gwMu    sync.RWMutex
	batchGW map[string]bool
}

type writeOp struct {
	gw      string // outbound message for this gateway...
	payload []byte
	conn    string // ...or handled mark of conn (of gateway gw)
	seq     uint64
	ack     *ack          // ...or acknowledgement of an entry
	barrier chan struct{} // ...or a flush request
}

// ack is a finished entry's acknowledgement and what goes with it.
type ack struct {
	part    int
	id      string
	gw      string // the gateway that queued the bundle
	bundled int64  // envelopes counted in that gateway's Queued (bundles only)
	// redelivered: the entry came back from a worker that died; its
	// envelopes' start counts (queue.StartTry) go with its acknowledgement.
	redelivered bool
	// forget lists connections that closed in this entry: their handled
	// marks go with its acknowledgement, not before, since until then the
	// entry may come back.
	forget []connRef
}

// connRef names a connection for its handled mark.
type connRef struct{ gw, conn string }

type outboxParams struct {
	queue       *queue.Broker
	writeBudget int
	stats       *Stats
	log         *slog.Logger
	logs        *ratelog.Limiter
	gateways    gatewayBook
	partitions  interface{ active() []int }
}

func newOutbox(p outboxParams) *outbox {
	ctx, cancel := context.WithCancel(context.Background())
	return &outbox{
		q: p.queue, budget: p.writeBudget, stats: p.stats, log: p.log, logs: p.logs,
		gws: p.gateways, parts: p.partitions,
		ctx: ctx, cancel: cancel,
		signal:  make(chan struct{}, 1),
		batchGW: make(map[string]bool),
	}
}

// start starts the goroutine that sends what others queued and did not
// send themselves, until shutdown.
func (ob *outbox) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); ob.run() }()
}

// shutdown stops sending: a send in progress gives up, and later writes
// are dropped (what they answer stays pending in Redis, for the next
// worker). Handlers waiting for room go on.
func (ob *outbox) shutdown() {
	ob.cancel()
	ob.mu.Lock()
	ob.freeLocked()
	ob.mu.Unlock()
}

// sawBundle notes that gateway gw queues bundles: it takes OutBatch
// messages too.
func (ob *outbox) sawBundle(gw string) {
	if ob.readsBatches(gw) {
		return
	}
	ob.gwMu.Lock()
	ob.batchGW[gw] = true
	ob.gwMu.Unlock()
}

// readsBatches reports whether gateway gw takes queue.OutBatch messages.
func (ob *outbox) readsBatches(gw string) bool {
	ob.gwMu.RLock()
	defer ob.gwMu.RUnlock()
	return ob.batchGW[gw]
}

// maxQueued bounds the writes waiting for the outbox; handlers that send
// past it wait (Redis is slow or away).
const maxQueued = 8192

// push queues op. A queue behind a mutex rather than a channel: the
// outbox takes everything in one swap, and a send wakes it only when the
// queue was empty. Once the outbox is shut down, op is dropped: nothing
// would send it, and what it answers stays pending in Redis for the next
// worker.
func (ob *outbox) push(op writeOp) {
	ob.mu.Lock()
	for len(ob.waiting) >= maxQueued && ob.ctx.Err() == nil {
		if ob.room == nil {
			ob.room = make(chan struct{})
		}
		room := ob.room
		ob.mu.Unlock()
		<-room
		ob.mu.Lock()
	}
	if ob.ctx.Err() != nil {
		ob.mu.Unlock()
		return
	}
	ob.waiting = append(ob.waiting, op)
	first := len(ob.waiting) == 1
	ob.mu.Unlock()
	if first {
		select {
		case ob.signal <- struct{}{}:
		default:
		}
	}
}

// freeLocked wakes the pushers waiting for room.
func (ob *outbox) freeLocked() {
	if ob.room != nil {
		close(ob.room)
		ob.room = nil
	}
}

// take swaps the queue out for spare.
func (ob *outbox) take(spare []writeOp) []writeOp {
	ob.mu.Lock()
	ops := ob.waiting
	ob.waiting = spare[:0]
	ob.freeLocked()
	ob.mu.Unlock()
	return ops
}

// queued reports whether writes wait to be sent.
func (ob *outbox) queued() bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return len(ob.waiting) > 0
}

// out queues an outbound message (queue.AppendOut) for gateway gw.
func (ob *outbox) out(gw string, payload []byte) { ob.push(writeOp{gw: gw, payload: payload}) }

// mark queues connection conn's handled mark: its envelopes up to seq are
// done.
func (ob *outbox) mark(gw, conn string, seq uint64) {
	ob.push(writeOp{gw: gw, conn: conn, seq: seq})
}

// ack queues an entry's acknowledgement.
func (ob *outbox) ack(a *ack) { ob.push(writeOp{ack: a}) }

// flush returns once everything queued before it is in Redis (or ctx
// ends, or the outbox is shut down).
func (ob *outbox) flush(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	ch := make(chan struct{})
	ob.push(writeOp{barrier: ch})
	select {
	case <-ch:
	case <-ctx.Done():
	case <-ob.ctx.Done():
	}
}

// run sends what others queued and did not send themselves, until
// shutdown.
func (ob *outbox) run() {
	for {
		select {
		case <-ob.signal:
		case <-ob.ctx.Done():
			return
		}
		ob.sending.Lock()
		ok := ob.drain(ob.ctx)
		ob.sending.Unlock()
		if !ok {
			return
		}
	}
}

// tryDrain sends what is queued unless another send is in progress, whose
// sender then sends it (it looks at the queue again after unlocking).
func (ob *outbox) tryDrain() {
	for ob.queued() && ob.sending.TryLock() {
		ob.drain(ob.ctx)
		ob.sending.Unlock()
	}
}

// drain sends batch after batch until the queue is empty, each in one
// Commit, which retries a failed pipeline with backoff. It reports false
// if ctx ended first. The caller holds sending.
func (ob *outbox) drain(ctx context.Context) bool {
	for {
		ops := ob.take(ob.spare)
		if len(ops) == 0 {
			ob.spare = ops
			return true
		}
		ob.gather(ops)
		stages.Mark("wk.commit")
		err := ob.q.Commit(ctx, &ob.batch, queue.CommitOptions{
			Budget:       ob.budget,
			ReadsBatches: ob.readsBatches,
			Sent:         func() { ob.stats.Writes.Add(1) },
			Retry: func(err error, wait time.Duration) {
				ob.stats.RedisErrs.Add(1)
				ob.log.Error("redis write failed, retrying", "duty", "writer", "n", len(ops), "err", err, "backoff", wait)
			},
			Refused: func(cmd string, err error) {
				ob.stats.RefusedWrites.Add(1)
				ob.logs.Error("refused write "+cmd, "redis refused a write; not retried", "cmd", cmd, "err", err)
			},
		})
		if err != nil {
			ob.stats.RedisErrs.Add(1)
			ob.log.Error("stopped with writes not sent", "duty", "writer", "n", len(ops), "err", err)
			return false
		}
		for i, op := range ops {
			if op.barrier != nil {
				close(op.barrier)
			}
			ops[i] = writeOp{}
		}
		ob.spare = ops
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
func (ob *outbox) gather(ops []writeOp) {
	b := &ob.batch
	b.Reset()
	for _, op := range ops {
		switch {
		case op.ack != nil:
			a := op.ack
			b.Ack(a.part, a.id)
			if a.bundled > 0 && !ob.gws.dead(a.gw) { // a dead gateway's count was deleted with it
				b.Finished(a.gw, a.bundled)
			}
			for _, c := range a.forget {
				b.ForgetHandled(c.gw, c.conn)
			}
			if a.redelivered {
				b.ClearTries(a.part, a.id)
			}
		case op.conn != "":
			b.Mark(op.gw, op.conn, op.seq)
		case op.gw != "":
			b.Out(op.gw, op.payload)
		}
	}
	if now := time.Now(); now.Sub(ob.lastTr) > 200*time.Millisecond {
		ob.lastTr = now
		for _, p := range ob.parts.active() {
			b.Trim(p)
		}
	}
}
