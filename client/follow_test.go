package client

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
)

// These tests check Options.Follow against in-test gateways that do what
// a stopping maple gateway does (docs/operations.md, "What a client sees
// during a gateway roll"): push box.CmdMove, answer box.RetMoved, close.

// rollGW is an in-test gateway: it echoes cmdEcho at once (the body
// prefixed with its name) and hands every other frame to the test.
type rollGW struct {
	name   string
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*rollConn
	frames chan rollFrame
}

type rollConn struct {
	nc  net.Conn
	wmu sync.Mutex
	eof chan struct{} // closed when the client closed it (or it broke)
}

type rollFrame struct {
	c *rollConn
	box.Box
}

func (c *rollConn) write(cmd, ret int32, sn uint32, body string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.nc.Write(box.Append(nil, cmd, ret, sn, []byte(body)))
}

// answer replies to f with body.
func (f rollFrame) answer(body string) { f.c.write(f.Cmd, box.RetOK, f.SN, body) }

func newRollGW(t *testing.T, name string) *rollGW {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &rollGW{name: name, ln: ln, frames: make(chan rollFrame, 100)}
	g.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := &rollConn{nc: nc, eof: make(chan struct{})}
			g.mu.Lock()
			g.conns = append(g.conns, c)
			g.mu.Unlock()
			g.wg.Go(func() { g.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			c.nc.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *rollGW) serve(c *rollConn) {
	defer close(c.eof)
	r := box.NewReader(c.nc, 0)
	for {
		b, err := r.Next()
		if err != nil {
			return
		}
		if b.Cmd == cmdEcho {
			c.write(b.Cmd, box.RetOK, b.SN, g.name+":"+string(b.Body))
			continue
		}
		g.frames <- rollFrame{c: c, Box: b}
	}
}

func (g *rollGW) addr() string { return g.ln.Addr().String() }

// conn returns the i-th connection accepted.
func (g *rollGW) conn(t *testing.T, i int) *rollConn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		if len(g.conns) > i {
			c := g.conns[i]
			g.mu.Unlock()
			return c
		}
		g.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%s: connection %d not accepted", g.name, i)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (g *rollGW) accepted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// move sends the move push on c.
func (c *rollConn) move() { c.write(box.CmdMove, box.RetOK, 0, "") }

type result struct {
	b   box.Box
	err error
}

func requestAsync(c *Conn, ctx context.Context, cmd int32, body string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		b, err := c.Request(ctx, cmd, []byte(body))
		ch <- result{b, err}
	}()
	return ch
}

// TestFollowAtQuietMoment: after the move push, a new request waits while
// one is in flight on the old gateway; once that one is answered, the
// Conn dials the new gateway, runs OnMove there first, sends the waiting
// request there, and closes the old connection.
func TestFollowAtQuietMoment(t *testing.T) {
	old, next := newRollGW(t, "old"), newRollGW(t, "new")
	var order []string
	var omu sync.Mutex
	note := func(s string) { omu.Lock(); order = append(order, s); omu.Unlock() }
	c := dial(t, old.addr(), Options{Follow: &Follow{Addr: next.addr(), Wait: 10 * time.Second,
		OnMove: func(ctx context.Context, c *Conn) error {
			r, err := c.Request(ctx, cmdEcho, []byte("login"))
			if err == nil {
				note(string(r.Body))
			}
			return err
		}}})
	ctx := t.Context()
	inflight := requestAsync(c, ctx, cmdHold, "first")
	held := wait(t, old.frames, "the first request")
	oc := old.conn(t, 0)
	oc.move()
	waitCond(t, "the move push read", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.moving != nil })
	waiting := requestAsync(c, ctx, cmdHold, "second")
	time.Sleep(100 * time.Millisecond)
	select {
	case f := <-old.frames:
		t.Fatalf("a request made after the move push went to the old gateway: %q", f.Body)
	default:
	}
	if n := next.accepted(); n != 0 {
		t.Fatalf("moved with a request in flight (and Wait not over): %d connections to the new gateway", n)
	}
	held.answer("one")
	if r := wait(t, inflight, "the first reply"); r.err != nil || string(r.b.Body) != "one" {
		t.Fatalf("first request: %q %v", r.b.Body, r.err)
	}
	f := wait(t, next.frames, "the second request on the new gateway")
	note(string(f.Body))
	f.answer("two")
	if r := wait(t, waiting, "the second reply"); r.err != nil || string(r.b.Body) != "two" {
		t.Fatalf("second request: %q %v", r.b.Body, r.err)
	}
	wait(t, oc.eof, "the old connection closed by the client")
	omu.Lock()
	if len(order) != 2 || order[0] != "new:login" || order[1] != "second" {
		t.Errorf("on the new gateway: %q, want OnMove's login first, then the held request", order)
	}
	omu.Unlock()
	if c.Moves() != 1 || c.Resent() != 0 {
		t.Errorf("Moves %d Resent %d, want 1 and 0", c.Moves(), c.Resent())
	}
	if len(c.Pushes()) != 0 {
		t.Errorf("%d frames on Pushes, want none (the move push is the Conn's)", len(c.Pushes()))
	}
	if c.RemoteAddr().String() != next.addr() {
		t.Errorf("RemoteAddr %v, want the new gateway %s", c.RemoteAddr(), next.addr())
	}
	if r, err := c.Request(ctx, cmdEcho, []byte("after")); err != nil || string(r.Body) != "new:after" {
		t.Errorf("after the move: %q %v", r.Body, err)
	}
}

// TestFollowResendsRetMoved: a request the old gateway answers RetMoved
// (not run) is sent again on the new gateway; Request returns that reply.
func TestFollowResendsRetMoved(t *testing.T) {
	old, next := newRollGW(t, "old"), newRollGW(t, "new")
	c := dial(t, old.addr(), Options{Follow: &Follow{Addr: next.addr()}})
	res := requestAsync(c, t.Context(), cmdHold, "x")
	f := wait(t, old.frames, "the request")
	f.c.write(f.Cmd, box.RetMoved, f.SN, "")
	g := wait(t, next.frames, "the request sent again")
	if string(g.Body) != "x" || g.Cmd != cmdHold {
		t.Fatalf("sent again: cmd %d %q", g.Cmd, g.Body)
	}
	g.answer("done")
	if r := wait(t, res, "the reply"); r.err != nil || r.b.Ret != 0 || string(r.b.Body) != "done" {
		t.Fatalf("reply %+v %q %v", r.b.Header, r.b.Body, r.err)
	}
	if c.Moves() != 1 || c.Resent() != 1 {
		t.Errorf("Moves %d Resent %d, want 1 and 1", c.Moves(), c.Resent())
	}
}

// TestFollowResendsUnansweredAtClose: a gateway that says move and closes
// with a request unanswered did not run it: it is sent again.
func TestFollowResendsUnansweredAtClose(t *testing.T) {
	old, next := newRollGW(t, "old"), newRollGW(t, "new")
	c := dial(t, old.addr(), Options{Follow: &Follow{Addr: next.addr(), Wait: 10 * time.Second}})
	res := requestAsync(c, t.Context(), cmdHold, "y")
	f := wait(t, old.frames, "the request")
	f.c.move()
	time.Sleep(20 * time.Millisecond)
	f.c.nc.Close()
	g := wait(t, next.frames, "the request sent again")
	g.answer("ok")
	if r := wait(t, res, "the reply"); r.err != nil || string(r.b.Body) != "ok" {
		t.Fatalf("reply %q %v", r.b.Body, r.err)
	}
	if c.Err() != nil || c.Moves() != 1 || c.Resent() != 1 {
		t.Errorf("Err %v Moves %d Resent %d, want nil, 1, 1", c.Err(), c.Moves(), c.Resent())
	}
}

// TestFollowWaitBound: a request in flight longer than Follow.Wait does
// not hold the move: new requests go to the new gateway, and the old one's
// late answer still reaches its request; then the old connection closes.
func TestFollowWaitBound(t *testing.T) {
	old, next := newRollGW(t, "old"), newRollGW(t, "new")
	c := dial(t, old.addr(), Options{Follow: &Follow{Addr: next.addr(), Wait: 100 * time.Millisecond}})
	ctx := t.Context()
	slow := requestAsync(c, ctx, cmdHold, "slow")
	f := wait(t, old.frames, "the slow request")
	f.c.move()
	waitCond(t, "the move push read", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.moving != nil })
	start := time.Now()
	if r, err := c.Request(ctx, cmdEcho, []byte("meanwhile")); err != nil || string(r.Body) != "new:meanwhile" {
		t.Fatalf("request during the move: %q %v", r.Body, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("held %v, want about Wait (100 ms)", d)
	}
	select {
	case <-f.c.eof:
		t.Fatal("old connection closed with a request waiting on it")
	default:
	}
	f.answer("late")
	if r := wait(t, slow, "the slow reply"); r.err != nil || string(r.b.Body) != "late" {
		t.Fatalf("slow request: %q %v", r.b.Body, r.err)
	}
	wait(t, f.c.eof, "the old connection closed once quiet")
}

// TestFollowOnMoveRetried: a failing OnMove drops the new connection and
// the move is tried again.
func TestFollowOnMoveRetried(t *testing.T) {
	old, next := newRollGW(t, "old"), newRollGW(t, "new")
	var tries atomic.Int32
	c := dial(t, old.addr(), Options{Follow: &Follow{Addr: next.addr(), OnMove: func(ctx context.Context, c *Conn) error {
		if tries.Add(1) < 3 {
			return errors.New("login refused")
		}
		return nil
	}}})
	if _, err := c.Request(t.Context(), cmdEcho, nil); err != nil {
		t.Fatal(err)
	}
	old.conn(t, 0).move()
	waitCond(t, "the move", func() bool { return c.Moves() == 1 })
	if tries.Load() != 3 {
		t.Errorf("OnMove ran %d times, want 3", tries.Load())
	}
	if r, err := c.Request(t.Context(), cmdEcho, []byte("z")); err != nil || string(r.Body) != "new:z" {
		t.Errorf("after the move: %q %v", r.Body, err)
	}
}

// TestFollowTimeout: with nowhere to move to, the Conn ends once
// Follow.Timeout is over, with an error wrapping ErrClosed.
func TestFollowTimeout(t *testing.T) {
	old := newRollGW(t, "old")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := ln.Addr().String()
	ln.Close()
	c := dial(t, old.addr(), Options{Follow: &Follow{Addr: nowhere, Timeout: 300 * time.Millisecond}})
	res := requestAsync(c, t.Context(), cmdHold, "w")
	f := wait(t, old.frames, "the request")
	f.c.write(f.Cmd, box.RetMoved, f.SN, "")
	r := wait(t, res, "the request to fail")
	if !errors.Is(r.err, ErrClosed) {
		t.Errorf("Request error %v, want ErrClosed", r.err)
	}
	wait(t, c.Done(), "the end")
}

// TestNoFollowUnchanged: without Follow the move push is a push, RetMoved
// an answer, and the gateway's close the Conn's end.
func TestNoFollowUnchanged(t *testing.T) {
	old := newRollGW(t, "old")
	c := dial(t, old.addr(), Options{})
	res := requestAsync(c, t.Context(), cmdHold, "v")
	f := wait(t, old.frames, "the request")
	f.c.move()
	if p := wait(t, c.Pushes(), "the move push"); p.Cmd != box.CmdMove || p.SN != 0 {
		t.Errorf("push cmd %d sn %d, want the move push", p.Cmd, p.SN)
	}
	f.c.write(f.Cmd, box.RetMoved, f.SN, "")
	if r := wait(t, res, "the answer"); r.err != nil || r.b.Ret != box.RetMoved {
		t.Errorf("answer ret %d err %v, want RetMoved", r.b.Ret, r.err)
	}
	f.c.nc.Close()
	wait(t, c.Done(), "the end")
	if !errors.Is(c.Err(), ErrClosed) || c.Moves() != 0 {
		t.Errorf("Err %v Moves %d", c.Err(), c.Moves())
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
