package gateway

import (
	"context"
	"slices"
	"sync"
	"time"
)

// What one client may cost the gateway while a frame is still arriving
// (docs/operations.md, "Limits and abuse"): a started frame must be whole
// within FrameTimeout, and the partial frames of all connections together
// stay within PartialBudget bytes; past it, the connections whose partial
// frames are the oldest are closed. Without these, clients that each send
// all but the last byte of a largest frame hold a largest frame of memory
// each, for ever.

// partialFrames tracks the connections holding part of a frame.
type partialFrames struct {
	mu     sync.Mutex
	budget int
	bytes  int // held by all connections in conns
	shed   int // of bytes, held by connections told to close
	conns  map[*conn]struct{}
}

func (p *partialFrames) init(budget int) {
	p.budget = budget
	p.conns = make(map[*conn]struct{})
}

// hold records that c keeps n bytes for a partial frame; started says the
// frame began in the data just read (a frame before it completed), so its
// clock starts now. Called on c's event goroutine.
func (p *partialFrames) hold(c *conn, n int, started bool) {
	now := time.Now()
	p.mu.Lock()
	if !c.partial {
		c.partial = true
		p.conns[c] = struct{}{}
		c.partialSince = now
	} else if started {
		c.partialSince = now
	}
	p.bytes += n - c.partialBytes
	if c.shed {
		p.shed += n - c.partialBytes
	}
	c.partialBytes = n
	var victims []*conn
	if p.bytes-p.shed > p.budget {
		victims = p.overBudgetLocked()
	}
	p.mu.Unlock()
	for _, v := range victims {
		v.peer.abort(errPartialBudget)
	}
}

// overBudgetLocked picks the connections with the oldest partial frames
// until what the others hold fits the budget.
func (p *partialFrames) overBudgetLocked() []*conn {
	all := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		if !c.shed {
			all = append(all, c)
		}
	}
	slices.SortFunc(all, func(a, b *conn) int { return a.partialSince.Compare(b.partialSince) })
	var victims []*conn
	for _, c := range all {
		if p.bytes-p.shed <= p.budget {
			break
		}
		c.shed = true
		p.shed += c.partialBytes
		victims = append(victims, c)
	}
	return victims
}

// done records that c holds no partial frame (any more). Called on c's
// event goroutine.
func (p *partialFrames) done(c *conn) {
	if !c.partial {
		return
	}
	p.mu.Lock()
	delete(p.conns, c)
	p.bytes -= c.partialBytes
	if c.shed {
		p.shed -= c.partialBytes
	}
	c.partial, c.partialBytes, c.partialSince, c.shed = false, 0, time.Time{}, false
	p.mu.Unlock()
}

// expired marks and returns the connections whose partial frame started
// before cut.
func (p *partialFrames) expired(cut time.Time) []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*conn
	for c := range p.conns {
		if !c.shed && c.partialSince.Before(cut) {
			c.shed = true
			p.shed += c.partialBytes
			out = append(out, c)
		}
	}
	return out
}

// held returns the bytes of partial frames held now.
func (p *partialFrames) held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}

// partial implements events.
func (s *Server) partial(c *conn, n int) {
	if n == 0 {
		s.partials.done(c)
	} else {
		s.partials.hold(c, n, false)
	}
}

// FrameSweep is how often the gateway looks for frames past the frame
// timeout ft: a quarter of it, at most a second. The bound it gives: a
// connection whose frame is not whole ft after the gateway read the
// frame's first byte is closed by the sweep that follows, at most ft +
// FrameSweep(ft) after that read, plus one wake of its event loop. The
// sweep has a goroutine and a timer of its own, so busy connections
// cannot hold it up. Time before the read (a connection waiting in the
// accept queue, its bytes in the kernel's buffers) costs the gateway
// nothing and is not counted.
func FrameSweep(ft time.Duration) time.Duration { return min(ft/4, time.Second) }

// runFrameTimeouts closes connections whose frame takes longer than
// FrameTimeout to arrive (a client that sends a byte now and then), every
// FrameSweep.
func (s *Server) runFrameTimeouts(ctx context.Context) {
	if s.opts.FrameTimeout <= 0 {
		return
	}
	tick := time.NewTicker(FrameSweep(s.opts.FrameTimeout))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, c := range s.partials.expired(now.Add(-s.opts.FrameTimeout)) {
				c.peer.abort(errFrameTimeout)
			}
		}
	}
}
