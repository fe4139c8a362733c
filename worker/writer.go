package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store"
)

// writer owns the worker's writes to Redis: replies, pushes and control
// messages for gateways, handled marks and acknowledgements. One goroutine
// sends whatever piled up in one pipeline (several past the write budget,
// see plan), in the order it was queued, so a
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
		// A pipeline that failed is sent again; those before it are not.
		for pipes := wr.plan(batch); len(pipes) > 0; {
			err := wr.exec(ctx, pipes[0])
			if err == nil {
				pipes = pipes[1:]
				continue
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

// A batch is sent as one pipeline, or as several when it exceeds the
// write budget (Options.WriteBudget): no list element and no pipeline is
// bigger, whatever handlers send, so no write nears Redis's limits and a
// huge batch cannot become a poison write. The order holds across the
// pipelines: outbound messages, then handled marks, then frame counts
// and acknowledgements (the last pipeline carries them).

// messageSlack is what an outbound message carries beside its frames
// (kind, connection, user id, time); the budget always fits one message
// of Options.MaxFrame.
const messageSlack = 4 << 10

// cmdSlack is what a command costs beside its arguments: its name, key
// and the protocol's framing.
const cmdSlack = 128

// step is one command of a batch, of about size bytes.
type step struct {
	size int
	add  func(ctx context.Context, pipe redis.Pipeliner)
}

// cut calls emit with consecutive runs [lo, hi) of n items whose sizes
// add up to at most limit (an item over it runs alone).
func cut(n, limit int, size func(i int) int, emit func(lo, hi int)) {
	lo, sum := 0, 0
	for i := 0; i < n; i++ {
		s := size(i)
		if i > lo && sum+s > limit {
			emit(lo, i)
			lo, sum = i, 0
		}
		sum += s
	}
	if lo < n {
		emit(lo, n)
	}
}

// pack groups steps, in order, into pipelines of at most limit bytes.
func pack(steps []step, limit int) [][]step {
	var pipes [][]step
	cut(len(steps), limit, func(i int) int { return steps[i].size }, func(lo, hi int) {
		pipes = append(pipes, steps[lo:hi])
	})
	return pipes
}

// plan turns a batch into pipelines: outbound messages grouped per
// gateway (one OutBatch per budget's worth, or LPUSH of many, which keeps
// their order), then handled marks per gateway, then the frames finished
// per gateway (their frame counts) and the acknowledgements per
// partition, then the marks of connections that closed and the start
// counts of redelivered entries, and now and then, trims.
func (wr *writer) plan(batch []writeOp) [][]step {
	st := wr.w.st
	budget := wr.w.opts.WriteBudget
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
	var steps []step
	for _, gw := range gws {
		steps = wr.outSteps(steps, gw, outs[gw], budget-cmdSlack-len(gw))
	}
	for _, gw := range markGWs {
		m := marks[gw]
		cut(len(m)/2, budget-cmdSlack, func(i int) int { return len(m[2*i].(string)) + 24 }, func(lo, hi int) {
			args := m[2*lo : 2*hi]
			steps = append(steps, step{size: cmdSlack + 24*(hi-lo) + argsLen(args), add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.MarkHandled(ctx, pipe, gw, args...)
			}})
		})
	}
	for gw, n := range finished {
		if !wr.w.gatewayDead(gw) { // its count was deleted with it
			steps = append(steps, step{size: cmdSlack, add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.Finished(ctx, pipe, gw, n)
			}})
		}
	}
	for _, p := range parts {
		ids := acks[p]
		cut(len(ids), budget-cmdSlack, func(i int) int { return len(ids[i]) + 8 }, func(lo, hi int) {
			ids := ids[lo:hi]
			size := cmdSlack
			for _, id := range ids {
				size += len(id) + 8
			}
			steps = append(steps, step{size: size, add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.Ack(ctx, pipe, p, ids...)
			}})
		})
	}
	for _, e := range entries {
		for _, c := range e.forget {
			steps = append(steps, step{size: cmdSlack + len(c.conn), add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.ForgetHandled(ctx, pipe, c.gw, c.conn)
			}})
		}
		if e.redelivered {
			steps = append(steps, step{size: cmdSlack, add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.ClearTries(ctx, pipe, e.part, e.id)
			}})
		}
	}
	if now := time.Now(); now.Sub(wr.lastTr) > 200*time.Millisecond {
		wr.lastTr = now
		for _, p := range wr.w.activeParts() {
			steps = append(steps, step{size: cmdSlack, add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.Trim(ctx, pipe, p)
			}})
		}
	}
	return pack(steps, budget)
}

// outSteps appends the LPUSHes of gateway gw's messages, each of at most
// limit bytes: OutBatch elements for a gateway that reads them, plain
// elements otherwise.
func (wr *writer) outSteps(steps []step, gw string, msgs [][]byte, limit int) []step {
	st := wr.w.st
	if len(msgs) > 1 && wr.w.readsBatches(gw) {
		first := true
		cut(len(msgs), limit-store.OutBatchSize(nil), func(i int) int { return store.BundleSize(msgs[i : i+1]) }, func(lo, hi int) {
			if hi-lo == 1 {
				m := msgs[lo]
				steps = append(steps, step{size: cmdSlack + len(gw) + len(m), add: func(ctx context.Context, pipe redis.Pipeliner) {
					st.PushOut(ctx, pipe, gw, m)
				}})
				return
			}
			var b []byte
			if first { // most batches make one element: its buffer is reused
				first = false
				b = store.AppendOutBatch(slices.Grow(wr.batchBuf[gw][:0], store.OutBatchSize(msgs[lo:hi])), msgs[lo:hi])
				if cap(b) <= 1<<20 && len(wr.batchBuf) < 256 {
					wr.batchBuf[gw] = b // sent by the end of this batch: reused by the next
				}
			} else {
				b = store.AppendOutBatch(nil, msgs[lo:hi])
			}
			steps = append(steps, step{size: cmdSlack + len(gw) + len(b), add: func(ctx context.Context, pipe redis.Pipeliner) {
				st.PushOut(ctx, pipe, gw, b)
			}})
		})
		return steps
	}
	cut(len(msgs), limit, func(i int) int { return len(msgs[i]) + 16 }, func(lo, hi int) {
		args := make([]any, hi-lo)
		size := cmdSlack + len(gw)
		for i, m := range msgs[lo:hi] {
			args[i] = m
			size += len(m) + 16
		}
		steps = append(steps, step{size: size, add: func(ctx context.Context, pipe redis.Pipeliner) {
			st.PushOut(ctx, pipe, gw, args...)
		}})
	})
	return steps
}

// argsLen is the bytes of the strings among args.
func argsLen(args []any) int {
	n := 0
	for _, a := range args {
		if s, ok := a.(string); ok {
			n += len(s)
		}
	}
	return n
}

// exec sends one pipeline. It returns an error only if the pipeline is
// worth sending again: a transient failure. A command Redis refused for
// its content would be refused again; it is counted and logged, and the
// rest goes on.
func (wr *writer) exec(ctx context.Context, steps []step) error {
	st := wr.w.st
	pipe := st.Client().Pipeline()
	for _, s := range steps {
		s.add(ctx, pipe)
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
		switch {
		case e == nil:
		case store.IsNoScript(e):
			// Redis restarted with an empty script cache: only trims run
			// scripts here, and the next batch's trim runs again.
			noscript = true
		case !store.IsRefused(e):
			retry = true // the network or a failover: send the pipeline again
		default:
			wr.w.Stats.RefusedWrites.Add(1)
			wr.w.logs.Error("refused write "+c.Name(), "redis refused a write; not retried", "cmd", c.Name(), "err", e)
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
