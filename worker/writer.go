package worker

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store"
)

// writer owns the worker's writes to Redis: replies, pushes and control
// messages for gateways, and acknowledgements. One goroutine sends
// whatever piled up in one pipeline, in the order it was queued, so a
// reply always reaches Redis before the acknowledgement of its frame, and
// replies to one connection keep the order of its requests.
type writer struct {
	w      *Worker
	ops    chan writeOp
	lastTr time.Time
}

type writeOp struct {
	gw      string // outbound message for this gateway...
	payload []byte
	part    int // ...or acknowledgement of entry id of partition part
	id      string
	barrier chan struct{} // ...or a flush request
}

const writeBatch = 1024

func newWriter(w *Worker) *writer {
	return &writer{w: w, ops: make(chan writeOp, 8192)}
}

func (wr *writer) out(gw string, payload []byte) { wr.ops <- writeOp{gw: gw, payload: payload} }

func (wr *writer) ack(part int, id string) { wr.ops <- writeOp{part: part, id: id} }

// flush returns once everything queued before it is in Redis (or ctx ends).
func (wr *writer) flush(ctx context.Context) {
	ch := make(chan struct{})
	select {
	case wr.ops <- writeOp{barrier: ch}:
	case <-ctx.Done():
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

func (wr *writer) run(ctx context.Context) {
	log := wr.w.log.With("duty", "writer")
	batch := make([]writeOp, 0, writeBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-wr.ops:
			batch = append(batch, op)
		case <-ctx.Done():
			return
		}
	more:
		for len(batch) < writeBatch {
			select {
			case op := <-wr.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		backoff := 10 * time.Millisecond
		for {
			err := wr.send(ctx, batch)
			if err == nil {
				break
			}
			wr.w.Stats.RedisErrs.Add(1)
			if ctx.Err() != nil {
				log.Error("stopped with writes not sent", "n", len(batch), "err", err)
				return
			}
			log.Error("redis write failed, retrying", "n", len(batch), "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
		}
		for _, op := range batch {
			if op.barrier != nil {
				close(op.barrier)
			}
		}
	}
}

// send writes one batch: outbound messages grouped per gateway (LPUSH
// keeps their order), then acknowledgements grouped per partition, then,
// now and then, trims.
func (wr *writer) send(ctx context.Context, batch []writeOp) error {
	st := wr.w.st
	pipe := st.Client().Pipeline()
	var outs map[string][]any
	var gws []string
	var acks map[int][]string
	var parts []int
	for _, op := range batch {
		switch {
		case op.gw != "":
			if outs == nil {
				outs = make(map[string][]any)
			}
			if _, ok := outs[op.gw]; !ok {
				gws = append(gws, op.gw)
			}
			outs[op.gw] = append(outs[op.gw], op.payload)
		case op.id != "":
			if acks == nil {
				acks = make(map[int][]string)
			}
			if _, ok := acks[op.part]; !ok {
				parts = append(parts, op.part)
			}
			acks[op.part] = append(acks[op.part], op.id)
		}
	}
	for _, gw := range gws {
		st.PushOut(ctx, pipe, gw, outs[gw]...)
	}
	for _, p := range parts {
		st.Ack(ctx, pipe, p, acks[p]...)
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

// isTransient reports whether err may go away by retrying: the network or
// Redis failing over or loading, as opposed to a command the server
// rejects or a game's own error.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		return redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "MASTERDOWN") ||
			redis.HasErrorPrefix(err, "TRYAGAIN") || redis.HasErrorPrefix(err, "CLUSTERDOWN") ||
			redis.HasErrorPrefix(err, "READONLY")
	}
	return false
}
