package gateway

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/stages"
)

// The core's side of the seam of transport.go: what the protocols report
// of each connection (opened, its frames or messages, closed) becomes the
// envelopes the pusher sends to Redis. All of it runs on the connections'
// event goroutines, so none of it waits on Redis.

// opened implements events.
func (s *Server) opened(p peer) (*conn, error) {
	if s.Stats.Conns.Load() >= int64(s.opts.MaxConns) {
		s.Stats.Refused.Add(1)
		s.limit.Warn("max conns", "connection refused: at --max-conns", "addr", p.remoteAddr(), "n", s.opts.MaxConns)
		return nil, errors.New("gateway: too many connections")
	}
	addr := p.remoteAddr()
	ip := hostOf(addr)
	s.mu.Lock()
	if s.opts.MaxConnsPerIP > 0 && s.perIP[ip] >= s.opts.MaxConnsPerIP {
		s.mu.Unlock()
		s.Stats.PerIPRefused.Add(1)
		s.limit.Warn("max conns per ip", "connection refused: at --max-conns-per-ip", "addr", addr, "n", s.opts.MaxConnsPerIP)
		return nil, errors.New("gateway: too many connections from one address")
	}
	s.perIP[ip]++
	id := s.opts.ID + "-" + strconv.FormatUint(s.connSeq.Add(1), 10)
	c := &conn{id: id, addr: addr, ip: ip, peer: p, part: queue.PartitionOf(id, s.parts)}
	s.conns[id] = c
	s.mu.Unlock()
	s.Stats.Conns.Add(1)
	s.Stats.Accepted.Add(1)
	s.enqueue(c, queue.KindOpen)
	s.log.Debug("opened", "conn", id, "addr", c.addr)
	return c, nil
}

// data implements events: it cuts frames out of the stream and queues them.
// It runs on the event loop, so it never waits on Redis.
func (s *Server) data(c *conn, in []byte) error {
	s.Stats.BytesIn.Add(int64(len(in)))
	buf := in
	if len(c.in.b) > 0 {
		c.in.add(in)
		buf = c.in.b
	}
	started := false // a frame completed: the tail's frame started in this read
	for {
		frame, h, err := box.Cut(buf, s.opts.MaxFrame)
		if err != nil {
			return fmt.Errorf("%w: %w", errBadFrame, err)
		}
		if frame == nil {
			break
		}
		buf = buf[len(frame):]
		started = true
		s.take(c, frame, h)
	}
	// Keep the unparsed tail; evio reuses its input buffer, so copy it.
	if len(buf) == 0 {
		c.in.reset()
		s.partials.done(c)
		return nil
	}
	if len(c.in.b) == 0 || &buf[0] != &c.in.b[0] {
		c.in.keep(buf)
	}
	s.partials.hold(c, c.in.held(), started)
	return nil
}

// message implements events: msg, one WebSocket message, must be exactly
// one frame. It runs on the event loop, so it never waits on Redis.
func (s *Server) message(c *conn, msg []byte) error {
	s.Stats.BytesIn.Add(int64(len(msg)))
	frame, h, err := box.Cut(msg, s.opts.MaxFrame)
	switch {
	case err != nil:
	case frame == nil:
		err = errWSPartial
	case len(frame) != len(msg):
		err = errWSSeveral
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errBadFrame, err)
	}
	s.take(c, frame, h)
	return nil
}

// take queues a frame of c for the workers, or answers it at once: a
// draining gateway's RetMoved, or busy past the connection's share
// (MaxInflight) or the backlog. h is the frame's header, parsed once
// (box.Cut).
func (s *Server) take(c *conn, frame []byte, h box.Header) {
	s.Stats.FramesIn.Add(1)
	if !s.admit(c, h) {
		return // a draining gateway stopped taking c's work: answered RetMoved (drain.go)
	}
	if s.opts.MaxInflight > 0 && c.inflight.Load() >= int64(s.opts.MaxInflight) {
		// One connection may not hold more of the farm than this: its
		// later frames are answered at once, not queued.
		s.Stats.OverInflight.Add(1)
		s.Stats.Busy.Add(1)
		s.limit.Warn("max inflight", "connection at --max-inflight: frame answered -10002", "conn", c.id, "addr", c.addr, "n", s.opts.MaxInflight)
		c.peer.send(busyAnswer(h.Cmd, h.SN))
		c.owed.Add(-1) // after the answer: a drain closes c once it is owed nothing
		return
	}
	if !s.enqueueFrame(c, frame, h) {
		s.Stats.Busy.Add(1)
		s.limit.Warn("backlog", "backlog full (Redis slow or away): frame answered -10002", "conn", c.id, "n", s.opts.Backlog)
		c.peer.send(busyAnswer(h.Cmd, h.SN))
		c.owed.Add(-1)
		return
	}
	c.queued()
}

// closed implements events: the workers get the connection's close event
// after all its frames.
func (s *Server) closed(c *conn, err error) {
	s.mu.Lock()
	delete(s.conns, c.id)
	s.unindexLocked(c)
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	s.mu.Unlock()
	s.partials.done(c)
	c.in.release()
	s.closedIDs.add(c.id, time.Now())
	s.Stats.Conns.Add(-1)
	switch {
	case errors.Is(err, errBadFrame):
		s.Stats.BadFrames.Add(1)
		s.limit.Warn("bad frame", "bad frame: connection closed", "conn", c.id, "addr", c.addr, "err", err)
	case errors.Is(err, errSlowClient):
		s.Stats.SlowClosed.Add(1)
		s.limit.Warn("slow client", "client does not read: closed", "conn", c.id, "addr", c.addr)
	case errors.Is(err, errFrameTimeout):
		s.Stats.FrameTimeouts.Add(1)
		s.limit.Warn("frame timeout", "frame not complete within --frame-timeout: closed", "conn", c.id, "addr", c.addr, "timeout", s.opts.FrameTimeout)
	case errors.Is(err, errPartialBudget):
		s.Stats.PartialShed.Add(1)
		s.limit.Warn("partial budget", "partial frames over --partial-budget: closed the connection with the oldest", "conn", c.id, "addr", c.addr, "budget", s.opts.PartialBudget)
	case errors.Is(err, errIdle):
		s.Stats.IdleClosed.Add(1)
		s.log.Debug("idle client closed", "conn", c.id, "addr", c.addr)
	}
	s.enqueue(c, queue.KindClose)
	s.log.Debug("closed", "conn", c.id, "addr", c.addr, "err", err)
}

// enqueueFrame hands a frame of c to the pusher; false if the backlog is
// full. A connection's only frame in flight is queued even at the queue
// bound: the bound stops bulk, not a player waiting for one answer.
func (s *Server) enqueueFrame(c *conn, frame []byte, h box.Header) bool {
	return s.enqueueItem(c, queue.KindFrame, frame, h, c.inflight.Load() == 0)
}

// enqueue hands an open or close event of c to the pusher; they always go
// through.
func (s *Server) enqueue(c *conn, kind queue.Kind) bool {
	return s.enqueueItem(c, kind, nil, box.Header{}, true)
}

// enqueueItem hands an event of c to the pusher; past the backlog frames
// are refused. always: the queue bound does not apply. h is a frame's
// header.
func (s *Server) enqueueItem(c *conn, kind queue.Kind, frame []byte, h box.Header, always bool) bool {
	c.seq++
	e := queue.Envelope{Kind: kind, Seq: c.seq, At: time.Now().UnixNano(), Gateway: s.opts.ID, Conn: c.id, Addr: c.addr, UID: c.userID(), Frame: frame}
	enc := queue.AppendEnvelope(make([]byte, 0, queue.EnvelopeSize(&e)), &e)
	it := pushItem{c: c, env: enc, kind: kind, always: always}
	if kind == queue.KindFrame {
		it.cmd, it.sn, it.frame = h.Cmd, h.SN, true
	}
	stages.Mark("gw.cut")
	if !s.queue.push(it) {
		c.seq-- // not queued: the workers must not see a gap
		return false
	}
	return true
}

// busyAnswer answers frame cmd, sn: it was not queued.
func busyAnswer(cmd int32, sn uint32) []byte { return box.Append(nil, cmd, box.RetBusy, sn, nil) }
