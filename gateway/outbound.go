package gateway

import (
	"context"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/store"
)

// outBatch is how many messages one non-blocking pop takes.
const outBatch = 512

// runOutbound pops the replies, pushes and control messages that workers
// queued for this gateway and hands them to the connections. It takes
// whatever is waiting in one round trip and blocks only when the list is
// empty.
func (s *Server) runOutbound(ctx context.Context) {
	log := s.log.With("duty", "outbound")
	backoff := 10 * time.Millisecond
	var acked int64 // last batch received; acknowledged by the next take
	for ctx.Err() == nil {
		batch, msgs, err := s.st.TakeOut(ctx, s.opts.ID, acked, outBatch)
		if err == nil {
			acked = batch
			for _, m := range msgs {
				s.deliver(m)
			}
			if len(msgs) > 0 {
				backoff = 10 * time.Millisecond
				continue
			}
			// Nothing waiting: block until a message comes, and take it
			// in the same round trip.
			var m string
			var ok bool
			m, ok, err = s.st.WaitOut(ctx, s.block, s.opts.ID, time.Second)
			if err == nil {
				if ok {
					s.deliver(m)
				}
				continue
			}
			acked = -1 // the message may be in transit: have it handed out again
		}
		if ctx.Err() != nil {
			return
		}
		s.Stats.RedisErrs.Add(1)
		log.Error("redis pop failed, retrying", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, time.Second)
	}
}

// deliver carries out one outbound message.
func (s *Server) deliver(raw string) {
	m, err := store.DecodeOut([]byte(raw))
	if err != nil {
		s.log.Error("bad outbound message", "err", err)
		return
	}
	if m.Kind == store.OutBroadcast {
		s.mu.RLock()
		for _, c := range s.conns {
			s.write(c, m.Frames)
		}
		s.mu.RUnlock()
		return
	}
	c := s.lookup(m.Conn)
	if c == nil {
		return // gone meanwhile: its close event is on its way to the workers
	}
	switch m.Kind {
	case store.OutWrite:
		s.write(c, m.Frames)
		if m.At > 0 { // a reply
			s.Stats.Latency.Observe(time.Duration(time.Now().UnixNano() - m.At))
			c.owed.Add(-1)
		}
	case store.OutClose:
		c.peer.close()
	case store.OutBind:
		s.setUID(c, m.UID)
	case store.OutUnbind:
		s.setUID(c, "")
	}
}

func (s *Server) write(c *conn, frames []byte) {
	if len(frames) == 0 {
		return
	}
	for b := frames; len(b) >= box.HeaderLen; {
		f, err := box.Split(b, 0)
		if err != nil || f == nil {
			break
		}
		s.Stats.FramesOut.Add(1)
		b = b[len(f):]
	}
	s.Stats.BytesOut.Add(int64(len(frames)))
	c.peer.send(frames)
}
