package worker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store"
)

// writer owns the worker's writes to Redis: replies, pushes and control
// messages for gateways, handled marks and acknowledgements. One goroutine
// sends whatever piled up in one pipeline, in the order it was queued, so a
// reply always reaches Redis before its frame's handled mark and the
// acknowledgement of its entry, and replies to one connection keep the
// order of its requests.
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

	sending  sync.Mutex // held by the one sending; guards what follows
	spare    []writeOp
	batchBuf map[string][]byte // per gateway, the OutBatch buffer
	lastTr   time.Time
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
	wr := &writer{w: w, ctx: ctx, signal: make(chan struct{}, 1), batchBuf: make(map[string][]byte)}
	wr.room = sync.NewCond(&wr.mu)
	return wr
}

// push queues op. A queue behind a mutex rather than a channel: the
// writer takes everything in one swap, and a send wakes it only when the
// queue was empty.
func (wr *writer) push(op writeOp) {
	wr.mu.Lock()
	for len(wr.queue) >= maxQueued {
		wr.room.Wait()
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

// flush returns once everything queued before it is in Redis (or ctx ends).
func (wr *writer) flush(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	ch := make(chan struct{})
	wr.push(writeOp{barrier: ch})
	select {
	case <-ch:
	case <-ctx.Done():
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

// drain sends batch after batch until the queue is empty, retrying a
// failed batch with backoff. It reports false if ctx ended first. The
// caller holds sending.
func (wr *writer) drain(ctx context.Context) bool {
	for {
		batch := wr.take(wr.spare)
		if len(batch) == 0 {
			wr.spare = batch
			return true
		}
		backoff := 10 * time.Millisecond
		for {
			err := wr.send(ctx, batch)
			if err == nil {
				break
			}
			wr.w.Stats.RedisErrs.Add(1)
			if ctx.Err() != nil {
				wr.w.log.Error("stopped with writes not sent", "duty", "writer", "n", len(batch), "err", err)
				return false
			}
			wr.w.log.Error("redis write failed, retrying", "duty", "writer", "n", len(batch), "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
		}
		for i, op := range batch {
			if op.barrier != nil {
				close(op.barrier)
			}
			batch[i] = writeOp{}
		}
		wr.spare = batch
	}
}

// send writes one batch: outbound messages grouped per gateway (one
// OutBatch, or LPUSH of many, which keeps their order), then handled marks
// per gateway, then the frames finished per gateway (their frame counts)
// and the acknowledgements per partition, then the marks of connections
// that closed and the start counts of redelivered entries, and now and
// then, trims.
func (wr *writer) send(ctx context.Context, batch []writeOp) error {
	st := wr.w.st
	pipe := st.Client().Pipeline()
	var outs map[string][][]byte
	var gws []string
	var marks map[string][]any // gateway -> conn, seq, conn, seq...
	var markGWs []string
	var markAt map[string]int // connection -> index of its mark in marks
	var acks map[int][]string
	var parts []int
	var finished map[string]int64 // gateway -> envelopes of its bundles done
	var entries []*entry
	for _, op := range batch {
		switch {
		case op.entry != nil:
			e := op.entry
			if acks == nil {
				acks, finished = make(map[int][]string), make(map[string]int64)
			}
			if _, ok := acks[e.part]; !ok {
				parts = append(parts, e.part)
			}
			acks[e.part] = append(acks[e.part], e.id)
			if e.bundled > 0 {
				finished[e.gw] += e.bundled
			}
			entries = append(entries, e)
		case op.conn != "":
			if marks == nil {
				marks, markAt = make(map[string][]any), make(map[string]int)
			}
			if i, ok := markAt[op.conn]; ok {
				marks[op.gw][i+1] = op.seq // a later mark of a connection is higher
				continue
			}
			if _, ok := marks[op.gw]; !ok {
				markGWs = append(markGWs, op.gw)
			}
			markAt[op.conn] = len(marks[op.gw])
			marks[op.gw] = append(marks[op.gw], op.conn, op.seq)
		case op.gw != "":
			if outs == nil {
				outs = make(map[string][][]byte)
			}
			if _, ok := outs[op.gw]; !ok {
				gws = append(gws, op.gw)
			}
			outs[op.gw] = append(outs[op.gw], op.payload)
		}
	}
	for _, gw := range gws {
		msgs := outs[gw]
		if len(msgs) > 1 && wr.w.readsBatches(gw) {
			b := store.AppendOutBatch(slices.Grow(wr.batchBuf[gw][:0], store.OutBatchSize(msgs)), msgs)
			if cap(b) <= 1<<20 && len(wr.batchBuf) < 256 {
				wr.batchBuf[gw] = b // sent by the end of this call: reused by the next
			}
			st.PushOut(ctx, pipe, gw, b)
			continue
		}
		args := make([]any, len(msgs))
		for i, m := range msgs {
			args[i] = m
		}
		st.PushOut(ctx, pipe, gw, args...)
	}
	for _, gw := range markGWs {
		st.MarkHandled(ctx, pipe, gw, marks[gw]...)
	}
	for gw, n := range finished {
		if !wr.w.gatewayDead(gw) { // its count was deleted with it
			st.Finished(ctx, pipe, gw, n)
		}
	}
	for _, p := range parts {
		st.Ack(ctx, pipe, p, acks[p]...)
	}
	for _, e := range entries {
		for _, c := range e.forget {
			st.ForgetHandled(ctx, pipe, c.gw, c.conn)
		}
		if e.redelivered {
			st.ClearTries(ctx, pipe, e.part, e.id)
		}
	}
	if now := time.Now(); now.Sub(wr.lastTr) > 200*time.Millisecond {
		wr.lastTr = now
		for _, p := range wr.w.activeParts() {
			st.Trim(ctx, pipe, p)
		}
	}
	if pipe.Len() == 0 {
		return nil
	}
	wr.w.Stats.Writes.Add(1)
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	retry, noscript := false, false
	for _, c := range cmds {
		e := c.Err()
		var re redis.Error
		switch {
		case e == nil:
		case store.IsNoScript(e):
			// Redis restarted with an empty script cache: only trims run
			// scripts here, and the next batch's trim runs again.
			noscript = true
		case !errors.As(e, &re) || isTransient(e):
			retry = true // the network or a failover: send the batch again
		default:
			// A command the server refused will be refused again.
			wr.w.log.Error("redis refused a write", "err", e, "cmd", c.Name())
		}
	}
	if noscript {
		_ = store.LoadScripts(ctx, st.Client())
	}
	if retry {
		return err
	}
	return nil
}

// isTransient: store.IsTransient, the farm's one notion of a retryable error.
func isTransient(err error) bool { return store.IsTransient(err) }
