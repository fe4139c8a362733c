package worker

import (
	"context"
	"slices"
	"sync"
)

// partitionTable is the list of partitions this worker leases. The lease
// keeper alone adds, gives back and drops them; the reader, the timers,
// the janitor and the outbox read it through the methods below, which
// take the table's own lock and nothing else.
//
// A partition being given back (releasing) is not read any more, and its
// release waits for the reads of it in progress: what they return is
// delivered to this worker and only it can serve it (the next owner claims
// pending entries once, when it takes the partition).
type partitionTable struct {
	mu    sync.Mutex
	parts map[int]*lease
}

// lease is one leased partition.
type lease struct {
	opening bool // taken over, its pending entries not yet admitted: not read
	// interim: read on its own (reader.readInterim) until the reader's
	// main loop adopts it (adopt): no interim read starts after that, and
	// the main loop waits for the one in progress (interimReading;
	// interimDone is closed when it ends).
	interim, interimReading, adopting bool
	interimDone                       chan struct{}
	releasing                         bool
	reading                           int           // reads of it in progress
	readsDone                         chan struct{} // made by a release waiting for reading to be 0
}

func newPartitionTable() *partitionTable {
	return &partitionTable{parts: make(map[int]*lease)}
}

// active lists the partitions leased, open and not being given back.
func (t *partitionTable) active() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, 0, len(t.parts))
	for p, l := range t.parts {
		if !l.releasing && !l.opening {
			out = append(out, p)
		}
	}
	slices.Sort(out) // in order, so that the main read's arguments stay the same (queue.InboundReads)
	return out
}

// activeCount counts the partitions active lists.
func (t *partitionTable) activeCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range t.parts {
		if !l.releasing {
			n++
		}
	}
	return n
}

// held lists every partition leased, given back or not.
func (t *partitionTable) held() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, 0, len(t.parts))
	for p := range t.parts {
		out = append(out, p)
	}
	return out
}

// holds reports whether partition p is leased.
func (t *partitionTable) holds(p int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.parts[p] != nil
}

// notHeld returns those of parts that are no longer leased (nil, most of
// the time): a lease lost while they were read.
func (t *partitionTable) notHeld(parts []int) []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var lost []int
	for _, p := range parts {
		if t.parts[p] == nil {
			lost = append(lost, p)
		}
	}
	return lost
}

// startRead marks those of want that are leased and not being given back
// as read, in one step, and returns them: a release that starts now waits
// for done, so nothing the read returns is left pending under this worker
// after the partition changed hands. done must be called once the read's
// entries are admitted (or the read failed).
func (t *partitionTable) startRead(want []int) (parts []int, done func()) {
	t.mu.Lock()
	reading := make([]*lease, 0, len(want))
	parts = want[:0:0]
	for _, p := range want {
		if l := t.parts[p]; l != nil && !l.releasing && !l.opening {
			if l.interim {
				if l.interimReading {
					continue // read by reader.interim this time
				}
				l.interim = false // adopted: no interim read starts any more
			}
			l.reading++
			reading = append(reading, l)
			parts = append(parts, p)
		}
	}
	t.mu.Unlock()
	return parts, func() {
		t.mu.Lock()
		for _, l := range reading {
			l.reading--
			if l.reading == 0 && l.readsDone != nil {
				close(l.readsDone)
				l.readsDone = nil
			}
		}
		t.mu.Unlock()
	}
}

// add lists partition p as leased (the lease keeper, once it took p over).
func (t *partitionTable) add(p int) *lease {
	l := &lease{}
	t.mu.Lock()
	t.parts[p] = l
	t.mu.Unlock()
	return l
}

// addOpening lists partition p as leased but not to be read yet: its
// pending entries are being taken over (open ends that).
func (t *partitionTable) addOpening(p int) *lease {
	l := &lease{opening: true}
	t.mu.Lock()
	t.parts[p] = l
	t.mu.Unlock()
	return l
}

// open lets partition p's lease l be read; with interim, first by
// reads of its own (startInterim) until the main reads adopt it.
func (t *partitionTable) open(l *lease, interim bool) {
	t.mu.Lock()
	l.opening = false
	l.interim = interim
	t.mu.Unlock()
}

// adopt takes the partitions of want that are read by interim reads
// into the main reads: no interim read of them starts any more. If one
// is in progress, it returns a channel closed when one of them ends (call
// again until it returns nil); the main read must wait for them all, or
// it would overtake what they return.
func (t *partitionTable) adopt(want []int) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait chan struct{}
	for _, p := range want {
		l := t.parts[p]
		if l == nil || !l.interim {
			continue
		}
		if !l.interimReading {
			l.interim = false
			continue
		}
		l.adopting = true
		if l.interimDone == nil {
			l.interimDone = make(chan struct{})
		}
		wait = l.interimDone
	}
	return wait
}

// startInterim starts an interim read of partition p's lease l, unless
// the main reads adopted it or it is no longer read (false). done must
// be called once the read's entries are admitted.
func (t *partitionTable) startInterim(p int, l *lease) (ok bool, done func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.parts[p] != l || !l.interim || l.adopting || l.releasing {
		l.interim = false
		return false, nil
	}
	l.interimReading = true
	l.reading++
	return true, func() {
		t.mu.Lock()
		l.interimReading = false
		if l.adopting {
			l.interim = false
		}
		if l.interimDone != nil {
			close(l.interimDone)
			l.interimDone = nil
		}
		l.reading--
		if l.reading == 0 && l.readsDone != nil {
			close(l.readsDone)
			l.readsDone = nil
		}
		t.mu.Unlock()
	}
}

// remove drops partition p if it is still the lease l (nil: whichever).
func (t *partitionTable) remove(p int, l *lease) {
	t.mu.Lock()
	if cur := t.parts[p]; cur != nil && (l == nil || cur == l) {
		delete(t.parts, p)
	}
	t.mu.Unlock()
}

// giveBack marks partition p as being given back: it is read no more.
// It returns p's lease, or nil if p is not leased or already going back.
func (t *partitionTable) giveBack(p int) *lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.parts[p]
	if l == nil || l.releasing {
		return nil
	}
	l.releasing = true
	return l
}

// waitReads returns once no read of l is in progress (true), or when ctx
// ends (false). l must be being given back, so no new read starts.
func (t *partitionTable) waitReads(ctx context.Context, l *lease) bool {
	t.mu.Lock()
	if l.reading == 0 {
		t.mu.Unlock()
		return true
	}
	if l.readsDone == nil {
		l.readsDone = make(chan struct{})
	}
	ch := l.readsDone
	t.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}
