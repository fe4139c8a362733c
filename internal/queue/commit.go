package queue

import (
	"context"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/retry"
)

// DefaultWriteBudget is the most bytes one stream entry, one list element
// or one pipeline of the farm carries: bigger batches are split. It keeps
// every write far below Redis's limits (512 MiB per bulk string by
// default), whatever clients send, and bounds the buffers a round trip
// needs on both sides.
const DefaultWriteBudget = 8 << 20

// cmdSlack is what a command costs beside its arguments: its name, key
// and the protocol's framing.
const cmdSlack = 128

// Batch gathers what a worker has done since its last commit, for Commit:
// outbound messages for gateways (replies, pushes, control messages),
// handled marks of connections, finished envelopes of gateways' bundles,
// acknowledgements of entries, and the clean-up that follows them. The
// order of the calls does not matter across kinds: Commit writes each kind
// in its place (see Commit). Within a kind it is kept: a gateway's
// messages go out in the order they were added.
//
// A Batch is reused from commit to commit (Reset), which keeps its
// buffers. It is not safe for concurrent use.
type Batch struct {
	gws      []string // gateways with messages, in order of their first
	outs     map[string][][]byte
	markGWs  []string
	marks    map[string][]any // gateway -> conn, seq, conn, seq...
	markAt   map[string]int   // connection -> index of its mark in marks
	finGWs   []string
	finished map[string]int64 // gateway -> envelopes of its bundles done
	parts    []int
	acks     map[int][]string
	after    []cleanUp
	trims    []int
	bufs     map[string][]byte // per gateway, the OutBatch buffer, reused
}

// cleanUp is a handled mark to forget (conn set) or the start counts of a
// redelivered entry to clear.
type cleanUp struct {
	gw, conn string
	part     int
	id       string
}

// Out adds an encoded outbound message (AppendOut) for gateway gw.
func (b *Batch) Out(gw string, msg []byte) {
	if b.outs == nil {
		b.outs = make(map[string][][]byte)
	}
	if _, ok := b.outs[gw]; !ok {
		b.gws = append(b.gws, gw)
	}
	b.outs[gw] = append(b.outs[gw], msg)
}

// Mark adds the handled mark of connection conn of gateway gw: its
// envelope seq is finished. A later mark of a connection replaces an
// earlier one (it is higher).
func (b *Batch) Mark(gw, conn string, seq uint64) {
	if b.marks == nil {
		b.marks, b.markAt = make(map[string][]any), make(map[string]int)
	}
	if i, ok := b.markAt[conn]; ok {
		b.marks[gw][i+1] = seq
		return
	}
	if _, ok := b.marks[gw]; !ok {
		b.markGWs = append(b.markGWs, gw)
	}
	b.markAt[conn] = len(b.marks[gw])
	b.marks[gw] = append(b.marks[gw], conn, seq)
}

// Finished adds that n envelopes of gateway gw's bundles are done: they
// leave its frame count (Keys.Queued).
func (b *Batch) Finished(gw string, n int64) {
	if b.finished == nil {
		b.finished = make(map[string]int64)
	}
	if _, ok := b.finished[gw]; !ok {
		b.finGWs = append(b.finGWs, gw)
	}
	b.finished[gw] += n
}

// Ack adds the acknowledgement of entry id of partition p.
func (b *Batch) Ack(p int, id string) {
	if b.acks == nil {
		b.acks = make(map[int][]string)
	}
	if _, ok := b.acks[p]; !ok {
		b.parts = append(b.parts, p)
	}
	b.acks[p] = append(b.acks[p], id)
}

// ForgetHandled adds the removal of the handled mark of connection conn of
// gateway gw, which closed.
func (b *Batch) ForgetHandled(gw, conn string) {
	b.after = append(b.after, cleanUp{gw: gw, conn: conn})
}

// ClearTries adds the removal of the start counts of redelivered entry id
// of partition p (StartTry).
func (b *Batch) ClearTries(p int, id string) {
	b.after = append(b.after, cleanUp{part: p, id: id})
}

// Trim adds the trimming of partition p's stream (Trim).
func (b *Batch) Trim(p int) { b.trims = append(b.trims, p) }

// Reset empties b for the next commit, keeping its buffers.
func (b *Batch) Reset() {
	clear(b.outs)
	clear(b.marks)
	clear(b.markAt)
	clear(b.finished)
	clear(b.acks)
	b.gws, b.markGWs, b.finGWs, b.parts = b.gws[:0], b.markGWs[:0], b.finGWs[:0], b.parts[:0]
	b.after, b.trims = b.after[:0], b.trims[:0]
}

// CommitOptions tune a Commit and report what it does.
type CommitOptions struct {
	// Budget bounds every list element and pipeline (DefaultWriteBudget
	// if 0): a bigger batch is sent as several pipelines, in order.
	Budget int
	// ReadsBatches reports whether gateway gw reads OutBatch messages;
	// nil means none does.
	ReadsBatches func(gw string) bool
	// Sent, if set, is called for every pipeline sent.
	Sent func()
	// Retry, if set, is called when a pipeline failed for a reason that
	// may pass (retry.IsTransient): it is sent again after wait.
	Retry func(err error, wait time.Duration)
	// Refused, if set, is called for every command Redis refused for its
	// content (retry.IsRefused): it is not sent again, the rest goes on.
	Refused func(cmd string, err error)
}

// Commit writes b to Redis in the order that keeps a worker's results
// safe whatever fails in between:
//
//  1. outbound messages, per gateway in the order added: a reply is in
//     its gateway's list before anything says its frame is done;
//  2. handled marks: a worker taking over an entry skips what is marked,
//     so a mark never gets ahead of the reply it stands for;
//  3. finished envelopes (frame counts), then the acknowledgements of
//     entries: an entry is acknowledged only once its replies and marks
//     are in, and a commit cut short leaves a frame count too low (a
//     looser bound) rather than too high;
//  4. clean-up: marks of connections that closed, start counts of
//     redelivered entries, trims.
//
// On a single Redis each pipeline is a transaction, run whole or not at
// all. A cluster client sends each node its share of a pipeline side by
// side, so there the order holds only within a node: the commands go in
// up to three round trips, one after the other, by the slots of their
// keys: the gateways' (1 to 3), the partitions' (acknowledgements, start
// counts, trims), and the forgotten marks of closed connections.
//
// A batch over the budget is cut into several pipelines, sent one after
// the other in that order. A pipeline that fails for a transient reason is
// sent again, with backoff, until it goes through; those before it are not
// sent again. Commit returns nil once everything is sent, or the last
// error if ctx ended first.
func (q *Broker) Commit(ctx context.Context, b *Batch, o CommitOptions) error {
	if o.Budget <= 0 {
		o.Budget = DefaultWriteBudget
	}
	backoff := retry.New(10*time.Millisecond, time.Second)
	for pipes := q.plan(b, &o); len(pipes) > 0; {
		err := q.exec(ctx, pipes[0], &o)
		if err == nil {
			pipes = pipes[1:]
			continue
		}
		if ctx.Err() != nil {
			return err
		}
		if o.Retry != nil {
			o.Retry(err, backoff.Delay())
		}
		backoff.Wait(ctx)
	}
	return nil
}

// step is one command of a batch, of about size bytes.
type step struct {
	size  int
	phase phase
	add   func(ctx context.Context, pipe redis.Pipeliner)
}

// phase groups a batch's commands by the slots of their keys, in the
// order Commit sends them. On a cluster a pipeline's commands go to their
// nodes side by side, so order holds only within a node: each phase goes
// in pipelines of its own, after the one before has gone through (one
// pipeline would let an acknowledgement land before its reply, and a
// worker killed then would lose the reply).
type phase int

const (
	phaseGateways phase = iota // per gateway: messages, handled marks, frame count (its slot)
	phaseEntries               // per partition: acknowledgements, start counts, trims
	phaseForget                // marks of connections that closed, after their entries' acknowledgements
)

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

// plan turns a batch into pipelines of at most o.Budget bytes, in the
// order Commit gives.
func (q *Broker) plan(b *Batch, o *CommitOptions) [][]step {
	budget := o.Budget
	var steps []step
	for _, gw := range b.gws {
		steps = q.outSteps(steps, b, o, gw, b.outs[gw], budget-cmdSlack-len(gw))
	}
	for _, gw := range b.markGWs {
		m := b.marks[gw]
		cut(len(m)/2, budget-cmdSlack, func(i int) int { return len(m[2*i].(string)) + 24 }, func(lo, hi int) {
			args := m[2*lo : 2*hi]
			steps = append(steps, step{size: cmdSlack + 24*(hi-lo) + argsLen(args), phase: phaseGateways, add: func(ctx context.Context, pipe redis.Pipeliner) {
				q.MarkHandled(ctx, pipe, gw, args...)
			}})
		})
	}
	for _, gw := range b.finGWs {
		n := b.finished[gw]
		steps = append(steps, step{size: cmdSlack, phase: phaseGateways, add: func(ctx context.Context, pipe redis.Pipeliner) {
			q.Finished(ctx, pipe, gw, n)
		}})
	}
	for _, p := range b.parts {
		ids := b.acks[p]
		cut(len(ids), budget-cmdSlack, func(i int) int { return len(ids[i]) + 8 }, func(lo, hi int) {
			ids := ids[lo:hi]
			size := cmdSlack
			for _, id := range ids {
				size += len(id) + 8
			}
			steps = append(steps, step{size: size, phase: phaseEntries, add: func(ctx context.Context, pipe redis.Pipeliner) {
				q.Ack(ctx, pipe, p, ids...)
			}})
		})
	}
	for _, c := range b.after {
		if c.conn != "" {
			steps = append(steps, step{size: cmdSlack + len(c.conn), phase: phaseForget, add: func(ctx context.Context, pipe redis.Pipeliner) {
				q.ForgetHandled(ctx, pipe, c.gw, c.conn)
			}})
		} else {
			steps = append(steps, step{size: cmdSlack, phase: phaseEntries, add: func(ctx context.Context, pipe redis.Pipeliner) {
				q.ClearTries(ctx, pipe, c.part, c.id)
			}})
		}
	}
	for _, p := range b.trims {
		steps = append(steps, step{size: cmdSlack, phase: phaseEntries, add: func(ctx context.Context, pipe redis.Pipeliner) {
			q.Trim(ctx, pipe, p)
		}})
	}
	if !q.cluster() {
		return pack(steps, budget) // one transaction each: Redis keeps their order
	}
	slices.SortStableFunc(steps, func(a, b step) int { return int(a.phase) - int(b.phase) })
	var pipes [][]step
	for lo := 0; lo < len(steps); {
		hi := lo + 1
		for hi < len(steps) && steps[hi].phase == steps[lo].phase {
			hi++
		}
		pipes = append(pipes, pack(steps[lo:hi], budget)...)
		lo = hi
	}
	return pipes
}

// cluster reports whether the Broker's client is a cluster's.
func (q *Broker) cluster() bool {
	_, ok := q.rdb.(*redis.ClusterClient)
	return ok
}

// outSteps appends the LPUSHes of gateway gw's messages, each of at most
// limit bytes: OutBatch elements for a gateway that reads them, plain
// elements otherwise.
func (q *Broker) outSteps(steps []step, b *Batch, o *CommitOptions, gw string, msgs [][]byte, limit int) []step {
	if len(msgs) > 1 && o.ReadsBatches != nil && o.ReadsBatches(gw) {
		first := true
		cut(len(msgs), limit-OutBatchSize(nil), func(i int) int { return BundleSize(msgs[i : i+1]) }, func(lo, hi int) {
			if hi-lo == 1 {
				m := msgs[lo]
				steps = append(steps, step{size: cmdSlack + len(gw) + len(m), phase: phaseGateways, add: func(ctx context.Context, pipe redis.Pipeliner) {
					q.PushOut(ctx, pipe, gw, m)
				}})
				return
			}
			var buf []byte
			if first { // most batches make one element: its buffer is reused
				first = false
				if b.bufs == nil {
					b.bufs = make(map[string][]byte)
				}
				buf = AppendOutBatch(slices.Grow(b.bufs[gw][:0], OutBatchSize(msgs[lo:hi])), msgs[lo:hi])
				if cap(buf) <= 1<<20 && len(b.bufs) < 256 {
					b.bufs[gw] = buf // sent by the end of this commit: reused by the next
				}
			} else {
				buf = AppendOutBatch(nil, msgs[lo:hi])
			}
			steps = append(steps, step{size: cmdSlack + len(gw) + len(buf), phase: phaseGateways, add: func(ctx context.Context, pipe redis.Pipeliner) {
				q.PushOut(ctx, pipe, gw, buf)
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
		steps = append(steps, step{size: size, phase: phaseGateways, add: func(ctx context.Context, pipe redis.Pipeliner) {
			q.PushOut(ctx, pipe, gw, args...)
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
// its content would be refused again; it is reported (o.Refused), and the
// rest goes on.
func (q *Broker) exec(ctx context.Context, steps []step, o *CommitOptions) error {
	// A transaction on a single Redis. go-redis takes none over several
	// slots on a cluster, and a batch spans them (one slot per gateway).
	discarded, err := q.execPipe(ctx, steps, o, !q.cluster())
	if discarded {
		// Redis refused a command as it queued it (out of memory refuses
		// them all inside MULTI), so it ran none: send them again as a
		// plain pipeline, where what Redis takes (acknowledgements) lands
		// and what it refuses is reported, as before transactions.
		_, err = q.execPipe(ctx, steps, o, false)
	}
	return err
}

// discardedTx reports whether Redis discarded a transaction whole: it
// refused a command as it was queued (out of memory, which refuses every
// command inside MULTI; an ACL; a failed save), so none ran. A command
// that ran and failed (WRONGTYPE) does not discard the others.
func discardedTx(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		for _, p := range []string{"EXECABORT", "OOM", "NOPERM", "MISCONF"} {
			if redis.HasErrorPrefix(c.Err(), p) {
				return true
			}
		}
	}
	return false
}

// execPipe sends steps in one round trip. With tx, as a transaction
// (MULTI/EXEC): Redis runs all of them or none, so a worker killed while
// Redis reads the pipeline cannot leave a reply in a gateway's list
// without its handled mark, which the next worker would send again. On a
// cluster the pipeline is plain and that duplicate stays possible
// (docs/operations.md). It reports whether Redis discarded the
// transaction.
func (q *Broker) execPipe(ctx context.Context, steps []step, o *CommitOptions, tx bool) (discarded bool, err error) {
	var pipe redis.Pipeliner
	if tx {
		pipe = q.rdb.TxPipeline()
	} else {
		pipe = q.rdb.Pipeline()
	}
	for _, s := range steps {
		s.add(ctx, pipe)
	}
	if pipe.Len() == 0 {
		return false, nil
	}
	if o.Sent != nil {
		o.Sent()
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return false, nil
	}
	if tx && discardedTx(cmds) {
		return true, err
	}
	again, noscript := false, false
	for _, c := range cmds {
		e := c.Err()
		switch {
		case e == nil:
		case IsNoScript(e):
			// Redis restarted with an empty script cache: only trims run
			// scripts here, and the next batch's trim runs again.
			noscript = true
		case !retry.IsRefused(e):
			again = true // the network or a failover: send the pipeline again
		default:
			if o.Refused != nil {
				o.Refused(c.Name(), e)
			}
		}
	}
	if noscript {
		_ = LoadScripts(ctx, q.rdb)
	}
	if again {
		return false, err
	}
	return false, nil
}
