package client

// Following a gateway roll (Options.Follow): when the gateway a Conn is
// connected to stops, the Conn moves its work to a new connection to the
// same address, where the next gateway answers. See the package doc,
// "Gateway rolls".

import (
	"context"
	"fmt"
	"time"
)

// move is a Conn following its gateway from one link to the next.
type move struct {
	from  *link
	ready chan struct{} // closed once the new link took over, or the Conn ended
	quiet chan struct{} // cap 1: time to go (from is quiet, or the gateway stopped taking work)
}

// hookKey marks the ctx of Follow.OnMove; its value is the new link.
type hookKey struct{}

// ended handles the end of l's stream: the Conn ends with it, unless the
// Conn follows l's gateway elsewhere or has moved away from l.
func (c *Conn) ended(l *link, err error) {
	c.mu.Lock()
	delete(c.links, l)
	cur := c.cur == l
	told := l.told
	c.mu.Unlock()
	l.nc.Close()
	if !cur {
		return // moved away from, or a new link that failed during a move
	}
	if c.opts.Follow != nil && told {
		c.startMove(l, true)
		return
	}
	c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
}

// startMove notes that l's gateway is stopping and, if l is the Conn's
// link, starts following it elsewhere; urgent: the gateway takes no more
// work from l (or closed it), so do not wait for a quiet moment.
func (c *Conn) startMove(l *link, urgent bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.told = true
	if c.err != nil || c.cur != l {
		return
	}
	m := c.moving
	if m == nil {
		m = &move{from: l, ready: make(chan struct{}), quiet: make(chan struct{}, 1)}
		c.moving = m
		go c.runMove(m)
	}
	if urgent || l.waiting == 0 {
		poke(m.quiet)
	}
}

// runMove follows the gateway of m.from elsewhere: it waits for a quiet
// moment, dials a new link (retrying), runs OnMove on it and makes it the
// Conn's link; held Requests then go out on it. The old link is closed
// once no Request waits on it.
func (c *Conn) runMove(m *move) {
	defer close(m.ready)
	f := c.opts.Follow
	wait := f.Wait
	if wait <= 0 {
		wait = DefaultFollowWait
	}
	timer := time.NewTimer(wait)
	select {
	case <-m.quiet:
	case <-m.from.done:
	case <-timer.C:
	case <-c.done:
	}
	timer.Stop()
	// A quiet old connection has no more use: close it first, so that
	// the old gateway hands its close to the workers (the user's session
	// is unbound) before OnMove logs in again.
	c.mu.Lock()
	if m.from.waiting == 0 {
		m.from.nc.Close()
	}
	c.mu.Unlock()
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = DefaultFollowTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() { // the Conn's end ends the move
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	backoff := 20 * time.Millisecond
	for {
		l, err := c.newLinkFor(ctx)
		if err == nil {
			if c.swap(m, l) {
				return
			}
			err = ErrClosed
		}
		if c.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			c.fail(fmt.Errorf("%w: following the gateway to %s: %w", ErrClosed, c.addr, err))
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// newLinkFor dials a link for a move and runs OnMove on it.
func (c *Conn) newLinkFor(ctx context.Context) (*link, error) {
	nc, err := dialTCP(ctx, c.addr, c.opts.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.addr, err)
	}
	l := newLink(nc)
	if !c.start(l) {
		return nil, c.Err()
	}
	if hook := c.opts.Follow.OnMove; hook != nil {
		if err := hook(context.WithValue(ctx, hookKey{}, l), c); err != nil {
			c.mu.Lock()
			l.told = true // its end is not the Conn's
			c.mu.Unlock()
			l.nc.Close()
			return nil, fmt.Errorf("client: OnMove: %w", err)
		}
	}
	return l, nil
}

// swap makes l the Conn's link at the end of move m; false if the Conn
// has ended.
func (c *Conn) swap(m *move, l *link) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		l.nc.Close()
		return false
	}
	old := c.cur
	c.cur = l
	c.moving = nil
	old.told, old.drop = true, true
	if old.waiting == 0 {
		old.nc.Close()
	}
	again := l.told // the new gateway is stopping too
	c.mu.Unlock()
	c.moves.Add(1)
	if again {
		c.startMove(l, false)
	}
	return true
}
