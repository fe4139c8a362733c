package gateway

import (
	"net"
	"time"

	"github.com/maple-farm/maple/box"
)

// A stopping gateway drains (docs/operations.md, "Deploying gateways" and
// "What a client sees during a gateway roll"). What it guarantees: when it
// closes a connection, every frame it took from that connection has been
// answered, unless CloseGrace ran out (logged and counted per
// connection). A frame it did not take is answered box.RetMoved and never
// queued. So a request whose client got no answer never ran, and the
// client can send it again to another gateway.
//
// The drain and the event goroutines meet on two atomics of a connection,
// in opposite orders: admit raises owed, then reads stopped; the drain sets
// stopped, then reads owed. Go's atomics are sequentially consistent, so
// either admit sees stopped (and refuses the frame), or the drain sees the
// frame in owed (and waits for its answer): a frame is never queued
// behind the drain's back.

// drainTick is how often the drain looks at its connections.
const drainTick = 20 * time.Millisecond

// admit counts a frame of c (header h) in owed before it is queued; false if the
// drain stopped taking c's work: the frame is answered box.RetMoved and
// not queued. Runs on c's event goroutine.
func (s *Server) admit(c *conn, h box.Header) bool {
	c.owed.Add(1)
	if !c.stopped.Load() {
		return true
	}
	s.Stats.DrainRefused.Add(1)
	c.peer.send(box.Append(nil, h.Cmd, box.RetMoved, h.SN, nil))
	c.owed.Add(-1) // after the answer, which goes out before the close
	return false
}

// kick closes c for a worker (a login elsewhere replaced its session, or
// a handler's CloseClient). While the gateway drains, c instead stops
// taking work at once and the drain closes it once every frame it took
// was answered: a client that moved and logged in again on the new
// gateway kicks its old connection here, and its requests still in flight
// there must not run without their answers.
func (s *Server) kick(c *conn) {
	if !s.draining.Load() {
		c.peer.close()
		return
	}
	c.stopped.Store(true) // the drain's next round closes it once owed nothing
}

// drain runs when the gateway is told to stop. It stops accepting (a new
// gateway on the same port with SO_REUSEPORT gets the new players), sends
// each connection the move push, and keeps serving for DrainTimeout. Then,
// per connection, it stops taking work (admit), and closes the connection
// once every frame it took was answered (owed 0); connections still owed
// answers CloseGrace later are closed anyway, each logged and counted. A
// connection kicked meanwhile (kick) is closed the same way, at once.
func (s *Server) drain(serveErr chan error) {
	start := time.Now()
	s.draining.Store(true)
	stopped := 0
	for _, a := range []net.Addr{s.bound, s.wsAddr} { // TCP and WebSocket players
		if ta, ok := a.(*net.TCPAddr); ok {
			n, err := stopAccepting(ta.Port)
			if err != nil {
				s.log.Error("could not stop accepting; closing as usual", "err", err)
			}
			stopped += n
		}
	}
	s.log.Info("draining", "conns", s.Stats.Conns.Load(), "listeners_closed", stopped, "dur", s.opts.DrainTimeout)
	deadline := start.Add(s.opts.DrainTimeout)
	graceEnd := deadline.Add(s.opts.CloseGrace)
	move := box.Append(nil, box.CmdMove, box.RetOK, 0, nil)
	told := make(map[*conn]bool)   // sent the move push
	closed := make(map[*conn]bool) // told to close
	var conns []*conn
	stopping := false
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for {
		now := time.Now()
		stop := !now.Before(deadline)
		force := !now.Before(graceEnd)
		if stop && !stopping {
			stopping = true
			s.log.Info("drain time over: taking no more frames, closing each connection once answered",
				"conns", s.Stats.Conns.Load(), "close_grace", s.opts.CloseGrace)
		}
		conns = s.connList(conns[:0])
		open := 0
		for _, c := range conns {
			if !told[c] {
				// Also for a connection accepted just before the listener
				// closed, which the first round may not have seen.
				told[c] = true
				s.Stats.MovesSent.Add(1)
				s.write(c, move)
			}
			if closed[c] {
				continue
			}
			if !stop && !c.stopped.Load() {
				open++
				continue
			}
			c.stopped.Store(true) // before owed is read: see admit
			switch owed := c.owed.Load(); {
			case owed <= 0:
				closed[c] = true
				c.peer.close()
			case force:
				closed[c] = true
				s.Stats.DrainCutOff.Add(1)
				s.limit.Warn("drain cut off", "drain: --close-grace over, closing a connection still owed answers (their frames may run unanswered)",
					"conn", c.id, "addr", c.addr, "owed", owed)
				c.peer.close()
			default:
				open++
			}
		}
		if stop && open == 0 {
			s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond), "told_to_move", s.Stats.MovesSent.Load(),
				"refused_moved", s.Stats.DrainRefused.Load(), "cut_off", s.Stats.DrainCutOff.Load())
			// Give the closes a moment to flush.
			for i := 0; i < 40 && s.Stats.Conns.Load() > 0; i++ {
				time.Sleep(50 * time.Millisecond)
			}
			return
		}
		select {
		case <-tick.C:
		case err := <-serveErr:
			serveErr <- err // Run reads it
			return
		}
	}
}

// connList appends the open connections to dst.
func (s *Server) connList(dst []*conn) []*conn {
	s.mu.RLock()
	for _, c := range s.conns {
		dst = append(dst, c)
	}
	s.mu.RUnlock()
	return dst
}
