package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/evio"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store/storetest"
)

// These tests pin evio.go: the two evio internals it reads (conn.out,
// conn.fd) and the behaviour built on them: Wake output appended behind
// unsent output, slow clients dropped, bad and idle clients closed.

// TestEvioFieldsPinned fails if evio's connection type loses the fields
// unsentOutput and shutdownSocket read, and checks both work on a live
// connection.
func TestEvioFieldsPinned(t *testing.T) {
	type result struct {
		typ      reflect.Type
		unsent   int
		fd       int64
		panicked any
	}
	var (
		got      = make(chan result, 1)
		stopping atomic.Bool
		addrCh   = make(chan net.Addr, 1)
	)
	var ev evio.Events
	ev.Serving = func(s evio.Server) evio.Action {
		addrCh <- s.Addrs[0]
		return evio.None
	}
	ev.Data = func(c evio.Conn, in []byte) (out []byte, action evio.Action) {
		if in == nil {
			return nil, evio.None
		}
		r := result{typ: reflect.TypeOf(c)}
		func() {
			defer func() { r.panicked = recover() }()
			r.unsent = len(unsentOutput(c))
			r.fd = reflect.ValueOf(c).Elem().FieldByName("fd").Int()
			shutdownSocket(c) // the client must see EOF
		}()
		select {
		case got <- r:
		default:
		}
		return nil, evio.None
	}
	ev.Tick = func() (time.Duration, evio.Action) {
		if stopping.Load() {
			return 0, evio.Shutdown
		}
		return 20 * time.Millisecond, evio.None
	}
	served := make(chan error, 1)
	go func() { served <- evio.Serve(ev, "tcp://127.0.0.1:0") }()
	t.Cleanup(func() {
		stopping.Store(true)
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("evio.Serve did not return")
		}
	})
	var addr net.Addr
	select {
	case addr = <-addrCh:
	case err := <-served:
		t.Fatalf("evio.Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("evio did not start serving")
	}

	nc, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("evio did not call Data")
	}

	// The fields, by name, kind and type.
	typ := r.typ
	if typ.Kind() != reflect.Pointer || typ.Elem().Kind() != reflect.Struct {
		t.Fatalf("EVIO CHANGED: evio.Conn is a %v, want a pointer to evio's conn struct; unsentOutput/shutdownSocket in evio.go must be revisited", typ)
	}
	st := typ.Elem()
	for _, want := range []struct {
		name string
		typ  reflect.Type
	}{
		{"out", reflect.TypeFor[[]byte]()},
		{"fd", reflect.TypeFor[int]()},
	} {
		f, ok := st.FieldByName(want.name)
		if !ok {
			t.Errorf("EVIO CHANGED: %v has no field %q; unsentOutput/shutdownSocket in evio.go depend on it", st, want.name)
			continue
		}
		if f.Type != want.typ {
			t.Errorf("EVIO CHANGED: %v.%s is %v, want %v; unsentOutput/shutdownSocket in evio.go depend on it", st, want.name, f.Type, want.typ)
		}
	}
	// evio_wake.go reaches each loop's epoll fd: conn.loop.poll.fd.
	pinPath(t, st, "loopWaker in evio_wake.go", []string{"loop", "poll", "fd"}, reflect.TypeFor[int]())
	// and evio's own wake fd beside it (the lost-wake test eats from it).
	pinPath(t, st, "TestLostWakeCannotHappen", []string{"loop", "poll", "wfd"}, reflect.TypeFor[int]())
	if r.panicked != nil {
		t.Fatalf("EVIO CHANGED: reading conn.out / conn.fd panicked: %v", r.panicked)
	}
	if r.unsent != 0 {
		t.Errorf("unsentOutput on an idle connection = %d bytes, want 0", r.unsent)
	}
	if r.fd <= 2 {
		t.Errorf("conn.fd = %d, not a socket", r.fd)
	}
	// shutdownSocket really shut the client's socket down.
	n, err := nc.Read(make([]byte, 16))
	if n != 0 || !isClosedErr(err) {
		t.Errorf("after shutdownSocket the client read n=%d err=%v, want EOF or reset", n, err)
	}
}

// pinPath checks that evio's struct st reaches a field of type want
// through the pointer fields path.
func pinPath(t *testing.T, st reflect.Type, user string, path []string, want reflect.Type) {
	t.Helper()
	typ := st
	for i, name := range path {
		f, ok := typ.FieldByName(name)
		if !ok {
			t.Errorf("EVIO CHANGED: %v has no field %q (path %v); %s depends on it", typ, name, path, user)
			return
		}
		if i == len(path)-1 {
			if f.Type != want {
				t.Errorf("EVIO CHANGED: %v.%s is %v, want %v; %s depends on it", typ, name, f.Type, want, user)
			}
			return
		}
		if f.Type.Kind() != reflect.Pointer || f.Type.Elem().Kind() != reflect.Struct {
			t.Errorf("EVIO CHANGED: %v.%s is %v, want a pointer to a struct; %s depends on it", typ, name, f.Type, user)
			return
		}
		typ = f.Type.Elem()
	}
}

// Test100kPushesSlowReader pushes 100,000 sequenced frames to one client
// that reads slowly: every one must arrive, once, in order.
func Test100kPushesSlowReader(t *testing.T) {
	const total = 100_000
	gw, rdb := startGateway(t, Options{OutBuffer: 64 << 20})
	nc, id := dialConn(t, gw)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	pushErr := make(chan error, 1)
	go func() {
		var msgs [][]byte
		for i := range total {
			msgs = append(msgs, outWrite(id, pushFrame(uint64(i))))
			if len(msgs) == 1000 || i == total-1 {
				if err := lpushAll(ctx, rdb, gw.keys.Outbound(gw.ID()), msgs); err != nil {
					pushErr <- err
					return
				}
				msgs = msgs[:0]
			}
		}
		pushErr <- nil
	}()

	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := box.NewReader(nc, 0)
	for i := range uint64(total) {
		b, err := r.Next()
		if err != nil {
			t.Fatalf("after %d of %d frames: %v (gateway stats: %s)", i, total, err, statsLine(gw))
		}
		if b.Cmd != 100 || b.SN != 0 || len(b.Body) != 8 {
			t.Fatalf("frame %d: cmd=%d sn=%d body=%d bytes, want a push", i, b.Cmd, b.SN, len(b.Body))
		}
		if got := binary.BigEndian.Uint64(b.Body); got != i {
			t.Fatalf("frame %d carries sequence %d: lost, duplicated or reordered output", i, got)
		}
		if i%300 == 299 {
			time.Sleep(3 * time.Millisecond) // a slow reader
		}
	}
	if err := <-pushErr; err != nil {
		t.Fatal(err)
	}
	expectNoMore(t, nc, r)
	t.Logf("%d pushes received in order in %v", total, time.Since(start).Round(time.Millisecond))
}

// TestRepliesRacePushes races two sources of output for one connection
// (pushes and multi-frame "replies"), pushed concurrently, while the client
// also sends frames: every frame arrives once, each source in its order.
func TestRepliesRacePushes(t *testing.T) {
	const (
		pushes  = 30_000
		replies = 30_000
	)
	// Its frames are never answered (no worker runs): no in-flight bound.
	gw, rdb := startGateway(t, Options{OutBuffer: 64 << 20, MaxInflight: -1})
	nc, id := dialConn(t, gw)
	key := gw.keys.Outbound(gw.ID())

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()

	// Source 1: pushes, one frame per message.
	// Source 2: replies cmd 1 with sn 1..replies, 1 to 3 frames per message.
	var producers sync.WaitGroup
	errs := make(chan error, 2)
	producers.Go(func() {
		var msgs [][]byte
		for i := range pushes {
			msgs = append(msgs, outWrite(id, pushFrame(uint64(i))))
			if len(msgs) == 500 || i == pushes-1 {
				if err := lpushAll(ctx, rdb, key, msgs); err != nil {
					errs <- err
					return
				}
				msgs = msgs[:0]
			}
		}
	})
	producers.Go(func() {
		var msgs [][]byte
		for sn := uint32(1); sn <= replies; {
			var frames []byte
			for k := 0; k <= int(sn%3) && sn <= replies; k++ {
				frames = box.Append(frames, 1, box.RetOK, sn, []byte("reply"))
				sn++
			}
			msgs = append(msgs, outWrite(id, frames))
			if len(msgs) == 300 || sn > replies {
				if err := lpushAll(ctx, rdb, key, msgs); err != nil {
					errs <- err
					return
				}
				msgs = msgs[:0]
			}
		}
	})

	// The client sends frames meanwhile, in odd-sized chunks so that the
	// gateway sees partial and coalesced frames. No worker runs: they are
	// only queued in Redis.
	stopSend := make(chan struct{})
	var sent atomic.Int64
	var sender sync.WaitGroup
	sender.Go(func() {
		var buf []byte
		for sn := uint32(1); ; sn++ {
			select {
			case <-stopSend:
				return
			default:
			}
			buf = buf[:0]
			for k := range uint32(5) {
				buf = box.Append(buf, 1, 0, sn*5+k, []byte("echo me"))
			}
			_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			for b := buf; len(b) > 0; {
				n := min(37, len(b))
				if _, err := nc.Write(b[:n]); err != nil {
					errs <- err
					return
				}
				b = b[n:]
			}
			sent.Add(5)
			time.Sleep(time.Millisecond)
		}
	})

	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := box.NewReader(nc, 0)
	var nextPush uint64
	nextReply := uint32(1)
	for i := 0; i < pushes+replies; i++ {
		b, err := r.Next()
		if err != nil {
			t.Fatalf("after %d pushes and %d replies: %v (gateway stats: %s)", nextPush, nextReply-1, err, statsLine(gw))
		}
		switch b.Cmd {
		case 100:
			if got := binary.BigEndian.Uint64(b.Body); got != nextPush {
				t.Fatalf("push %d carries sequence %d: lost, duplicated or reordered", nextPush, got)
			}
			nextPush++
		case 1:
			if b.SN != nextReply || string(b.Body) != "reply" {
				t.Fatalf("reply %d: got sn %d body %q: lost, duplicated or reordered", nextReply, b.SN, b.Body)
			}
			nextReply++
		default:
			t.Fatalf("unexpected frame cmd=%d sn=%d", b.Cmd, b.SN)
		}
		if i%500 == 499 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	close(stopSend)
	sender.Wait()
	producers.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	expectNoMore(t, nc, r)

	// Every frame the client sent was read and queued, none misparsed.
	want := sent.Load()
	waitFor(t, 10*time.Second, "gateway to read every client frame", func() bool {
		return gw.Stats.FramesIn.Load() == want
	})
	if n := gw.Stats.BadFrames.Load(); n != 0 {
		t.Errorf("BadFrames = %d, want 0", n)
	}
	t.Logf("%d pushes + %d replies received in order while the client sent %d frames, in %v",
		pushes, replies, want, time.Since(start).Round(time.Millisecond))
}

// TestPushesTwoLoops: with two event loops (--loops 2) the connections
// sit on different loops, while the sweep runs on loop 0 for all of them.
// Pushes flow to both for a few sweeps (one a second): they must arrive in
// order, and under -race the sweep must not race with the other loop's
// wakes.
func TestPushesTwoLoops(t *testing.T) {
	const batches, perBatch = 30, 200 // a batch every 80 ms: about 2.5 s
	gw, rdb := startGateway(t, Options{OutBuffer: 64 << 20, Loops: 2})
	a, ida := dialConn(t, gw)
	b, idb := dialConn(t, gw)
	key := gw.keys.Outbound(gw.ID())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	wg.Go(func() {
		var seq uint64
		for range batches {
			var msgs [][]byte
			for range perBatch {
				msgs = append(msgs, outWrite(ida, pushFrame(seq)), outWrite(idb, pushFrame(seq)))
				seq++
			}
			if err := lpushAll(ctx, rdb, key, msgs); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(80 * time.Millisecond)
		}
	})
	for _, nc := range []net.Conn{a, b} {
		wg.Go(func() {
			_ = nc.SetReadDeadline(time.Now().Add(15 * time.Second))
			r := box.NewReader(nc, 0)
			for i := range uint64(batches * perBatch) {
				f, err := r.Next()
				if err != nil {
					t.Errorf("after %d pushes: %v", i, err)
					return
				}
				if got := binary.BigEndian.Uint64(f.Body); got != i {
					t.Errorf("push %d carries sequence %d", i, got)
					return
				}
				if i%100 == 99 {
					time.Sleep(2 * time.Millisecond) // slow readers: output waits in evio
				}
			}
		})
	}
	wg.Wait()
}

// TestSlowClientClosed: a client that never reads is dropped once its
// output passes OutBuffer; the gateway's memory stays bounded and other
// clients are unaffected.
func TestSlowClientClosed(t *testing.T) {
	const (
		body  = 4 << 10
		total = 20 << 20
		count = total / (box.HeaderLen + body)
	)
	gw, rdb := startGateway(t, Options{OutBuffer: 64 << 10})
	// A small receive buffer, so the socket fills sooner.
	slow, slowID := dialConnRcvBuf(t, gw, 16<<10)
	good, goodID := dialConn(t, gw)
	key := gw.keys.Outbound(gw.ID())

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	// Sample the heap while the output piles up.
	var peak atomic.Uint64
	stopSample := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stopSample:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})

	// One message per round trip while the client is connected, so the
	// output can fill the socket buffers before it piles up in the gateway;
	// pipelines once it is gone. The drop comes either from send (queued
	// output over OutBuffer before the loop took it) or from the loop
	// (evio's unsent output over OutBuffer, a write pending); both count as
	// SlowClosed. TestSlowWriteStallClosed forces the second kind.
	start := time.Now()
	payload := make([]byte, body)
	var msgs [][]byte
	for i := range count {
		binary.BigEndian.PutUint64(payload, uint64(i))
		msgs = append(msgs, outWrite(slowID, box.Append(nil, 100, 0, 0, payload)))
		batch := 1
		if gw.lookup(slowID) == nil {
			batch = 256
		}
		if len(msgs) >= batch || i == count-1 {
			if err := lpushAll(ctx, rdb, key, msgs); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	pushed := time.Since(start)

	waitFor(t, 10*time.Second, "gateway to drop the slow client", func() bool {
		return gw.lookup(slowID) == nil
	})
	closedAfter := time.Since(start)
	close(stopSample)
	sampler.Wait()
	waitFor(t, 5*time.Second, "Stats.SlowClosed == 1", func() bool {
		return gw.Stats.SlowClosed.Load() == 1
	})

	// The client gets what the socket buffers held, a prefix of the pushed
	// frames in order, then the end of the stream.
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := box.NewReader(slow, 0)
	var got int
	for {
		b, err := r.Next()
		if err != nil {
			if !isClosedErr(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("slow client after %d frames: %v, want EOF or reset", got, err)
			}
			break
		}
		if seq := binary.BigEndian.Uint64(b.Body); seq != uint64(got) {
			t.Fatalf("slow client: frame %d carries sequence %d", got, seq)
		}
		got++
	}
	if got >= count {
		t.Fatalf("slow client received all %d frames; it should have been dropped", got)
	}

	// Another client still gets its output.
	if err := lpushAll(ctx, rdb, key, [][]byte{outWrite(goodID, pushFrame(42))}); err != nil {
		t.Fatal(err)
	}
	_ = good.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := box.NewReader(good, 0).Next()
	if err != nil {
		t.Fatalf("other client: %v", err)
	}
	if b.Cmd != 100 || binary.BigEndian.Uint64(b.Body) != 42 {
		t.Fatalf("other client got cmd=%d body=%x, want push 42", b.Cmd, b.Body)
	}

	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := ms.HeapAlloc
	grow := int64(peak.Load()) - int64(base)
	t.Logf("pushed %d MiB in %v, slow client dropped after %v having drained %d frames (%.1f MiB); heap base %.1f MiB, peak +%.1f MiB, after GC %+.1f MiB",
		total>>20, pushed.Round(time.Millisecond), closedAfter.Round(time.Millisecond), got,
		float64(got*(box.HeaderLen+body))/(1<<20), mib(int64(base)), mib(grow), mib(int64(after)-int64(base)))
	if grow > 32<<20 {
		t.Errorf("heap grew by %.1f MiB while a client did not read, want < 32 MiB", mib(grow))
	}
}

// TestSlowWriteStallClosed: output that stops moving for WriteStall gets
// the client dropped, even below OutBuffer. The drop happens with output
// pending in evio, so evio reports a failed write (EPIPE) for it; the
// reason counted must still be the slow client.
func TestSlowWriteStallClosed(t *testing.T) {
	const (
		body  = 4 << 10
		total = 12 << 20 // more than the socket buffers hold (tcp_wmem max 4 MiB, rcvbuf 16 KiB)
		count = total / (box.HeaderLen + body)
	)
	gw, rdb := startGateway(t, Options{OutBuffer: 64 << 20, WriteStall: time.Second})
	slow, slowID := dialConnRcvBuf(t, gw, 16<<10)
	good, goodID := dialConn(t, gw)
	key := gw.keys.Outbound(gw.ID())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	start := time.Now()
	payload := make([]byte, body)
	var msgs [][]byte
	for i := range count {
		binary.BigEndian.PutUint64(payload, uint64(i))
		msgs = append(msgs, outWrite(slowID, box.Append(nil, 100, 0, 0, payload)))
		if len(msgs) == 64 || i == count-1 {
			if err := lpushAll(ctx, rdb, key, msgs); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	// The sweep looks once a second; the stall counts from the first
	// look that finds no progress.
	waitFor(t, 10*time.Second, "gateway to drop the stalled client", func() bool {
		return gw.lookup(slowID) == nil
	})
	took := time.Since(start)
	waitFor(t, 5*time.Second, "Stats.SlowClosed == 1", func() bool {
		return gw.Stats.SlowClosed.Load() == 1
	})

	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := box.NewReader(slow, 0)
	var got int
	for {
		b, err := r.Next()
		if err != nil {
			if !isClosedErr(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("stalled client after %d frames: %v, want EOF or reset", got, err)
			}
			break
		}
		if seq := binary.BigEndian.Uint64(b.Body); seq != uint64(got) {
			t.Fatalf("stalled client: frame %d carries sequence %d", got, seq)
		}
		got++
	}
	if got >= count {
		t.Fatalf("stalled client received all %d frames; it should have been dropped", got)
	}

	if err := lpushAll(ctx, rdb, key, [][]byte{outWrite(goodID, pushFrame(9))}); err != nil {
		t.Fatal(err)
	}
	_ = good.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := box.NewReader(good, 0).Next(); err != nil || b.Cmd != 100 {
		t.Fatalf("other client: frame cmd=%d err=%v, want the push", b.Cmd, err)
	}
	t.Logf("stalled client dropped %v after the pushes began, having drained %d frames (%.1f MiB)",
		took.Round(time.Millisecond), got, float64(got*(box.HeaderLen+body))/(1<<20))
}

// TestBadFrameClosesOnlyThatConnection: garbage closes its connection and
// nothing else.
func TestBadFrameClosesOnlyThatConnection(t *testing.T) {
	gw, rdb := startGateway(t, Options{})
	bad, _ := dialConn(t, gw)
	good, goodID := dialConn(t, gw)

	if _, err := good.Write(box.Append(nil, 1, 0, 1, []byte("before"))); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := bad.Read(make([]byte, 64)); !isClosedErr(err) {
		t.Fatalf("bad client read n=%d err=%v, want EOF or reset", n, err)
	}
	waitFor(t, 5*time.Second, "Stats.BadFrames == 1", func() bool { return gw.Stats.BadFrames.Load() == 1 })

	// The good connection is still served both ways.
	if _, err := good.Write(box.Append(nil, 1, 0, 2, []byte("after"))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	waitFor(t, 10*time.Second, "the good client's frames in its partition stream", func() bool {
		return len(queuedFrames(ctx, t, gw, rdb, goodID)) == 2
	})
	if got := queuedFrames(ctx, t, gw, rdb, goodID); string(got[0]) != "before" || string(got[1]) != "after" {
		t.Errorf("queued frames of the good client = %q, want [before after]", got)
	}
	if err := lpushAll(ctx, rdb, gw.keys.Outbound(gw.ID()), [][]byte{outWrite(goodID, pushFrame(7))}); err != nil {
		t.Fatal(err)
	}
	_ = good.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := box.NewReader(good, 0).Next(); err != nil || b.Cmd != 100 {
		t.Fatalf("good client: frame cmd=%d err=%v, want the push", b.Cmd, err)
	}
	if n := gw.Stats.BadFrames.Load(); n != 1 {
		t.Errorf("BadFrames = %d, want 1", n)
	}
	if n := gw.Stats.Conns.Load(); n != 1 {
		t.Errorf("Conns = %d, want 1", n)
	}
}

// TestIdleTimeout: a client that sends nothing is closed.
func TestIdleTimeout(t *testing.T) {
	gw, _ := startGateway(t, Options{IdleTimeout: time.Second})
	nc, id := dialConn(t, gw)
	start := time.Now()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := nc.Read(make([]byte, 64))
	took := time.Since(start)
	if !isClosedErr(err) {
		t.Fatalf("silent client read n=%d err=%v after %v, want EOF", n, err, took)
	}
	// The sweep runs once a second, so 1 s to 2 s plus scheduling; the
	// bound is loose for a busy machine.
	if took > 5*time.Second {
		t.Errorf("idle client closed after %v, want about 2 s", took)
	}
	waitFor(t, 5*time.Second, "Stats.IdleClosed == 1", func() bool { return gw.Stats.IdleClosed.Load() == 1 })
	if gw.lookup(id) != nil {
		t.Errorf("connection %s still registered", id)
	}
	t.Logf("idle client closed after %v", took.Round(time.Millisecond))
}

// startGateway runs a gateway on a fresh redis-server and stops it when
// the test ends. opts' Listen, Redis, Prefix and Logger are set here.
func startGateway(t *testing.T, opts Options) (*Server, *redis.Client) {
	t.Helper()
	srv := storetest.Start(t, storetest.Options{})
	opts.Listen = "127.0.0.1:0"
	opts.Redis = &redis.UniversalOptions{Addrs: []string{srv.Addr}}
	opts.Prefix = storetest.Prefix(t)
	opts.Logger = testLogger()
	gw, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	// Registered after storetest's cleanup, so it runs first: the gateway
	// stops while Redis is still up.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return 15 s after its ctx was cancelled")
		}
		_ = rdb.Close()
	})
	select {
	case <-gw.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("gateway not ready after 15 s")
	}
	return gw, rdb
}

// testLogger discards logs unless MAPLE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MAPLE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// dialConn connects a raw client and waits until the gateway registered
// it; it returns the connection and its id. Connections are numbered in
// the order the gateway opens them, so tests dial one at a time.
func dialConn(t *testing.T, gw *Server) (net.Conn, string) {
	t.Helper()
	return dialConnRcvBuf(t, gw, 0)
}

// dialConnRcvBuf is dialConn with the socket's receive buffer set to
// rcvbuf bytes before it connects (0: the system default).
func dialConnRcvBuf(t *testing.T, gw *Server, rcvbuf int) (net.Conn, string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	want := gw.Stats.Accepted.Load() + 1
	nc, err := d.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	waitFor(t, 10*time.Second, "gateway to open the connection", func() bool {
		return gw.Stats.Accepted.Load() >= want
	})
	id := gw.ID() + "-" + itoa(want)
	if gw.lookup(id) == nil {
		t.Fatalf("connection %s not registered", id)
	}
	return nc, id
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func pushFrame(seq uint64) []byte {
	var body [8]byte
	binary.BigEndian.PutUint64(body[:], seq)
	return box.Append(nil, 100, box.RetOK, 0, body[:])
}

func outWrite(conn string, frames []byte) []byte {
	return queue.AppendOut(nil, &queue.Out{Kind: queue.OutWrite, Conn: conn, Frames: frames})
}

// lpushAll LPUSHes msgs in order, in one pipeline, as workers do.
func lpushAll(ctx context.Context, rdb *redis.Client, key string, msgs [][]byte) error {
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range msgs {
			p.LPush(ctx, key, m)
		}
		return nil
	})
	return err
}

// queuedFrames returns the bodies of the frames of connection id in its
// partition stream.
func queuedFrames(ctx context.Context, t *testing.T, gw *Server, rdb *redis.Client, id string) [][]byte {
	t.Helper()
	var bodies [][]byte
	for _, b := range queuedBoxes(ctx, t, gw, rdb, id) {
		bodies = append(bodies, b.Body)
	}
	return bodies
}

// queuedBoxes returns the frames of connection id in its partition
// stream, in order.
func queuedBoxes(ctx context.Context, t *testing.T, gw *Server, rdb *redis.Client, id string) []box.Box {
	t.Helper()
	var frames []box.Box
	for p := range gw.parts {
		msgs, err := rdb.XRange(ctx, gw.keys.Inbound(p), "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE partition %d: %v", p, err)
		}
		for _, m := range msgs {
			raw, _ := m.Values["b"].(string) // a gateway's bundle of envelopes
			envs, err := queue.DecodeBundle([]byte(raw))
			if err != nil {
				t.Fatalf("partition %d entry %s: %v", p, m.ID, err)
			}
			for _, e := range envs {
				if e.Conn == id && e.Kind == queue.KindFrame {
					b, err := box.Decode(e.Frame)
					if err != nil {
						t.Fatalf("queued frame: %v", err)
					}
					frames = append(frames, b)
				}
			}
		}
	}
	return frames
}

// expectNoMore checks that nothing follows the expected frames.
func expectNoMore(t *testing.T, nc net.Conn, r *box.Reader) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := r.Next(); err == nil {
		t.Fatalf("extra frame after the expected ones: cmd=%d sn=%d body=%x", b.Cmd, b.SN, b.Body)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isClosedErr reports an error that means the peer closed or reset the
// connection (not a timeout).
func isClosedErr(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.EOF) {
		return true
	}
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func statsLine(gw *Server) string {
	s := &gw.Stats
	return "conns=" + itoa(s.Conns.Load()) + " framesOut=" + itoa(s.FramesOut.Load()) +
		" bytesOut=" + itoa(s.BytesOut.Load()) + " slowClosed=" + itoa(s.SlowClosed.Load()) +
		" redisErrs=" + itoa(s.RedisErrs.Load())
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
