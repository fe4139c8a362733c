// Package client is the Go client of the maple wire protocol (PROTOCOL.md
// section 1): bots, tests, `maple client` and `maple bench` use it to talk to
// a gateway.
//
// A Conn is one TCP connection. Request sends a frame under the next
// sequence number (sn) and waits for the reply that echoes it; any number of
// goroutines may call Request at once, so requests are pipelined on the one
// connection and replies may come back in any order. Frames that answer no
// waiting Request (pushes, which carry sn 0, and late replies) go to
// Pushes.
//
// One goroutine per Conn reads frames. It never blocks on the caller: when
// the Pushes channel is full it drops the oldest push (counted by
// DroppedPushes), because a reader that stalled on pushes would also stall
// every reply behind them.
//
//	c, err := client.Dial(ctx, "127.0.0.1:28000", client.Options{})
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	reply, err := c.Request(ctx, 1, []byte("hi")) // the demo game's echo
package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/box"
)

// Defaults for the zero fields of Options.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultPushBuffer  = 1024
)

// ErrClosed is the error of a Conn that has ended. Close ends it with
// ErrClosed itself; any other end (the server hung up, a bad frame, a failed
// write) wraps both ErrClosed and the cause, as in
// "client: connection closed: EOF".
var ErrClosed = errors.New("client: connection closed")

// Options configure Dial. The zero value is ready to use.
type Options struct {
	// MaxFrame is the largest packet_len accepted from the server; a bigger
	// frame ends the connection with box.ErrTooLarge. 0 means
	// box.DefaultMaxFrame.
	MaxFrame int
	// DialTimeout bounds the TCP dial (ctx may end it sooner). 0 means
	// DefaultDialTimeout; negative means no timeout but ctx.
	DialTimeout time.Duration
	// PushBuffer is the capacity of the Pushes channel. 0 means
	// DefaultPushBuffer.
	PushBuffer int
}

// withDefaults fills the zero fields of a copy of o.
func (o Options) withDefaults() Options {
	if o.MaxFrame <= 0 {
		o.MaxFrame = box.DefaultMaxFrame
	}
	switch {
	case o.DialTimeout == 0:
		o.DialTimeout = DefaultDialTimeout
	case o.DialTimeout < 0:
		o.DialTimeout = 0 // net.Dialer: no timeout
	}
	if o.PushBuffer <= 0 {
		o.PushBuffer = DefaultPushBuffer
	}
	return o
}

// Conn is a client connection to a gateway. Its methods are safe for
// concurrent use.
type Conn struct {
	nc         net.Conn
	pushes     chan box.Box  // sent to by the reader only; never closed
	done       chan struct{} // closed once, by end
	readerDone chan struct{}
	dropped    atomic.Uint64

	mu      sync.Mutex // guards the fields below
	sn      uint32     // last sn handed out
	pending map[uint32]chan box.Box
	err     error // why the connection ended; nil while it is up

	wmu  sync.Mutex // serializes writes; guards the fields below
	wbuf []byte
	wdl  time.Time // write deadline now set on nc
}

// Dial connects to the gateway at addr (host:port) and starts the reader.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	opts = opts.withDefaults()
	d := net.Dialer{Timeout: opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c := &Conn{
		nc:         nc,
		pushes:     make(chan box.Box, opts.PushBuffer),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		pending:    make(map[uint32]chan box.Box),
	}
	go c.read(box.NewReader(nc, opts.MaxFrame))
	return c, nil
}

// Request sends a frame with cmd, body and the next sn, and waits for the
// server's reply with that sn. The sn counts up from 1 and skips 0 (the
// push sn) when it wraps. The reply's Ret is returned as is: a non-zero
// result code is not an error here.
//
// If ctx ends first, Request returns ctx.Err(); a reply that comes later
// goes to Pushes. A ctx deadline also bounds the write; a write that fails
// after part of the frame went out ends the connection, since the stream
// cannot be resynced. If the connection ends, Request returns an error
// wrapping ErrClosed and the cause.
func (c *Conn) Request(ctx context.Context, cmd int32, body []byte) (box.Box, error) {
	ch := make(chan box.Box, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return box.Box{}, err
	}
	for {
		c.sn++
		if _, busy := c.pending[c.sn]; c.sn != 0 && !busy {
			break
		}
	}
	sn := c.sn
	c.pending[sn] = ch
	c.mu.Unlock()

	if err := c.write(ctx, cmd, sn, body); err != nil {
		c.forget(sn)
		return box.Box{}, err
	}
	select {
	case b := <-ch:
		return b, nil
	case <-ctx.Done():
		c.forget(sn)
		select {
		case b := <-ch: // the reader handed it over before forget
			return b, nil
		default:
			return box.Box{}, ctx.Err()
		}
	case <-c.done:
		select {
		case b := <-ch: // the reply won the race with the end
			return b, nil
		default:
			return box.Box{}, c.Err()
		}
	}
}

// Send writes one frame with the given sn and does not wait for anything.
// It is for callers that track sequence numbers themselves, such as
// benchmarks: replies to sn that no Request waits for arrive on Pushes.
// Mixing Send and Request on one Conn is allowed, but Send should then use
// sn that Request will not pick (Request takes 1, 2, 3, ...).
func (c *Conn) Send(cmd int32, sn uint32, body []byte) error {
	if err := c.Err(); err != nil {
		return err
	}
	return c.write(context.Background(), cmd, sn, body)
}

// write sends one frame. Writes are serialized so that frames never
// interleave on the wire.
func (c *Conn) write(ctx context.Context, cmd int32, sn uint32, body []byte) error {
	if uint64(len(body)) > math.MaxUint32-box.HeaderLen {
		return fmt.Errorf("client: body of %d bytes does not fit a frame", len(body))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := ctx.Err(); err != nil {
		return err // possibly waited on wmu: do not write a frame nobody waits for
	}
	if dl, _ := ctx.Deadline(); !dl.Equal(c.wdl) {
		if err := c.nc.SetWriteDeadline(dl); err != nil {
			return c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
		}
		c.wdl = dl
	}
	c.wbuf = box.Append(c.wbuf[:0], cmd, box.RetOK, sn, body)
	if n, err := c.nc.Write(c.wbuf); err != nil {
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline is ctx's, and nothing went out: the stream is
			// still whole, so the connection lives on.
			return context.DeadlineExceeded
		}
		err = c.fail(fmt.Errorf("%w: write: %w", ErrClosed, err))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if cap(c.wbuf) > 64<<10 {
		c.wbuf = nil // do not keep one big body's buffer for good
	}
	return nil
}

// forget drops the waiter for sn, after which its reply goes to Pushes.
func (c *Conn) forget(sn uint32) {
	c.mu.Lock()
	delete(c.pending, sn)
	c.mu.Unlock()
}

// read is the reader goroutine: it hands each frame to the Request waiting
// for its sn, or to Pushes, until the connection ends.
func (c *Conn) read(r *box.Reader) {
	defer close(c.readerDone)
	for {
		b, err := r.Next()
		if err != nil {
			c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
			return
		}
		if b.SN != 0 {
			c.mu.Lock()
			ch, ok := c.pending[b.SN]
			delete(c.pending, b.SN)
			c.mu.Unlock()
			if ok {
				ch <- b // buffered, and only one reply per waiter
				continue
			}
		}
		c.push(b)
	}
}

// push queues b on Pushes, dropping the oldest push if it is full.
func (c *Conn) push(b box.Box) {
	for {
		select {
		case c.pushes <- b:
			return
		default:
		}
		select {
		case <-c.pushes:
			c.dropped.Add(1)
		default: // a consumer made room meanwhile
		}
	}
}

// end records why the connection ended and wakes everyone waiting on it.
// Only the first call counts; it reports whether this call was it.
func (c *Conn) end(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	c.err = err
	c.pending = nil
	close(c.done)
	return true
}

// fail ends the connection with err and returns the error it ended with,
// which is err unless it had already ended.
func (c *Conn) fail(err error) error {
	if c.end(err) {
		c.nc.Close()
	}
	return c.Err()
}

// Pushes returns the frames that answer no waiting Request: pushes (sn 0)
// and replies whose Request has given up or that were written with Send.
// When it is full the oldest frame is dropped. The channel is never closed,
// so that a select on it and on Done cannot spin on a closed channel: watch
// Done for the end. Frames already in it can still be received after that.
func (c *Conn) Pushes() <-chan box.Box { return c.pushes }

// DroppedPushes returns how many frames were dropped because Pushes was full.
func (c *Conn) DroppedPushes() uint64 { return c.dropped.Load() }

// Done returns a channel that is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (see ErrClosed), or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection: waiting Requests return ErrClosed. It returns
// once the reader goroutine has stopped, so no frame reaches Pushes after
// it. Closing an ended Conn does nothing and returns nil.
func (c *Conn) Close() error {
	var err error
	if c.end(ErrClosed) {
		err = c.nc.Close()
	}
	<-c.readerDone
	return err
}

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the gateway's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }
