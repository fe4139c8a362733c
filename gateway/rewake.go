package gateway

import (
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/evio"
)

// evio's Wake can be lost. Its loop (internal/internal_linux.go, Wait)
// runs the queued notes, then drains the loop's eventfd among the events
// epoll returned: a Wake made between the two queues its note and writes
// the eventfd, and the drain then eats that write. The note stays queued
// until the loop wakes for something else, at worst its 100 ms epoll
// timeout: on a quiet connection a reply then takes 100 ms more (measured:
// 1 request in flight, a 100 ms maximum in 3 runs of 4).
//
// So every Wake is watched: if its note is still not handled rewakeAfter
// later and the connection's loop did nothing meanwhile (its progress
// counter stood still: it sleeps in epoll with the note queued), the
// connection is woken again. A loop that is merely busy makes progress
// and is left alone, so a loaded gateway pays only the bookkeeping.

// rewakeAfter is how long a Wake may go unhandled by an idle loop.
const rewakeAfter = time.Millisecond

// rewaker holds the Wakes to check.
type rewaker struct {
	mu    sync.Mutex
	list  []pendingWake
	armed bool          // a check is scheduled
	count *atomic.Int64 // Stats.Rewakes
}

type pendingWake struct {
	p        *evioPeer
	seq      uint64 // the peer's wakeSeq when it was woken
	progress uint64 // its loop's progress then
}

// startWakeLocked marks p woken and returns the Wake's sequence number,
// or 0 if a Wake is on its way already. p.mu held.
func (p *evioPeer) startWakeLocked() uint64 {
	if p.woken {
		return 0
	}
	p.woken = true
	p.wakeSeq++
	return p.wakeSeq
}

// wakeUp wakes p's loop and watches the Wake.
func (t *evioTransport) wakeUp(p *evioPeer, seq uint64) {
	progress := p.progress.Load()
	p.c.Wake()
	t.watch(pendingWake{p, seq, progress})
}

func (t *evioTransport) watch(w pendingWake) {
	r := &t.rewake
	r.mu.Lock()
	r.list = append(r.list, w)
	arm := !r.armed
	r.armed = true
	r.mu.Unlock()
	if arm {
		time.AfterFunc(rewakeAfter, t.checkWakes)
	}
}

// checkWakes wakes again the connections whose Wake an idle loop did not
// handle, and keeps watching those whose loop is busy.
func (t *evioTransport) checkWakes() {
	r := &t.rewake
	r.mu.Lock()
	list := r.list
	r.list, r.armed = nil, false
	r.mu.Unlock()
	for _, w := range list {
		p := w.p
		p.mu.Lock()
		pending := p.woken && p.wakeSeq == w.seq && !p.shutdown
		p.mu.Unlock()
		if !pending {
			continue // handled, or a newer Wake is watched
		}
		now := p.progress.Load()
		if now == w.progress {
			if r.count != nil {
				r.count.Add(1)
			}
			p.c.Wake()
		}
		t.watch(pendingWake{p, w.seq, now})
	}
}

// loopProgress returns the progress counter of c's evio loop (its
// unexported field loop; evio_test.go pins it), shared by the loop's
// connections. Loop goroutine (Opened) only.
func (t *evioTransport) loopProgress(c evio.Conn) *atomic.Uint64 {
	loop := reflect.ValueOf(c).Elem().FieldByName("loop").Pointer()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.progress == nil {
		t.progress = make(map[uintptr]*atomic.Uint64)
	}
	pc := t.progress[loop]
	if pc == nil {
		pc = new(atomic.Uint64)
		t.progress[loop] = pc
	}
	return pc
}
