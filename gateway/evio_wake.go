package gateway

import (
	"reflect"
	"syscall"
	"unsafe"

	"github.com/tidwall/evio"
)

// evio's Wake can be lost. Its loop (internal/internal_linux.go, Wait)
// runs the queued notes, then drains the loop's eventfd among the events
// epoll returned: a Wake made between the two queues its note and writes
// the eventfd, and the drain then eats that write. The note stays queued
// until the loop wakes for something else, at worst its 100 ms epoll
// timeout (measured: 1 request in flight, a 100 ms maximum in 3 runs of
// 4).
//
// The fix is a second wake signal nobody can eat: each loop gets an
// eventfd of ours, added to the loop's own epoll set edge-triggered
// (EPOLLET). Every write to it makes the loop's next epoll_wait return
// once, whether or not it is ever read (an edge per write), and the loop
// runs its queued notes first thing after every epoll_wait. So a Wake is
// its note, evio's eventfd write (which may be eaten) and a write to
// ours (which cannot be). evio hands our fd to its accept path, which
// finds no listener with that fd and does nothing.
//
// evio_test.go pins the fields read here (conn.loop, loop.poll, poll.fd).

// loopWaker is one evio loop's extra wake signal.
type loopWaker struct {
	fd int // eventfd in the loop's epoll set, edge-triggered
}

// poke makes the loop's epoll_wait return and run its notes.
func (w *loopWaker) poke() {
	var one uint64 = 1
	_, _ = syscall.Write(w.fd, (*(*[8]byte)(unsafe.Pointer(&one)))[:])
}

// loopWaker returns the waker of c's loop, making it on the loop's first
// connection. Loop goroutine (Opened) only. nil if the eventfd could not
// be made; Wake alone then does (its loss is rare and costs 100 ms).
func (t *evioTransport) loopWaker(c evio.Conn) *loopWaker {
	loop := reflect.ValueOf(c).Elem().FieldByName("loop")
	t.mu.Lock()
	defer t.mu.Unlock()
	if w, ok := t.wakers[loop.Pointer()]; ok {
		return w
	}
	epfd := int(loop.Elem().FieldByName("poll").Elem().FieldByName("fd").Int())
	r, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		t.log.Error("no eventfd for the event loop's wakes; a lost evio wake delays output up to 100 ms", "err", e)
		t.wakers[loop.Pointer()] = nil
		return nil
	}
	fd := int(r)
	ev := syscall.EpollEvent{Fd: int32(fd), Events: syscall.EPOLLIN | (syscall.EPOLLET & 0xffffffff)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		_ = syscall.Close(fd)
		t.log.Error("event loop's wake fd not watched; a lost evio wake delays output up to 100 ms", "err", err)
		t.wakers[loop.Pointer()] = nil
		return nil
	}
	w := &loopWaker{fd: fd}
	t.wakers[loop.Pointer()] = w
	return w
}

// closeWakers closes the wakers once evio.Serve has returned: every
// connection is closed (Closed set its shutdown), so none wakes again.
func (t *evioTransport) closeWakers() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, w := range t.wakers {
		if w != nil {
			_ = syscall.Close(w.fd)
		}
		delete(t.wakers, k)
	}
}

// wakeLocked makes p's loop call wake (Data(c, nil)) soon. p.mu held, so
// a connection that is shut down (Closed ran) is never woken, and the
// waker is never written after closeWakers.
func (p *evioPeer) wakeLocked() {
	if p.shutdown {
		return
	}
	p.c.Wake()
	if p.waker != nil {
		p.waker.poke()
	}
	if p.t.wakes != nil {
		p.t.wakes.Add(1)
	}
}
