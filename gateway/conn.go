package gateway

import "sync/atomic"

// conn is the core's state of one client connection.
type conn struct {
	id   string // farm-wide unique: "<gateway id>-<n>"
	addr string
	part int // the partition all its events go to
	peer peer

	// Loop goroutine only.
	seq uint64 // last envelope sequence number given out
	in  []byte // bytes of a frame not complete yet

	uid  atomic.Pointer[string] // set by the outbound reader on login
	owed atomic.Int64           // frames queued and not answered yet
}

func (c *conn) userID() string {
	if p := c.uid.Load(); p != nil {
		return *p
	}
	return ""
}
