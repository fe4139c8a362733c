package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
)

// Commands of the test server.
const (
	cmdEcho   = 1 // reply with the same body, from its own goroutine (replies come out of order)
	cmdSay    = 6 // push cmd 6 sn 0 "alice: <body>", then reply
	cmdHold   = 7 // no reply until the test says so (see server.release)
	cmdPushes = 9 // push body-many frames (bodies "0", "1", ...), then reply
)

// server is an in-test gateway: one goroutine per connection, answering the
// commands above.
type server struct {
	ln      net.Listener
	wg      sync.WaitGroup
	held    chan box.Box  // frames with cmdHold, as they arrive
	release chan struct{} // closing it replies to every held frame
	closeAt int           // close a connection once it holds this many frames (0: never)
}

func newServer(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, held: make(chan box.Box, 1000), release: make(chan struct{})}
	s.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(nc) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) serve(nc net.Conn) {
	var wg sync.WaitGroup       // frame goroutines, done before nc is closed
	quit := make(chan struct{}) // closed when this connection stops reading
	defer nc.Close()
	defer wg.Wait()
	defer close(quit)
	var wmu sync.Mutex
	write := func(cmd, ret int32, sn uint32, body []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		nc.Write(box.Append(nil, cmd, ret, sn, body))
	}
	held := 0
	r := box.NewReader(nc, 0)
	for {
		b, err := r.Next()
		if err != nil {
			return
		}
		switch b.Cmd {
		case cmdEcho:
			wg.Go(func() { write(b.Cmd, box.RetOK, b.SN, b.Body) })
		case cmdSay:
			write(cmdSay, box.RetOK, 0, append([]byte("alice: "), b.Body...))
			write(b.Cmd, box.RetOK, b.SN, nil)
		case cmdHold:
			s.held <- b
			held++
			if held == s.closeAt {
				return // every frame sent so far was read: the client sees EOF, not a reset
			}
			wg.Go(func() {
				select {
				case <-s.release:
					write(b.Cmd, box.RetOK, b.SN, b.Body)
				case <-quit:
				}
			})
		case cmdPushes:
			n, _ := strconv.Atoi(string(b.Body))
			for i := range n {
				write(100, box.RetOK, 0, []byte(strconv.Itoa(i)))
			}
			write(b.Cmd, box.RetOK, b.SN, nil)
		default:
			write(b.Cmd, box.RetNoRoute, b.SN, nil)
		}
	}
}

func dial(t *testing.T, addr string, opts Options) *Conn {
	t.Helper()
	c, err := Dial(t.Context(), addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wait fails the test if ch is not ready within a few seconds.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestPipelining(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})

	const goroutines, requests = 50, 100
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range requests {
				body := fmt.Sprintf("g%d-r%d", g, i)
				b, err := c.Request(t.Context(), cmdEcho, []byte(body))
				if err != nil {
					errs <- fmt.Errorf("request %s: %w", body, err)
					return
				}
				if string(b.Body) != body || b.Cmd != cmdEcho || b.Ret != box.RetOK || b.SN == 0 {
					errs <- fmt.Errorf("request %s: reply cmd %d ret %d sn %d body %q", body, b.Cmd, b.Ret, b.SN, b.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(c.Pushes()); n != 0 {
		t.Errorf("%d unexpected frames on Pushes", n)
	}
}

func TestSNStartsAtOneAndSkipsZero(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})

	for _, want := range []uint32{1, 2} {
		b, err := c.Request(t.Context(), cmdEcho, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b.SN != want {
			t.Errorf("reply sn = %d, want %d", b.SN, want)
		}
	}
	c.mu.Lock()
	c.sn = math.MaxUint32 - 1
	c.mu.Unlock()
	for _, want := range []uint32{math.MaxUint32, 1} {
		b, err := c.Request(t.Context(), cmdEcho, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b.SN != want {
			t.Errorf("reply sn = %d, want %d", b.SN, want)
		}
	}
}

func TestPush(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})

	b, err := c.Request(t.Context(), cmdSay, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Cmd != cmdSay || b.Ret != box.RetOK {
		t.Errorf("reply = %+v", b.Header)
	}
	p := wait(t, c.Pushes(), "the push")
	if p.Cmd != cmdSay || p.SN != 0 || string(p.Body) != "alice: hello" {
		t.Errorf("push = %+v %q, want cmd 6 sn 0 %q", p.Header, p.Body, "alice: hello")
	}
}

func TestUnknownCmdIsNotAnError(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})
	b, err := c.Request(t.Context(), 12345, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Ret != box.RetNoRoute || b.Cmd != 12345 {
		t.Errorf("reply = %+v, want cmd 12345 ret %d", b.Header, box.RetNoRoute)
	}
}

func TestSend(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})
	for sn := uint32(1000); sn < 1003; sn++ {
		if err := c.Send(cmdEcho, sn, []byte("raw")); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint32]bool{}
	for range 3 {
		b := wait(t, c.Pushes(), "a reply to Send")
		if string(b.Body) != "raw" {
			t.Errorf("reply = %+v %q", b.Header, b.Body)
		}
		seen[b.SN] = true
	}
	for sn := uint32(1000); sn < 1003; sn++ {
		if !seen[sn] {
			t.Errorf("no reply with sn %d", sn)
		}
	}
}

func TestDroppedPushes(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{PushBuffer: 2})

	// The reply comes after the five pushes, so the reader has handled
	// them all when Request returns.
	if _, err := c.Request(t.Context(), cmdPushes, []byte("5")); err != nil {
		t.Fatal(err)
	}
	if got := c.DroppedPushes(); got != 3 {
		t.Errorf("DroppedPushes = %d, want 3", got)
	}
	for _, want := range []string{"3", "4"} { // the newest are kept
		if b := wait(t, c.Pushes(), "a push"); string(b.Body) != want {
			t.Errorf("push body = %q, want %q", b.Body, want)
		}
	}
}

func TestServerCloseFailsPending(t *testing.T) {
	s := newServer(t)
	s.closeAt = 5
	c := dial(t, s.addr(), Options{})

	errs := make(chan error, s.closeAt)
	for range s.closeAt {
		go func() {
			_, err := c.Request(t.Context(), cmdHold, nil)
			errs <- err
		}()
	}
	start := time.Now()
	for range s.closeAt {
		err := wait(t, errs, "a pending request to fail")
		if !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
			t.Errorf("Request error = %v, want ErrClosed wrapping io.EOF", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("pending requests took %v to fail", d)
	}

	wait(t, c.Done(), "Done")
	if err := c.Err(); err == nil || err.Error() != "client: connection closed: EOF" {
		t.Errorf("Err() = %v, want client: connection closed: EOF", err)
	}
	if _, err := c.Request(t.Context(), cmdEcho, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Request after the end: %v, want ErrClosed", err)
	}
	if err := c.Send(cmdEcho, 1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after the end: %v, want ErrClosed", err)
	}
	select {
	case b := <-c.Pushes():
		t.Errorf("unexpected frame on Pushes: %+v", b.Header)
	default:
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after the end = %v, want nil", err)
	}
}

func TestClose(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})

	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(t.Context(), cmdHold, nil)
		errc <- err
	}()
	wait(t, s.held, "the held frame")
	if err := c.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := wait(t, errc, "Request to fail"); !errors.Is(err, ErrClosed) {
		t.Errorf("Request error = %v, want ErrClosed", err)
	}
	if err := c.Err(); err != ErrClosed {
		t.Errorf("Err() = %v, want ErrClosed", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Close")
	}
	select {
	case b := <-c.Pushes():
		t.Errorf("unexpected frame on Pushes: %+v", b.Header)
	default:
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestRequestContext(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})

	// Cancel.
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, cmdHold, []byte("late"))
		errc <- err
	}()
	held := wait(t, s.held, "the held frame")
	cancel()
	if err := wait(t, errc, "Request to return"); err != context.Canceled {
		t.Errorf("Request error = %v, want context.Canceled", err)
	}

	// Deadline.
	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx, cmdHold, []byte("late")); err != context.DeadlineExceeded {
		t.Errorf("Request error = %v, want context.DeadlineExceeded", err)
	}
	held2 := wait(t, s.held, "the second held frame")

	// Already over: nothing is written.
	if _, err := c.Request(ctx, cmdEcho, nil); err != context.DeadlineExceeded {
		t.Errorf("Request with an expired ctx: %v, want context.DeadlineExceeded", err)
	}

	// The connection is still fine, and the late replies go to Pushes.
	if b, err := c.Request(t.Context(), cmdEcho, []byte("ok")); err != nil || string(b.Body) != "ok" {
		t.Fatalf("Request after cancellations = %q, %v", b.Body, err)
	}
	close(s.release)
	late := map[uint32]bool{}
	for range 2 {
		b := wait(t, c.Pushes(), "a late reply")
		late[b.SN] = true
	}
	if !late[held.SN] || !late[held2.SN] {
		t.Errorf("late replies have sn %v, want %d and %d", late, held.SN, held2.SN)
	}
	if c.Err() != nil {
		t.Errorf("Err() = %v, want nil", c.Err())
	}
}

func TestOversizeFrameEndsConn(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{MaxFrame: 100})
	_, err := c.Request(t.Context(), cmdEcho, make([]byte, 200))
	if !errors.Is(err, ErrClosed) || !errors.Is(err, box.ErrTooLarge) {
		t.Errorf("Request error = %v, want ErrClosed wrapping box.ErrTooLarge", err)
	}
}

func TestDial(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.addr(), Options{})
	if c.RemoteAddr().String() != s.addr() {
		t.Errorf("RemoteAddr = %v, want %s", c.RemoteAddr(), s.addr())
	}
	if c.LocalAddr() == nil {
		t.Error("LocalAddr = nil")
	}

	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Dial(t.Context(), addr, Options{DialTimeout: time.Second}); err == nil {
		t.Errorf("Dial(%s) with no listener succeeded", addr)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Dial(ctx, s.addr(), Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestOptionsWithDefaults(t *testing.T) {
	tests := []struct {
		in, want Options
	}{
		{Options{}, Options{MaxFrame: box.DefaultMaxFrame, DialTimeout: DefaultDialTimeout, PushBuffer: DefaultPushBuffer}},
		{Options{MaxFrame: 64, DialTimeout: time.Second, PushBuffer: 1}, Options{MaxFrame: 64, DialTimeout: time.Second, PushBuffer: 1}},
		{Options{DialTimeout: -1}, Options{MaxFrame: box.DefaultMaxFrame, DialTimeout: 0, PushBuffer: DefaultPushBuffer}},
	}
	for _, tt := range tests {
		if got := tt.in.withDefaults(); got != tt.want {
			t.Errorf("%+v.withDefaults() = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}
