package gateway

import (
	"context"
	"time"
	"unsafe"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/retry"
	"github.com/maple-farm/maple/internal/stages"
)

// outBatch is how many messages one non-blocking take reads.
const outBatch = 512

// outWait is how long a take that found nothing blocks for the next
// message (TakeOutWait), in whole seconds.
const outWait = time.Second

// trimEvery is how many messages handed out the gateway leaves in its
// list before a take drops them (a script call; the takes between are one
// LRANGE each).
const trimEvery = 32

// runOutbound reads the replies, pushes and control messages that workers
// queued for this gateway and hands them to the connections. It takes
// whatever is waiting in one round trip and blocks only when the list is
// empty; what it handed out is dropped from the list by its next take.
func (s *Server) runOutbound(ctx context.Context) {
	log := s.log.With("duty", "outbound")
	backoff := retry.New(10*time.Millisecond, time.Second)
	var pos queue.OutPos // the messages handed out and not yet dropped from the list
	trim := true         // the next take drops them first
	wait := false        // the last take found nothing: the next one may block
	w := &connWrites{at: make(map[*conn]int)}
	for ctx.Err() == nil {
		var msgs []string
		var err error
		if wait {
			// Drop what was handed out, read what is waiting, and block
			// until a message comes if nothing is: one round trip per
			// message for a quiet gateway.
			msgs, err = s.q.TakeOutWait(ctx, s.block, s.opts.ID, &pos, outBatch, outWait)
		} else {
			msgs, err = s.q.TakeOut(ctx, s.opts.ID, &pos, outBatch, trim)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Stats.RedisErrs.Add(1)
			log.Error("redis pop failed, retrying", "err", err, "backoff", backoff.Delay())
			backoff.Wait(ctx)
			continue
		}
		backoff.Reset()
		if len(msgs) > 0 {
			stages.Mark("gw.take")
		}
		for _, m := range msgs {
			s.deliver(w, readOnly(m))
		}
		w.flush()
		// Drop what was handed out every trimEvery messages (a script),
		// and whenever the take found nothing: a blocking take waits for
		// the list's tail, so it drops them first.
		trim = pos.Taken >= trimEvery
		wait = len(msgs) == 0 || (wait && len(msgs) == 1)
	}
}

// readOnly views s as bytes without copying it. The outbound path only
// reads a message (peer.send copies what it queues), so the string's
// bytes are never written.
func readOnly(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// connWrites gathers the writes of one take per connection, so that a
// connection gets one send (one wake, one socket write) per take however
// many of its replies the take held.
type connWrites struct {
	conns   []*conn
	bufs    [][]byte
	free    [][]byte // copies sent, kept for the next take (send copies what it queues)
	owned   []bool   // bufs[i] is our copy, not a slice of a message
	replies []int64  // replies in bufs[i]: c.owed drops once they are sent
	at      map[*conn]int
}

func (w *connWrites) add(c *conn, frames []byte, reply bool) {
	var r int64
	if reply {
		r = 1
	}
	i, ok := w.at[c]
	if !ok {
		w.at[c] = len(w.conns)
		w.conns = append(w.conns, c)
		w.bufs = append(w.bufs, frames)
		w.owned = append(w.owned, false)
		w.replies = append(w.replies, r)
		return
	}
	w.replies[i] += r
	if !w.owned[i] {
		var b []byte
		if n := len(w.free); n > 0 {
			b, w.free = w.free[n-1][:0], w.free[:n-1]
		}
		w.bufs[i] = append(b, w.bufs[i]...)
		w.owned[i] = true
	}
	w.bufs[i] = append(w.bufs[i], frames...)
}

// flushConn sends what is gathered for c, before a control message for it
// (a close must follow its writes).
func (w *connWrites) flushConn(c *conn) {
	if i, ok := w.at[c]; ok {
		w.send(i)
	}
}

func (w *connWrites) send(i int) {
	c := w.conns[i]
	c.inflight.Add(-w.replies[i])
	if len(w.bufs[i]) > 0 {
		c.peer.send(w.bufs[i])
		w.bufs[i] = w.bufs[i][:0]
	}
	// Only now is the connection owed less: a draining gateway closes a
	// connection owed nothing, and the close must come after the reply.
	c.owed.Add(-w.replies[i])
	w.replies[i] = 0
}

func (w *connWrites) flush() {
	for i := range w.conns {
		w.send(i)
		if w.owned[i] && cap(w.bufs[i]) <= 64<<10 {
			w.free = append(w.free, w.bufs[i])
		}
		w.conns[i], w.bufs[i] = nil, nil
	}
	w.conns, w.bufs, w.owned, w.replies = w.conns[:0], w.bufs[:0], w.owned[:0], w.replies[:0]
	clear(w.at)
}

// deliver carries out one outbound message; writes wait in w.
func (s *Server) deliver(w *connWrites, raw []byte) {
	m, err := queue.DecodeOut(raw)
	if err != nil {
		s.limit.Error("bad outbound message", "bad outbound message", "err", err)
		return
	}
	switch m.Kind {
	case queue.OutBatch:
		for rest := m.Frames; len(rest) > 0; {
			var b []byte
			if b, rest, err = queue.CutBundle(rest); err != nil {
				s.limit.Error("bad outbound message", "bad outbound batch", "err", err)
				return
			}
			s.deliver(w, b)
		}
		return
	case queue.OutBroadcast:
		s.mu.RLock()
		for _, c := range s.conns {
			s.writeLater(w, c, m.Frames, false)
		}
		s.mu.RUnlock()
		return
	}
	c := s.lookup(m.Conn)
	if c == nil {
		return // gone meanwhile: its close event is on its way to the workers
	}
	switch m.Kind {
	case queue.OutWrite:
		reply := m.At > 0
		s.writeLater(w, c, m.Frames, reply)
		if reply {
			s.Stats.Latency.Observe(time.Duration(time.Now().UnixNano() - m.At))
		}
	case queue.OutClose:
		w.flushConn(c)
		s.kick(c) // drain.go: while draining, once its frames are answered
	case queue.OutBind:
		s.setUID(c, m.UID)
	case queue.OutUnbind:
		s.setUID(c, "")
	}
}

// write sends frames to c at once.
func (s *Server) write(c *conn, frames []byte) {
	if s.countOut(frames) {
		c.peer.send(frames)
	}
}

// writeLater gathers frames for c in w; reply: they answer one request.
func (s *Server) writeLater(w *connWrites, c *conn, frames []byte, reply bool) {
	if s.countOut(frames) {
		w.add(c, frames, reply)
	} else if reply {
		c.inflight.Add(-1)
		c.owed.Add(-1)
	}
}

// countOut checks and counts frames going out; false if there are none,
// or if one is larger than a client may receive (MaxFrame): a worker of
// this release refuses those itself, and a player is never dropped for a
// push that was too big for it.
func (s *Server) countOut(frames []byte) bool {
	if len(frames) == 0 {
		return false
	}
	n := 0
	for b := frames; len(b) > 0; n++ {
		f, err := box.Split(b, s.opts.MaxFrame)
		if err != nil || f == nil {
			s.Stats.OversizeOut.Add(1)
			s.limit.Error("bad outbound frame", "frames for a client not sent: not whole frames of at most --max-frame", "bytes", len(frames), "max_frame", s.opts.MaxFrame, "err", err)
			return false
		}
		b = b[len(f):]
	}
	s.Stats.FramesOut.Add(int64(n))
	s.Stats.BytesOut.Add(int64(len(frames)))
	return true
}
