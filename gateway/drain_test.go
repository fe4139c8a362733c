package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store/storetest"
)

// These tests check the drain of a stopping gateway (drain.go,
// docs/operations.md "What a client sees during a gateway roll") on a
// real redis-server, with no worker or a fake one.

// stoppableGateway runs a gateway on a fresh redis-server until stop is
// called; stop returns Run's error. Logs go to logs.
func stoppableGateway(t *testing.T, opts Options) (gw *Server, rdb *redis.Client, logs *storetest.Buffer, stop func() error) {
	t.Helper()
	srv := storetest.Start(t, storetest.Options{})
	logs = &storetest.Buffer{}
	opts.Listen = "127.0.0.1:0"
	opts.Redis = &redis.UniversalOptions{Addrs: []string{srv.Addr}}
	opts.Prefix = storetest.Prefix(t)
	opts.Logger = slogTo(logs)
	gw, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return 30 s after its ctx was cancelled")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = rdb.Close()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	select {
	case <-gw.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("gateway not ready after 15 s")
	}
	return gw, rdb, logs, stop
}

// frames reads nc's frames into a channel until the connection ends; the
// error that ended it is sent on the second channel.
func frames(nc net.Conn) (<-chan box.Box, <-chan error) {
	ch := make(chan box.Box, 1024)
	end := make(chan error, 1)
	go func() {
		r := box.NewReader(nc, 0)
		for {
			b, err := r.Next()
			if err != nil {
				close(ch)
				end <- err
				return
			}
			b.Body = append([]byte(nil), b.Body...)
			ch <- b
		}
	}()
	return ch, end
}

// next returns the next frame, failing the test if none comes within d.
func next(t *testing.T, ch <-chan box.Box, d time.Duration, what string) box.Box {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatalf("connection ended waiting for %s", what)
		}
		return b
	case <-time.After(d):
		t.Fatalf("no frame within %v waiting for %s", d, what)
	}
	panic("unreachable")
}

// TestDrainStopsTakingWorkThenAnswersThenCloses: on stop the gateway
// pushes the move frame at once and keeps taking frames for DrainTimeout;
// then it answers new frames RetMoved without queueing them, keeps the
// connection open while frames it took are unanswered, writes their
// answers when they come, and only then closes it.
func TestDrainStopsTakingWorkThenAnswersThenCloses(t *testing.T) {
	const drainTime = 600 * time.Millisecond
	gw, rdb, _, stop := stoppableGateway(t, Options{DrainTimeout: drainTime, CloseGrace: 10 * time.Second})
	nc, id := dialConn(t, gw)
	in, end := frames(nc)
	ctx := t.Context()
	send := func(sn uint32) {
		t.Helper()
		if _, err := nc.Write(box.Append(nil, 3, 0, sn, []byte("c"))); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	waitFor(t, 10*time.Second, "frame 1 queued", func() bool { return len(queuedFrames(ctx, t, gw, rdb, id)) == 1 })

	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- stop() }()
	m := next(t, in, 2*time.Second, "the move push")
	if m.Cmd != box.CmdMove || m.SN != 0 || m.Ret != 0 || len(m.Body) != 0 {
		t.Fatalf("first frame after the stop: cmd=%d sn=%d ret=%d body=%q, want the move push (cmd %d, sn 0)", m.Cmd, m.SN, m.Ret, m.Body, box.CmdMove)
	}
	if took := time.Since(start); took > drainTime/2 {
		t.Errorf("move push %v after the stop, want at once", took)
	}

	// During the drain time frames are still taken.
	send(2)
	waitFor(t, 5*time.Second, "frame 2 queued during the drain time", func() bool { return len(queuedFrames(ctx, t, gw, rdb, id)) == 2 })
	c := gw.lookup(id)
	if c == nil {
		t.Fatal("connection gone during the drain time")
	}
	waitFor(t, 5*time.Second, "the drain to stop taking work", func() bool { return c.stopped.Load() })
	if took := time.Since(start); took < drainTime {
		t.Errorf("stopped taking work %v after the stop, want after the drain time (%v)", took, drainTime)
	}

	// After it, a frame is answered RetMoved and not queued.
	send(3)
	if b := next(t, in, 2*time.Second, "the answer to frame 3"); b.SN != 3 || b.Cmd != 3 || b.Ret != box.RetMoved {
		t.Fatalf("frame 3 after the drain time: sn=%d cmd=%d ret=%d, want sn 3 cmd 3 ret %d", b.SN, b.Cmd, b.Ret, box.RetMoved)
	}
	time.Sleep(200 * time.Millisecond) // a frame taken would be in Redis by now
	if n := len(queuedFrames(ctx, t, gw, rdb, id)); n != 2 {
		t.Fatalf("%d frames queued, want 2: frame 3 came after the gateway stopped taking work", n)
	}

	// Frames 1 and 2 are owed: the connection stays open until they are
	// answered.
	select {
	case b := <-in:
		t.Fatalf("unexpected frame while owed answers: cmd=%d sn=%d ret=%d", b.Cmd, b.SN, b.Ret)
	case err := <-end:
		t.Fatalf("connection closed with 2 answers owed: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	out := gw.keys.Outbound(gw.ID())
	if err := lpushAll(ctx, rdb, out, [][]byte{outWriteAt(id, box.Append(nil, 3, 0, 1, []byte("1")))}); err != nil {
		t.Fatal(err)
	}
	if b := next(t, in, 5*time.Second, "the answer to frame 1"); b.SN != 1 || b.Ret != 0 || string(b.Body) != "1" {
		t.Fatalf("answer: sn=%d ret=%d body=%q, want sn 1", b.SN, b.Ret, b.Body)
	}
	select {
	case err := <-end:
		t.Fatalf("connection closed with frame 2 owed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := lpushAll(ctx, rdb, out, [][]byte{outWriteAt(id, box.Append(nil, 3, 0, 2, []byte("2")))}); err != nil {
		t.Fatal(err)
	}
	if b := next(t, in, 5*time.Second, "the answer to frame 2"); b.SN != 2 || b.Ret != 0 || string(b.Body) != "2" {
		t.Fatalf("answer: sn=%d ret=%d body=%q, want sn 2", b.SN, b.Ret, b.Body)
	}
	answered := time.Now()
	select {
	case err := <-end:
		if !isClosedErr(err) {
			t.Fatalf("connection ended with %v, want closed by the gateway", err)
		}
		if d := time.Since(answered); d > time.Second {
			t.Errorf("closed %v after its last answer, want soon", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open 5 s after every answer was written")
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := gw.Stats.MovesSent.Load(); got != 1 {
		t.Errorf("Stats.MovesSent = %d, want 1", got)
	}
	if got := gw.Stats.DrainRefused.Load(); got != 1 {
		t.Errorf("Stats.DrainRefused = %d, want 1", got)
	}
	if got := gw.Stats.DrainCutOff.Load(); got != 0 {
		t.Errorf("Stats.DrainCutOff = %d, want 0", got)
	}
}

// TestDrainCloseGraceCutOff: a connection still owed an answer
// CloseGrace after the drain time is closed anyway, logged once and
// counted; a connection owed nothing is closed at once, not logged.
func TestDrainCloseGraceCutOff(t *testing.T) {
	const grace = 700 * time.Millisecond
	gw, rdb, logs, stop := stoppableGateway(t, Options{CloseGrace: grace}) // no drain time
	owing, id := dialConn(t, gw)
	quiet, _ := dialConn(t, gw)
	owingIn, owingEnd := frames(owing)
	quietIn, quietEnd := frames(quiet)
	if _, err := owing.Write(box.Append(nil, 7, 0, 1, []byte("10000"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the frame queued", func() bool { return len(queuedFrames(t.Context(), t, gw, rdb, id)) == 1 })
	start := time.Now()
	go stop()
	for _, in := range []<-chan box.Box{owingIn, quietIn} {
		if m := next(t, in, 2*time.Second, "the move push"); m.Cmd != box.CmdMove || m.SN != 0 {
			t.Fatalf("got cmd=%d sn=%d, want the move push", m.Cmd, m.SN)
		}
	}
	select {
	case <-quietEnd:
		if d := time.Since(start); d > grace/2 {
			t.Errorf("connection owed nothing closed %v after the stop, want at once", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection owed nothing not closed")
	}
	select {
	case err := <-owingEnd:
		if d := time.Since(start); d < grace {
			t.Errorf("connection owed an answer closed %v after the stop (%v), before --close-grace (%v)", d, err, grace)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection owed an answer still open 10 s after the stop")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := gw.Stats.DrainCutOff.Load(); got != 1 {
		t.Errorf("Stats.DrainCutOff = %d, want 1", got)
	}
	if n := strings.Count(logs.String(), "drain: --close-grace over"); n != 1 {
		t.Errorf("%d cut-off log lines, want 1 (for the one connection owed an answer):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), id) {
		t.Errorf("the cut-off line does not name connection %s", id)
	}
}

// TestDrainRunsNothingUnanswered is the race of a rolling restart: 16
// clients each send one request at a time, a fake worker answers every
// frame it finds queued, and the gateway stops. Every frame the gateway
// queued (one the workers may run) was answered to its client before the
// close; every other frame got RetMoved or was never read.
func TestDrainRunsNothingUnanswered(t *testing.T) {
	gw, rdb, _, stop := stoppableGateway(t, Options{DrainTimeout: 300 * time.Millisecond, CloseGrace: 10 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go fakeWorker(ctx, gw, rdb)

	const clients = 16
	type result struct {
		id              string
		answered, moved map[uint32]bool
		err             error
	}
	results := make(chan result, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		nc, id := dialConn(t, gw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := result{id: id, answered: map[uint32]bool{}, moved: map[uint32]bool{}}
			defer func() { results <- res }()
			r := box.NewReader(nc, 0)
			_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
			for sn := uint32(1); ; sn++ {
				if _, err := nc.Write(box.Append(nil, 3, 0, sn, []byte("c"))); err != nil {
					return // closed: sn was not sent whole, or never read
				}
				for {
					b, err := r.Next()
					if err != nil {
						if !isClosedErr(err) {
							res.err = err
						}
						return
					}
					if b.SN == 0 {
						continue // the move push; this client does not move
					}
					if b.SN != sn {
						res.err = errors.New("answer to another sn")
						return
					}
					if b.Ret == box.RetMoved {
						res.moved[sn] = true
					} else {
						res.answered[sn] = true
					}
					break
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	wg.Wait()
	close(results)
	total, moved := 0, 0
	for res := range results {
		if res.err != nil {
			t.Errorf("client %s: %v", res.id, res.err)
		}
		sns := queuedSNs(ctx, t, gw, rdb, res.id)
		for sn := range sns {
			if !res.answered[sn] {
				t.Errorf("client %s: frame sn %d was queued (a worker runs it) but its answer never reached the client", res.id, sn)
			}
			if res.moved[sn] {
				t.Errorf("client %s: frame sn %d was queued and answered RetMoved", res.id, sn)
			}
		}
		for sn := range res.answered {
			if !sns[sn] {
				t.Errorf("client %s: sn %d answered but not queued", res.id, sn)
			}
		}
		total += len(res.answered)
		moved += len(res.moved)
	}
	if total < clients {
		t.Errorf("%d requests answered, want some per client", total)
	}
	if got := gw.Stats.DrainCutOff.Load(); got != 0 {
		t.Errorf("Stats.DrainCutOff = %d, want 0", got)
	}
	t.Logf("%d requests answered, %d answered RetMoved, by %d clients", total, moved, clients)
}

// queuedSNs returns the sns of the frames of connection id in its
// partition stream.
func queuedSNs(ctx context.Context, t *testing.T, gw *Server, rdb *redis.Client, id string) map[uint32]bool {
	t.Helper()
	sns := map[uint32]bool{}
	for _, b := range queuedBoxes(ctx, t, gw, rdb, id) {
		if sns[b.SN] {
			t.Errorf("connection %s: sn %d queued twice", id, b.SN)
		}
		sns[b.SN] = true
	}
	return sns
}

// fakeWorker answers every frame queued on gw's partition streams (the
// body of the answer is empty), until ctx ends.
func fakeWorker(ctx context.Context, gw *Server, rdb *redis.Client) {
	last := make([]string, gw.parts)
	for i := range last {
		last[i] = "-"
	}
	out := gw.keys.Outbound(gw.ID())
	for ctx.Err() == nil {
		var replies [][]byte
		for p := range gw.parts {
			from := last[p]
			if from != "-" {
				from = "(" + from
			}
			msgs, err := rdb.XRange(ctx, gw.keys.Inbound(p), from, "+").Result()
			if err != nil {
				continue
			}
			for _, m := range msgs {
				last[p] = m.ID
				raw, _ := m.Values["b"].(string)
				envs, err := queue.DecodeBundle([]byte(raw))
				if err != nil {
					continue
				}
				for _, e := range envs {
					if e.Kind != queue.KindFrame {
						continue
					}
					h, _ := box.ParseHeader(e.Frame)
					replies = append(replies, outWriteAt(e.Conn, box.Append(nil, h.Cmd, 0, h.SN, nil)))
				}
			}
		}
		if len(replies) > 0 {
			_ = lpushAll(ctx, rdb, out, replies)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// slogTo is a debug logger writing text to w (and to stderr with
// MAPLE_TEST_LOG).
func slogTo(w *storetest.Buffer) *slog.Logger {
	var out io.Writer = w
	if os.Getenv("MAPLE_TEST_LOG") != "" {
		out = io.MultiWriter(w, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestDrainKickWaitsForAnswers: a worker's close (a kick: the client
// moved and logged in on the new gateway) of a connection of a draining
// gateway stops taking its work at once, but closes it only once the
// frames it took were answered, before the drain time is over.
func TestDrainKickWaitsForAnswers(t *testing.T) {
	const drainTime = 3 * time.Second
	gw, rdb, _, stop := stoppableGateway(t, Options{DrainTimeout: drainTime})
	nc, id := dialConn(t, gw)
	in, end := frames(nc)
	ctx := t.Context()
	if _, err := nc.Write(box.Append(nil, 7, 0, 1, []byte("500"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "frame 1 queued", func() bool { return len(queuedFrames(ctx, t, gw, rdb, id)) == 1 })
	start := time.Now()
	go stop()
	if m := next(t, in, 2*time.Second, "the move push"); m.Cmd != box.CmdMove {
		t.Fatalf("got cmd %d, want the move push", m.Cmd)
	}
	out := gw.keys.Outbound(gw.ID())
	kick := queue.AppendOut(nil, &queue.Out{Kind: queue.OutClose, Conn: id})
	if err := lpushAll(ctx, rdb, out, [][]byte{kick}); err != nil {
		t.Fatal(err)
	}
	c := gw.lookup(id)
	waitFor(t, 5*time.Second, "the kick to stop taking work", func() bool { return c.stopped.Load() })
	if _, err := nc.Write(box.Append(nil, 7, 0, 2, []byte("1"))); err != nil {
		t.Fatal(err)
	}
	if b := next(t, in, 2*time.Second, "the answer to frame 2"); b.SN != 2 || b.Ret != box.RetMoved {
		t.Fatalf("frame 2 after the kick: sn=%d ret=%d, want RetMoved", b.SN, b.Ret)
	}
	select {
	case err := <-end:
		t.Fatalf("kicked connection closed with frame 1 owed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := lpushAll(ctx, rdb, out, [][]byte{outWriteAt(id, box.Append(nil, 7, 0, 1, []byte("500")))}); err != nil {
		t.Fatal(err)
	}
	if b := next(t, in, 5*time.Second, "the answer to frame 1"); b.SN != 1 || b.Ret != 0 {
		t.Fatalf("answer: sn=%d ret=%d, want sn 1 ret 0", b.SN, b.Ret)
	}
	select {
	case err := <-end:
		if !isClosedErr(err) {
			t.Fatalf("connection ended with %v", err)
		}
		if d := time.Since(start); d >= drainTime {
			t.Errorf("kicked connection closed %v after the stop: at the drain time (%v), not once answered", d, drainTime)
		}
	case <-time.After(drainTime):
		t.Fatal("kicked connection not closed once answered")
	}
	if n := len(queuedFrames(ctx, t, gw, rdb, id)); n != 1 {
		t.Errorf("%d frames queued, want 1", n)
	}
}
