package bench

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/stages"
	"github.com/maple-farm/maple/internal/wsframe"
)

// sent is what a connection remembers of a request in flight.
type sent struct {
	at       time.Duration // offset of the write
	measured bool          // written during the measured window
}

// conn is one connection: write owns sn and the write buffer, read owns the
// histogram and windowOK; inflight and done are shared under mu. The
// counters are atomic so Run can report progress while they move.
type conn struct {
	id    int
	nc    net.Conn
	next  func() (box.Box, error) // the next reply (box.Reader's, or a WebSocket message's)
	w     io.Writer               // nc, or shared with the pongs of a WebSocket
	ws    bool                    // each request is a WebSocket message
	limit int                     // requests to send; 0: no limit
	run   *run
	depth int
	cmd   int32
	echo  bool
	grace time.Duration
	tmpl  []byte // the body pattern; its first 8 bytes are stamped per request

	credits chan struct{} // one per free in-flight slot
	dead    chan struct{} // closed when the connection is closed
	deadOne sync.Once
	closing atomic.Bool // closed by Run: later I/O errors are not ConnErrors
	broken  atomic.Bool // failed by itself: counted once in ConnErrors

	mu       sync.Mutex
	inflight map[uint32]sent
	done     bool // the writer has stopped

	sent, answered, busy, failed, mismatches, pushes, duplicates atomic.Int64
	maxSent                                                      atomic.Uint32 // highest sn written

	// Reader-owned.
	hist     histogram
	windowOK int64
}

func newConn(id int, nc net.Conn, next func() (box.Box, error), w io.Writer, o Options) *conn {
	c := &conn{
		id: id, nc: nc, next: next, w: w, ws: o.WS, limit: o.Requests,
		depth: o.Depth, cmd: o.Cmd, echo: o.Cmd == DefaultCmd, grace: o.Grace,
		tmpl:     make([]byte, o.Size),
		credits:  make(chan struct{}, o.Depth),
		dead:     make(chan struct{}),
		inflight: make(map[uint32]sent, o.Depth),
	}
	for i := range c.tmpl {
		c.tmpl[i] = byte('a' + (id+i)%26)
	}
	for range o.Depth {
		c.credits <- struct{}{}
	}
	return c
}

// close closes the connection on Run's behalf.
func (c *conn) close() {
	c.closing.Store(true)
	c.shut()
}

func (c *conn) shut() {
	c.deadOne.Do(func() {
		close(c.dead)
		c.nc.Close()
	})
}

// fail records that the connection broke by itself, then closes it.
func (c *conn) fail() {
	if !c.closing.Load() {
		c.broken.Store(true)
	}
	c.shut()
}

// stamp writes the per-request part of a body: sn and connection id, so a
// reply that went to the wrong request or connection does not match.
func (c *conn) stamp(body []byte, sn uint32) {
	var s [8]byte
	binary.BigEndian.PutUint32(s[0:4], sn)
	binary.BigEndian.PutUint32(s[4:8], uint32(c.id))
	copy(body, s[:])
}

func (c *conn) bodyOK(got []byte, sn uint32) bool {
	if len(got) != len(c.tmpl) {
		return false
	}
	var s [8]byte
	binary.BigEndian.PutUint32(s[0:4], sn)
	binary.BigEndian.PutUint32(s[4:8], uint32(c.id))
	n := min(8, len(got))
	return string(got[:n]) == string(s[:n]) && string(got[n:]) == string(c.tmpl[n:])
}

// write keeps the pipeline full: it waits for a free slot, takes every
// other free slot that is waiting, and writes that many frames at once.
func (c *conn) write() {
	defer func() {
		c.mu.Lock()
		c.done = true
		empty := len(c.inflight) == 0
		c.mu.Unlock()
		if empty {
			c.nc.SetReadDeadline(time.Now()) // nothing to wait for: wake the reader
		} else {
			c.nc.SetReadDeadline(time.Now().Add(c.grace))
		}
	}()
	var (
		sn    uint32
		sns   = make([]uint32, 0, c.depth)
		buf   = make([]byte, 0, c.depth*(wsframe.MaxHeaderLen+box.HeaderLen+len(c.tmpl)))
		body  = make([]byte, len(c.tmpl))
		frame []byte
		total int // requests sent
	)
	copy(body, c.tmpl)
	for {
		if c.limit > 0 && total >= c.limit {
			// Done: stay open, idle, until the window ends.
			select {
			case <-c.run.stopSend:
			case <-c.dead:
			}
			return
		}
		select {
		case <-c.run.stopSend:
			return
		case <-c.dead:
			return
		case <-c.credits:
		}
		n := 1
	gather:
		for n < c.depth && (c.limit == 0 || total+n < c.limit) {
			select {
			case <-c.credits:
				n++
			default:
				break gather
			}
		}
		buf, sns = buf[:0], sns[:0]
		for range n {
			sn++
			if sn == 0 { // sn 0 marks pushes
				sn++
			}
			sns = append(sns, sn)
			c.maxSent.Store(sn)
			c.stamp(body, sn)
			if c.ws {
				frame = box.Append(frame[:0], c.cmd, 0, sn, body)
				buf = appendMasked(buf, frame)
			} else {
				buf = box.Append(buf, c.cmd, 0, sn, body)
			}
		}
		total += n
		at := c.run.now()
		if at >= c.run.end {
			return
		}
		s := sent{at: at, measured: at >= c.run.warmEnd}
		c.mu.Lock()
		for _, sn := range sns {
			c.inflight[sn] = s
		}
		c.mu.Unlock()
		c.sent.Add(int64(n))
		stages.Mark("bench.send")
		if _, err := c.w.Write(buf); err != nil {
			c.fail()
			return
		}
	}
}

// read checks every reply until the writer has stopped and nothing is in
// flight, the grace deadline passes, or the connection breaks.
func (c *conn) read() {
	for {
		b, err := c.next()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.mu.Lock()
				done := c.done
				c.mu.Unlock()
				if done {
					// Either all answered, or the grace is over: what is
					// left in flight is Unanswered.
					c.shut()
					return
				}
			}
			c.fail()
			return
		}
		stages.Mark("bench.recv")
		at := c.run.now()
		if b.SN == 0 {
			c.pushes.Add(1)
			continue
		}
		c.mu.Lock()
		s, ok := c.inflight[b.SN]
		if ok {
			delete(c.inflight, b.SN)
		}
		finished := c.done && len(c.inflight) == 0
		c.mu.Unlock()
		if !ok {
			if b.SN <= c.maxSent.Load() {
				c.duplicates.Add(1) // answered before
			} else {
				c.mismatches.Add(1)
			}
			continue
		}
		select {
		case c.credits <- struct{}{}:
		default:
		}
		c.answered.Add(1)
		c.run.stalls.answered(s.at, at)
		switch {
		case b.Cmd != c.cmd:
			c.mismatches.Add(1)
		case b.Ret == box.RetBusy:
			c.busy.Add(1)
		case b.Ret != box.RetOK:
			c.failed.Add(1)
		case c.echo && !c.bodyOK(b.Body, b.SN):
			c.mismatches.Add(1)
		default:
			if s.measured {
				c.hist.record(at - s.at)
			}
			if at >= c.run.warmEnd && at < c.run.end {
				c.windowOK++
			}
		}
		if finished {
			c.shut()
			return
		}
	}
}
