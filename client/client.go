// Package client is the Go client of the maple wire protocol (docs/protocol.md
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
//
// # Gateway rolls
//
// A gateway that is stopping (a rolling restart, docs/operations.md "What
// a client sees during a gateway roll") pushes box.CmdMove (sn 0) to each
// connection, later answers frames it no longer takes box.RetMoved (not
// run), and closes each connection once it answered every frame it took.
// A request that got no answer from such a gateway never ran.
//
// With Options.Follow set, a Conn follows the move by itself: on the move
// push it holds new Requests, waits for a quiet moment (no Request waiting
// for a reply on the old connection, or Follow.Wait), closes the old
// connection if it is quiet, dials a new TCP connection (the new gateway
// on the same port gets it), runs Follow.OnMove on it (log in again
// there), and sends the held Requests on it. Requests still waiting on
// the old connection get their replies there; Requests answered
// box.RetMoved, and Requests the old gateway closed unanswered, are sent
// again on the new connection, so Request returns their real answers. A
// connection that ends without the move push ends the Conn as before
// (its unanswered Requests may have run). Without Follow nothing changes:
// the move push arrives on Pushes, RetMoved answers are returned as they
// are, and the Conn ends when the gateway closes it.
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

// Defaults for the zero fields of Options and Follow.
const (
	DefaultDialTimeout   = 5 * time.Second
	DefaultPushBuffer    = 1024
	DefaultFollowWait    = time.Second
	DefaultFollowTimeout = 15 * time.Second
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
	// Follow, if set, makes the Conn follow its gateway when the gateway
	// stops (see the package doc, "Gateway rolls"); nil means it does not.
	Follow *Follow
}

// Follow configures how a Conn follows a stopping gateway to another one.
// The zero value is ready to use.
type Follow struct {
	// Addr is dialed for the new connection; "" means Dial's address
	// (where a rolling restart puts the new gateway).
	Addr string
	// Wait bounds the wait for a quiet moment after the move push: the
	// Conn moves once no Request waits for a reply on the old connection,
	// or after Wait. A Request still waiting then gets its reply on the
	// old connection, or is sent again if the gateway answers it
	// box.RetMoved or closes unanswered. 0 means DefaultFollowWait.
	Wait time.Duration
	// Timeout bounds one move: dialing (with retries) and OnMove. Past it
	// the Conn ends with an error wrapping ErrClosed. 0 means
	// DefaultFollowTimeout.
	Timeout time.Duration
	// OnMove, if set, runs on each new connection before any held or
	// resent Request goes out on it (log in again here; the new gateway
	// does not know the old connection's user). Requests made with its
	// ctx go out on the new connection at once. If it fails, the new
	// connection is closed and the move tried again, until Timeout. It
	// also tells the application that the Conn moved.
	OnMove func(ctx context.Context, c *Conn) error
}

// withDefaults fills the zero fields of a copy of o (Follow is read as it
// is, its zero fields meaning their defaults).
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
	opts    Options
	addr    string        // where moves dial
	pushes  chan box.Box  // sent to by the readers only; never closed
	done    chan struct{} // closed once, by end
	readers sync.WaitGroup
	dropped atomic.Uint64
	moves   atomic.Uint64
	resent  atomic.Uint64

	mu      sync.Mutex // guards the fields below and the links' counts
	sn      uint32     // last sn handed out
	pending map[uint32]*waiter
	err     error              // why the connection ended; nil while it is up
	cur     *link              // where Requests go
	links   map[*link]struct{} // links whose reader runs
	moving  *move              // a move under way: new Requests wait for it
}

// link is one TCP connection of a Conn: the only one without Follow; with
// it, the old one and the new one during a move.
type link struct {
	nc   net.Conn
	done chan struct{} // closed when its reader has stopped

	// Under the Conn's mu.
	waiting int  // Requests waiting for a reply on it
	told    bool // its gateway is stopping (move push, RetMoved), or the Conn moved away
	drop    bool // close it once waiting is 0 (the Conn moved away)

	wmu  sync.Mutex // serializes writes; guards the fields below
	wbuf []byte
	wdl  time.Time // write deadline now set on nc
}

// waiter is a Request waiting for the reply with its sn.
type waiter struct {
	ch   chan box.Box
	link *link
}

// Dial connects to the gateway at addr (host:port) and starts the reader.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	opts = opts.withDefaults()
	nc, err := dialTCP(ctx, addr, opts.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	c := &Conn{
		opts:    opts,
		addr:    addr,
		pushes:  make(chan box.Box, opts.PushBuffer),
		done:    make(chan struct{}),
		pending: make(map[uint32]*waiter),
		links:   make(map[*link]struct{}),
	}
	if opts.Follow != nil && opts.Follow.Addr != "" {
		c.addr = opts.Follow.Addr
	}
	l := newLink(nc)
	c.cur = l
	c.start(l)
	return c, nil
}

func dialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, "tcp", addr)
}

func newLink(nc net.Conn) *link { return &link{nc: nc, done: make(chan struct{})} }

// start runs l's reader; false (and l closed) if the Conn has ended.
func (c *Conn) start(l *link) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		l.nc.Close()
		close(l.done)
		return false
	}
	c.links[l] = struct{}{}
	c.readers.Add(1)
	c.mu.Unlock()
	go c.read(l, box.NewReader(l.nc, c.opts.MaxFrame))
	return true
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
//
// With Options.Follow, a Request made while the Conn moves waits for the
// new connection, and one that the stopping gateway answered
// box.RetMoved or closed unanswered is sent again there (under a new sn);
// Resent counts those.
func (c *Conn) Request(ctx context.Context, cmd int32, body []byte) (box.Box, error) {
	for {
		l, sn, ch, err := c.begin(ctx)
		if err != nil {
			return box.Box{}, err
		}
		b, again, err := c.await(ctx, l, sn, ch, cmd, body)
		if !again {
			return b, err
		}
		c.resent.Add(1)
	}
}

// begin picks the link a Request goes on (waiting while the Conn moves)
// and registers its waiter under the next sn.
func (c *Conn) begin(ctx context.Context) (*link, uint32, chan box.Box, error) {
	hook, _ := ctx.Value(hookKey{}).(*link)
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, 0, nil, err
		}
		l := c.cur
		if hook != nil {
			l = hook
		} else if m := c.moving; m != nil {
			c.mu.Unlock()
			select {
			case <-m.ready:
			case <-c.done:
			case <-ctx.Done():
				return nil, 0, nil, ctx.Err()
			}
			continue
		}
		for {
			c.sn++
			if _, busy := c.pending[c.sn]; c.sn != 0 && !busy {
				break
			}
		}
		sn := c.sn
		ch := make(chan box.Box, 1)
		c.pending[sn] = &waiter{ch: ch, link: l}
		l.waiting++
		c.mu.Unlock()
		return l, sn, ch, nil
	}
}

// await writes the frame on l and waits for its reply. again: the gateway
// of l did not run it and stopped (Follow): send it again.
func (c *Conn) await(ctx context.Context, l *link, sn uint32, ch chan box.Box, cmd int32, body []byte) (b box.Box, again bool, err error) {
	if err := c.write(ctx, l, cmd, sn, body); err != nil {
		c.forget(sn)
		// A frame not written whole never runs: if l was told to move,
		// send it on the next link.
		return box.Box{}, ctx.Err() == nil && c.following(l), err
	}
	select {
	case b := <-ch:
		return c.answered(b)
	case <-ctx.Done():
		c.forget(sn)
		select {
		case b := <-ch: // the reader handed it over before forget
			return c.answered(b)
		default:
			return box.Box{}, false, ctx.Err()
		}
	case <-l.done:
		// The reader of l stopped: every reply it read was handed over.
		select {
		case b := <-ch:
			return c.answered(b)
		default:
		}
		c.forget(sn)
		if c.following(l) {
			// Its gateway stopped and closed it unanswered: the frame
			// never ran.
			return box.Box{}, true, nil
		}
		err := c.Err()
		if err == nil { // a new link that failed during a move (OnMove's request)
			err = fmt.Errorf("%w: the new connection of a move ended", ErrClosed)
		}
		return box.Box{}, false, err
	case <-c.done:
		select {
		case b := <-ch: // the reply won the race with the end
			return c.answered(b)
		default:
			return box.Box{}, false, c.Err()
		}
	}
}

// answered returns a reply, unless it is RetMoved and the Conn follows
// moves: then the request is sent again.
func (c *Conn) answered(b box.Box) (box.Box, bool, error) {
	if b.Ret == box.RetMoved && c.opts.Follow != nil && c.Err() == nil {
		return box.Box{}, true, nil
	}
	return b, false, nil
}

// following reports that l's gateway is stopping and the Conn follows it
// elsewhere (so l's end is not the Conn's).
func (c *Conn) following(l *link) bool {
	if c.opts.Follow == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && l.told
}

// Send writes one frame with the given sn and does not wait for anything.
// It is for callers that track sequence numbers themselves, such as
// benchmarks: replies to sn that no Request waits for arrive on Pushes.
// Mixing Send and Request on one Conn is allowed, but Send should then use
// sn that Request will not pick (Request takes 1, 2, 3, ...).
func (c *Conn) Send(cmd int32, sn uint32, body []byte) error {
	c.mu.Lock()
	err, l := c.err, c.cur
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.write(context.Background(), l, cmd, sn, body)
}

// write sends one frame on l. Writes are serialized so that frames never
// interleave on the wire.
func (c *Conn) write(ctx context.Context, l *link, cmd int32, sn uint32, body []byte) error {
	if uint64(len(body)) > math.MaxUint32-box.HeaderLen {
		return fmt.Errorf("client: body of %d bytes does not fit a frame", len(body))
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := ctx.Err(); err != nil {
		return err // possibly waited on wmu: do not write a frame nobody waits for
	}
	if dl, _ := ctx.Deadline(); !dl.Equal(l.wdl) {
		if err := l.nc.SetWriteDeadline(dl); err != nil {
			return c.broken(l, fmt.Errorf("%w: %w", ErrClosed, err))
		}
		l.wdl = dl
	}
	l.wbuf = box.Append(l.wbuf[:0], cmd, box.RetOK, sn, body)
	if n, err := l.nc.Write(l.wbuf); err != nil {
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline is ctx's, and nothing went out: the stream is
			// still whole, so the connection lives on.
			return context.DeadlineExceeded
		}
		err = c.broken(l, fmt.Errorf("%w: write: %w", ErrClosed, err))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if cap(l.wbuf) > 64<<10 {
		l.wbuf = nil // do not keep one big body's buffer for good
	}
	return nil
}

// broken handles a failed write on l: it ends the Conn, unless l is not
// the Conn's link (a new one during a move) or its gateway is stopping and
// the Conn follows it; then only l is closed. It returns err, or the
// Conn's error if it ended.
func (c *Conn) broken(l *link, err error) error {
	c.mu.Lock()
	alone := c.cur != l || (c.opts.Follow != nil && l.told)
	c.mu.Unlock()
	if alone {
		l.nc.Close()
		return err
	}
	return c.fail(err)
}

// forget drops the waiter for sn, after which its reply goes to Pushes.
func (c *Conn) forget(sn uint32) {
	c.mu.Lock()
	if w, ok := c.pending[sn]; ok {
		delete(c.pending, sn)
		c.unwaitLocked(w.link)
	}
	c.mu.Unlock()
}

// unwaitLocked counts a Request on l no longer waiting. When l has none
// left: a move waiting for a quiet moment goes, and a link the Conn moved
// away from is closed.
func (c *Conn) unwaitLocked(l *link) {
	l.waiting--
	if l.waiting > 0 {
		return
	}
	if m := c.moving; m != nil && m.from == l {
		poke(m.quiet)
	}
	if l.drop {
		l.nc.Close()
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// read is a link's reader goroutine: it hands each frame to the Request
// waiting for its sn, or to Pushes, until the link ends.
func (c *Conn) read(l *link, r *box.Reader) {
	defer c.readers.Done()
	defer close(l.done)
	follow := c.opts.Follow != nil
	for {
		b, err := r.Next()
		if err != nil {
			c.ended(l, err)
			return
		}
		if follow {
			if b.SN == 0 && b.Cmd == box.CmdMove {
				c.startMove(l, false)
				continue
			}
			if b.Ret == box.RetMoved {
				c.startMove(l, true) // it takes no more work: go now
			}
		}
		if b.SN != 0 {
			c.mu.Lock()
			w, ok := c.pending[b.SN]
			if ok {
				delete(c.pending, b.SN)
				c.unwaitLocked(w.link)
			}
			c.mu.Unlock()
			if ok {
				w.ch <- b // buffered, and only one reply per waiter
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
		c.closeLinks()
	}
	return c.Err()
}

// closeLinks closes every link; it returns the error of closing the
// Conn's own.
func (c *Conn) closeLinks() error {
	c.mu.Lock()
	cur := c.cur
	var others []*link
	for l := range c.links {
		if l != cur {
			others = append(others, l)
		}
	}
	c.mu.Unlock()
	for _, l := range others {
		l.nc.Close()
	}
	return cur.nc.Close()
}

// Pushes returns the frames that answer no waiting Request: pushes (sn 0)
// and replies whose Request has given up or that were written with Send.
// When it is full the oldest frame is dropped. The channel is never closed,
// so that a select on it and on Done cannot spin on a closed channel: watch
// Done for the end. Frames already in it can still be received after that.
// With Options.Follow the move push (box.CmdMove) is not put on it.
func (c *Conn) Pushes() <-chan box.Box { return c.pushes }

// DroppedPushes returns how many frames were dropped because Pushes was full.
func (c *Conn) DroppedPushes() uint64 { return c.dropped.Load() }

// Moves returns how many times the Conn followed its gateway to a new
// connection (Options.Follow).
func (c *Conn) Moves() uint64 { return c.moves.Load() }

// Resent returns how many requests were sent again after a move: the
// stopping gateway answered them box.RetMoved or closed unanswered, so
// they had not run.
func (c *Conn) Resent() uint64 { return c.resent.Load() }

// Done returns a channel that is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (see ErrClosed), or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection: waiting Requests return ErrClosed. It returns
// once the reader goroutines have stopped, so no frame reaches Pushes after
// it. Closing an ended Conn does nothing and returns nil.
func (c *Conn) Close() error {
	var err error
	if c.end(ErrClosed) {
		err = c.closeLinks()
	}
	c.readers.Wait()
	return err
}

func (c *Conn) link() *link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// LocalAddr returns the local network address (of the connection now in
// use, with Follow).
func (c *Conn) LocalAddr() net.Addr { return c.link().nc.LocalAddr() }

// RemoteAddr returns the gateway's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.link().nc.RemoteAddr() }
