package gateway

import (
	"syscall"

	"github.com/maple-farm/maple/box"
)

// inBuf holds the unparsed tail of a connection's input: part of a frame,
// until the rest arrives. Event goroutine only.
//
// A frame of at least mapMin bytes is gathered in memory mapped for it
// alone (anonymous mmap of its packet_len): the pages become resident
// only as its bytes arrive, and go back to the system the moment the
// frame is whole or its connection ends. On the Go heap, the buffers of
// clients that send most of a large frame and stop would be garbage only
// when the collector runs, and at GOGC=400 the heap may grow to five times
// what partial frames hold before it does: a flood of half-sent frames
// would then cost the gateway several times --partial-budget.
type inBuf struct {
	b      []byte // the bytes held; in mapped, if set
	mapped []byte // the mapping of the frame being gathered
}

// mapMin is the smallest frame gathered in its own mapping; smaller ones
// are cheap on the heap.
const mapMin = 64 << 10

// add appends bytes just read behind what is held (the rest of the frame
// and maybe more frames, all parsed right away).
func (ib *inBuf) add(p []byte) {
	if ib.mapped == nil || len(ib.b)+len(p) <= cap(ib.b) {
		ib.b = append(ib.b, p...)
		return
	}
	// Past the frame: gather on the heap for the parse that follows.
	nb := make([]byte, 0, len(ib.b)+len(p))
	nb = append(append(nb, ib.b...), p...)
	ib.release()
	ib.b = nb
}

// keep makes tail, the start of a frame not yet whole, what is held.
// tail may alias what was held before.
func (ib *inBuf) keep(tail []byte) {
	n, _ := box.PacketLen(tail)
	ib.keepSized(tail, n)
}

// keepSized is keep for a frame of size bytes in all (0: not known yet).
func (ib *inBuf) keepSized(tail []byte, size int) {
	old := ib.mapped
	ib.mapped = nil
	if n := size; n >= mapMin && n >= len(tail) {
		if m, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON); err == nil {
			ib.b, ib.mapped = append(m[:0], tail...), m
			unmap(old)
			return
		}
	}
	if old != nil || cap(ib.b) < len(tail) {
		ib.b = make([]byte, 0, max(len(tail), 512))
	}
	ib.b = append(ib.b[:0], tail...) // copy handles the overlap of a suffix
	unmap(old)
}

// reset forgets what is held, keeping a small heap buffer for the next
// partial frame.
func (ib *inBuf) reset() {
	if ib.mapped != nil {
		ib.release()
		return
	}
	ib.b = ib.b[:0]
	if cap(ib.b) > 64<<10 {
		ib.b = nil
	}
}

// release returns the mapping, if any, and forgets what is held.
func (ib *inBuf) release() {
	unmap(ib.mapped)
	ib.b, ib.mapped = nil, nil
}

// held is what the buffer costs: the bytes received, for a mapping (its
// other pages are not resident), the capacity for the heap.
func (ib *inBuf) held() int {
	if ib.mapped != nil {
		return len(ib.b)
	}
	return cap(ib.b)
}

func unmap(m []byte) {
	if m != nil {
		_ = syscall.Munmap(m)
	}
}
