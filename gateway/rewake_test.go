package gateway

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/evio"
)

// lostWakeConn is an evio.Conn whose wakes are never handled, as when
// evio's loop drains its eventfd over a Wake made at the wrong moment.
type lostWakeConn struct {
	evio.Conn
	wakes atomic.Int64
}

func (c *lostWakeConn) Wake() { c.wakes.Add(1) }

// TestLostWakeIsMadeAgain: a Wake that an idle loop does not handle is
// made again about rewakeAfter later, until it is handled; a Wake that a
// busy loop has not reached yet is not doubled.
func TestLostWakeIsMadeAgain(t *testing.T) {
	var count atomic.Int64
	tr := &evioTransport{}
	tr.rewake.count = &count
	c := &lostWakeConn{}
	p := &evioPeer{t: tr, c: c, progress: new(atomic.Uint64)}

	p.mu.Lock()
	seq := p.startWakeLocked()
	p.mu.Unlock()
	tr.wakeUp(p, seq)
	waitFor(t, time.Second, "the lost Wake made again", func() bool { return c.wakes.Load() >= 3 })
	if count.Load() == 0 {
		t.Error("Stats.Rewakes not counted")
	}
	// The loop handles it: no more wakes.
	p.mu.Lock()
	p.woken = false
	p.mu.Unlock()
	time.Sleep(5 * rewakeAfter)
	n := c.wakes.Load()
	time.Sleep(10 * rewakeAfter)
	if c.wakes.Load() != n {
		t.Errorf("wakes went on after the Wake was handled: %d -> %d", n, c.wakes.Load())
	}

	// A busy loop (its progress moves) is left alone, however long.
	p.mu.Lock()
	seq = p.startWakeLocked()
	p.mu.Unlock()
	before := c.wakes.Load()
	tr.wakeUp(p, seq)
	for end := time.Now().Add(20 * rewakeAfter); time.Now().Before(end); {
		p.progress.Add(1) // the loop handles other connections' events
		runtime.Gosched()
	}
	if got := c.wakes.Load() - before; got != 1 {
		t.Errorf("%d wakes while the loop was busy, want the 1 made", got)
	}
	p.mu.Lock()
	p.woken = false
	p.mu.Unlock()
}
