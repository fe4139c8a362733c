package gateway

import (
	"syscall"
)

// Direct writes. A reply used to go outbound goroutine -> Wake -> the
// connection's loop -> socket: a thread wake-up and an eventfd write per
// connection per take, and a Wake that evio could lose (evio_wake.go).
// Now send writes to the socket itself when nothing is queued for the
// connection anywhere (no Wake on its way, nothing pending, nothing unsent
// in evio, not closing); only what the socket does not take goes the old
// way, behind a Wake.
//
// It writes to a dup of the socket, never to evio's fd: evio closes its fd
// on its loop goroutine (EOF, a write error) before it tells us (Closed),
// and any socket, pipe or Redis connection the process opens in between
// gets that fd number; a write to it from another goroutine would go to
// the wrong file. Our dup is closed only by us, under p.mu, so a send
// holding p.mu writes to this connection's socket or not at all. (The dup
// keeps the socket open until Closed closes it too, right after evio's
// close: the client sees the end at the same moment as before.)
//
// A dup costs a file descriptor, so connections get one only while they
// receive (made on the loop goroutine, in wake, where evio's fd is sure to
// be this connection's), at most dupBudget at a time, and the sweep takes
// it back from a connection that got nothing for dupIdle. Past the budget
// a connection's output goes through Wake, as before.

// dupIdleSweeps is how many sweeps (about a second each) a connection
// keeps its dup without sending anything.
const dupIdleSweeps = 30

// dupBudget is how many dups the gateway holds at most: an eighth of the
// process's file limit, so that accept keeps nearly all of it.
func dupBudget() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 128
	}
	return int64(min(rl.Cur, 1<<30) / 8)
}

// takeDupLocked gives p a dup of its socket if the budget allows. Loop
// goroutine only (evio's fd is then surely p's socket), p.mu held.
func (p *evioPeer) takeDupLocked() {
	t := p.t
	if p.wfd >= 0 || p.shutdown || p.kill != nil || !p.closing.IsZero() {
		return
	}
	if t.dups.Add(1) > t.dupMax {
		t.dups.Add(-1)
		return
	}
	fd, err := dupCloexec(p.fd)
	if err != nil {
		t.dups.Add(-1)
		return
	}
	p.wfd = fd
	p.idleSweeps = 0
}

// dropDupLocked closes p's dup. p.mu held.
func (p *evioPeer) dropDupLocked() {
	if p.wfd < 0 {
		return
	}
	_ = syscall.Close(p.wfd)
	p.wfd = -1
	p.t.dups.Add(-1)
}

// directLocked reports whether send may write to the socket itself: p
// has a dup, and no output of p is anywhere else (pending here, on its
// way in a Wake, unsent in evio), so bytes cannot overtake older ones.
// p.mu held.
func (p *evioPeer) directLocked() bool {
	return p.wfd >= 0 && !p.woken && len(p.pending) == 0 && p.unsent == 0 && p.closing.IsZero()
}

func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
