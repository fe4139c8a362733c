package gateway

import (
	"sync/atomic"
	"time"
)

// conn is the core's state of one client connection.
type conn struct {
	id   string // farm-wide unique: "<gateway id>-<n>"
	addr string
	ip   string // addr without the port, for MaxConnsPerIP
	part int    // the partition all its events go to
	peer peer

	// Loop goroutine only.
	seq uint64 // last envelope sequence number given out
	in  inBuf  // bytes of a frame not complete yet

	uid  atomic.Pointer[string] // set by the outbound reader on login
	owed atomic.Int64           // frames queued and not answered yet (drops after the answer is handed to the transport)
	// stopped: a draining gateway takes no more frames from this
	// connection; they are answered box.RetMoved (drain.go, admit).
	stopped atomic.Bool
	// inflight is owed, but dropping just before the answer is handed to
	// the transport: a client that got its answer and sends the next frame
	// finds its place free (MaxInflight).
	inflight atomic.Int64

	// Partial frame accounting (limits.go). partial: event goroutine
	// only; the rest under partialFrames.mu.
	partial      bool
	partialSince time.Time // when the frame in c.in started arriving
	partialBytes int       // bytes of c.in counted in the budget
	shed         bool      // already told to close for the budget
}

// queued counts a frame of c queued for the workers; admit (drain.go)
// counted it in owed already.
func (c *conn) queued() {
	c.inflight.Add(1)
}

func (c *conn) userID() string {
	if p := c.uid.Load(); p != nil {
		return *p
	}
	return ""
}
