package worker

// Tests of issue 11, "one player never hurts another", on the worker side:
// fair admission, frames of closed connections, completion signals,
// bounded frames, names and writes, logs that cannot be flooded, and a
// shutdown that ends while Redis is away.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

// realRedis starts a redis-server for the test.
func realRedis(t *testing.T) (*storetest.Server, *redis.UniversalOptions) {
	srv := storetest.Start(t, storetest.Options{})
	return srv, &redis.UniversalOptions{Addrs: []string{srv.Addr}}
}

// queuer enqueues envelopes of gateway gw straight into the farm's
// streams, as a gateway's pusher does, with a sequence number per
// connection.
type queuer struct {
	t     *testing.T
	st    *queue.Broker
	gw    string
	parts int
	seq   map[string]uint64
}

func newQueuer(t *testing.T, st *queue.Broker, gw string, parts int) *queuer {
	return &queuer{t: t, st: st, gw: gw, parts: parts, seq: make(map[string]uint64)}
}

// env encodes the next envelope of conn: a frame of cmd with body, or an
// event of kind (Open, Close) when cmd < 0.
func (q *queuer) env(conn string, kind Kind, cmd int32, body string, uid string) []byte {
	q.seq[conn]++
	e := queue.Envelope{Kind: queue.Kind(kind), Seq: q.seq[conn], At: time.Now().UnixNano(), Gateway: q.gw, Conn: conn,
		Addr: "127.0.0.1:9", UID: uid}
	if kind == Frame {
		e.Frame = box.Append(nil, cmd, 0, uint32(q.seq[conn]), []byte(body))
	}
	return queue.AppendEnvelope(nil, &e)
}

// put queues envs as one bundle on conn's partition (all envs must be of
// connections of one partition).
func (q *queuer) put(conn string, envs ...[]byte) {
	q.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b := queue.PartBatch{Part: queue.PartitionOf(conn, q.parts), Envelopes: envs}
	if err := q.st.Enqueue(ctx, q.gw, []queue.PartBatch{b}, 0); err != nil {
		q.t.Fatal(err)
	}
}

// repliesTo returns the frames the outbound list of q's gateway holds for
// conn, in order (completion signals, which have none, left out).
func (q *queuer) repliesTo(conn string) []box.Box {
	var out []box.Box
	for _, m := range outboundMessages(q.t, q.st, q.gw) {
		if m.Conn != conn || m.Kind != queue.OutWrite {
			continue
		}
		for rest := m.Frames; len(rest) > 0; {
			f, err := box.Split(rest, 0)
			if err != nil || f == nil {
				q.t.Fatalf("outbound frames %x: %v", m.Frames, err)
			}
			b, _ := box.Decode(f)
			out = append(out, b)
			rest = rest[len(f):]
		}
	}
	return out
}

// pending counts partition p's entries read and not acknowledged.
func pending(t *testing.T, st *queue.Broker, p int) int64 {
	pend, err := st.Client().XPending(t.Context(), st.Keys.Inbound(p), keys.ConsumerGroup).Result()
	if err != nil {
		t.Fatal(err)
	}
	return pend.Count
}

// TestFairAdmission: one connection queues 600 frames of a 100 ms route
// (60 s of serial work) ahead of another connection's frame on the same
// partition. The worker's room counts connections, not envelopes, so the
// other frame is read and answered at once, not after the backlog.
func TestFairAdmission(t *testing.T) {
	_, ro := realRedis(t)
	const parts = 1
	app := NewApp()
	var slow atomic.Int64
	app.Route(7, func(ctx context.Context, r *Request) error {
		slow.Add(1)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return r.Reply(nil)
	})
	app.Route(1, func(ctx context.Context, r *Request) error { return r.Reply(r.Box.Body) })
	f := newTestFarm(t, ro, parts)
	// The default concurrency (64): 600 frames are within the caps on
	// what a worker holds (64 x 64 envelopes); gateways bound each
	// connection's frames in flight far below that.
	w := f.worker(app, func(o *Options) { o.ShutdownTimeout = time.Second })
	q := newQueuer(t, f.store(), "gwx", parts)

	// Bundles of 20, as a gateway's round trips would queue them.
	for range 30 {
		var envs [][]byte
		for range 20 {
			envs = append(envs, q.env("gwx-hog", Frame, 7, "", ""))
		}
		q.put("gwx-hog", envs...)
	}
	waitFor(t, 5*time.Second, "the backlog to start", func() bool { return slow.Load() > 0 })
	start := time.Now()
	q.put("gwx-other", q.env("gwx-other", Frame, 1, "hi", ""))
	waitFor(t, 5*time.Second, "the other connection's reply", func() bool { return len(q.repliesTo("gwx-other")) == 1 })
	if took := time.Since(start); took > time.Second {
		t.Errorf("the other connection waited %v behind one connection's backlog, want < 1s", took)
	}
	if got := q.repliesTo("gwx-other"); string(got[0].Body) != "hi" {
		t.Errorf("reply %+v, want hi", got[0])
	}
	if n := slow.Load(); n >= 600 {
		t.Errorf("the whole backlog (%d frames) ran first", n)
	}
	if n := w.Stats.InFlight.Load(); n > int64(w.dispatch.maxHeld())+20 {
		t.Errorf("%d envelopes held, want at most %d and one bundle", n, w.dispatch.maxHeld())
	}
}

// TestHeldCaps: a connection whose frames do not finish makes the worker
// read on (it holds one place of the room), but only up to the hard caps:
// 64 x Concurrency envelopes, and MaxHeldBytes of them. Once they finish,
// reading resumes.
func TestHeldCaps(t *testing.T) {
	_, ro := realRedis(t)
	const parts = 1
	const frames = 500
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		body int
		ok   func(w *runningWorker) error
	}{
		{"envelopes", func(o *Options) { o.Concurrency = 1 }, 10, func(w *runningWorker) error {
			if n := w.Stats.InFlight.Load(); n > int64(w.dispatch.maxHeld())+10 {
				return fmt.Errorf("%d envelopes held, want at most %d and one bundle", n, w.dispatch.maxHeld())
			}
			return nil
		}},
		{"bytes", func(o *Options) { o.Concurrency = 16; o.MaxHeldBytes = 32 << 10 }, 1000, func(w *runningWorker) error {
			if n := w.Stats.HeldBytes.Load(); n > 32<<10+10*(1100+envelopeOverhead) {
				return fmt.Errorf("%d bytes held, want at most %d and one bundle", n, 32<<10)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var ran atomic.Int64
			app := NewApp()
			app.Route(1, func(ctx context.Context, r *Request) error {
				<-release
				ran.Add(1)
				return r.Reply(nil)
			})
			f := newTestFarm(t, ro, parts)
			w := f.worker(app, func(o *Options) { tc.mod(o); o.ShutdownTimeout = time.Second })
			q := newQueuer(t, f.store(), "gwx", parts)
			body := strings.Repeat("b", tc.body)
			for range frames / 10 {
				var envs [][]byte
				for range 10 {
					envs = append(envs, q.env("gwx-1", Frame, 1, body, ""))
				}
				q.put("gwx-1", envs...)
			}
			waitFor(t, 5*time.Second, "reading to start", func() bool { return w.Stats.InFlight.Load() > 0 })
			time.Sleep(700 * time.Millisecond) // reads the worker would make if it had room
			if err := tc.ok(w); err != nil {
				t.Error(err)
			}
			if n := w.Stats.InFlight.Load(); n >= frames {
				t.Errorf("all %d frames held", n)
			}
			close(release)
			waitFor(t, 10*time.Second, "every frame to run", func() bool { return ran.Load() == frames })
			waitFor(t, 5*time.Second, "nothing held", func() bool {
				return w.Stats.InFlight.Load() == 0 && w.Stats.HeldBytes.Load() == 0
			})
		})
	}
}

// TestClosedConnectionFramesDropped: a connection's close event is read
// while 49 of its frames wait behind a running one. They are dropped unrun
// (the client left; nobody reads their answers) and counted; the close
// event still runs, so the session is unbound; everything is acknowledged
// and leaves the gateway's frame count.
func TestClosedConnectionFramesDropped(t *testing.T) {
	_, ro := realRedis(t)
	const parts = 4
	release, started := make(chan struct{}), make(chan struct{}, 1)
	app, ran := recordingApp(func(r *Request) []byte {
		if string(r.Box.Body) == "first" {
			started <- struct{}{}
			<-release
		}
		return nil
	})
	var closed atomic.Int64
	app.OnClose(func(ctx context.Context, r *Request) error { closed.Add(1); return nil })
	f := newTestFarm(t, ro, parts)
	w := f.worker(app, nil)
	st := f.store()
	q := newQueuer(t, st, "gwx", parts)
	const conn = "gwx-1"
	ctx := t.Context()
	if _, err := store.New(st.Client(), st.Keys.Prefix).BindUser(ctx, "u1", store.Session{Gateway: "gwx", Conn: conn}, store.Kick); err != nil {
		t.Fatal(err)
	}

	q.put(conn, q.env(conn, Frame, 1, "first", "u1"))
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the first frame did not start")
	}
	var envs [][]byte
	for i := range 49 {
		envs = append(envs, q.env(conn, Frame, 1, strconv.Itoa(i), "u1"))
	}
	envs = append(envs, q.env(conn, Close, 0, "", "u1"))
	q.put(conn, envs...)
	waitFor(t, 5*time.Second, "the close event to be read", func() bool { return w.Stats.InFlight.Load() == 51 })
	close(release)

	waitFor(t, 5*time.Second, "the close event to run", func() bool { return closed.Load() == 1 })
	p := queue.PartitionOf(conn, parts)
	waitFor(t, 5*time.Second, "every entry to be acknowledged", func() bool { return pending(t, st, p) == 0 })
	if got := ran(); got != "[first]" {
		t.Errorf("ran %s, want [first]: the frames queued behind it belong to a closed connection", got)
	}
	if n := w.Stats.ClosedDropped.Load(); n != 49 {
		t.Errorf("Stats.ClosedDropped = %d, want 49", n)
	}
	if _, err := store.New(st.Client(), st.Keys.Prefix).SessionOf(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of u1 after the close: %v, want none", err)
	}
	if n, err := st.Queued(ctx, "gwx"); err != nil || n != 0 {
		t.Errorf("Queued(gwx) = %d, %v; want 0", n, err)
	}
	if got := q.repliesTo(conn); len(got) != 1 {
		t.Errorf("%d replies, want 1 (the first frame's)", len(got))
	}
}

// TestCompletionSignal: a frame handled without a reply sends its gateway
// an OutWrite with no frames and the envelope's At, so the gateway's count
// of the connection's frames in flight drops; a frame answered sends no
// extra message, and events other than frames send none.
func TestCompletionSignal(t *testing.T) {
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error { return nil })
	app.Route(2, func(ctx context.Context, r *Request) error { return ErrStop })
	app.Route(3, func(ctx context.Context, r *Request) error { return r.Reply([]byte("x")) })
	app.Route(4, func(ctx context.Context, r *Request) error {
		_ = r.Reply(make([]byte, DefaultMaxFrame)) // refused, and ignored
		return nil
	})
	w := newTestWorker(t, app)
	callNoReply(t, w, 1, "")
	callNoReply(t, w, 2, "")
	callNoReply(t, w, 4, "")
	if ret, body := call(t, w, 3, ""); ret != 0 || body != "x" {
		t.Errorf("cmd 3: ret %d body %q", ret, body)
	}
	handleEnv(w, queue.Envelope{Kind: queue.Kind(System), Frame: box.Append(nil, 1, 0, 0, nil)})
	if msgs, _ := outs(t, w); len(msgs) != 0 {
		t.Errorf("a system frame sent %+v", msgs)
	}
}

// TestOversizeRefused: a reply or push whose frame (header and body) is
// over MaxFrame sends nothing and returns ErrFrameTooLarge; it is counted.
// A handler that returns the error has its client answered -10001; a
// frame of exactly MaxFrame goes.
func TestOversizeRefused(t *testing.T) {
	const max = 1000
	big := make([]byte, max-box.HeaderLen+1)
	fits := make([]byte, max-box.HeaderLen)
	var errs []error
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error {
		errs = append(errs, r.Push(100, big))
		_, err := r.PushUsers(ctx, []string{"u1"}, 100, big)
		errs = append(errs, err)
		_, err = r.PushGroup(ctx, "g", 100, big)
		errs = append(errs, err)
		errs = append(errs, r.Broadcast(ctx, 100, big))
		errs = append(errs, r.Reply(big))
		if r.Replied() {
			t.Error("Replied() after a refused reply")
		}
		return r.Reply(fits)
	})
	app.Route(2, func(ctx context.Context, r *Request) error { return r.Reply(big) })
	w := newTestWorker(t, app)
	w.out.maxFrame = max
	if ret, body := call(t, w, 1, ""); ret != 0 || len(body) != len(fits) {
		t.Errorf("cmd 1: ret %d, %d bytes; want 0 and %d bytes", ret, len(body), len(fits))
	}
	for i, err := range errs {
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("call %d: err %v, want ErrFrameTooLarge", i, err)
		}
	}
	if ret, _ := call(t, w, 2, ""); ret != box.RetHandlerFailed {
		t.Errorf("cmd 2 (returns ErrFrameTooLarge): ret %d, want %d", ret, box.RetHandlerFailed)
	}
	if n := w.Stats.OversizeRefused.Load(); n != 6 {
		t.Errorf("Stats.OversizeRefused = %d, want 6", n)
	}
}

// TestLoginNameTooLong: Login refuses a user id over store.MaxNameLen
// before it reaches Redis (the test worker has none), with an error that
// says so; a route that returns it has its client answered -10001, and the
// log says why.
func TestLoginNameTooLong(t *testing.T) {
	var loginErr error
	app := NewApp()
	app.Route(2, func(ctx context.Context, r *Request) error {
		loginErr = r.Login(ctx, string(r.Box.Body))
		return loginErr
	})
	w := newTestWorker(t, app)
	var logs storetest.Buffer
	w.proc.logs = newLimiter(&logs)
	if ret, _ := call(t, w, 2, strings.Repeat("u", store.MaxNameLen+1)); ret != box.RetHandlerFailed {
		t.Errorf("ret %d, want %d", ret, box.RetHandlerFailed)
	}
	if !errors.Is(loginErr, store.ErrNameTooLong) {
		t.Errorf("Login: %v, want ErrNameTooLong", loginErr)
	}
	if !strings.Contains(logs.String(), "name longer than 128 bytes") {
		t.Errorf("log does not say why the login failed:\n%s", logs.String())
	}
}

func newLimiter(out *storetest.Buffer) *ratelog.Limiter {
	return ratelog.New(slog.New(slog.NewTextHandler(out, nil)), ratelog.DefaultBurst, ratelog.DefaultEvery)
}

// TestPanicLogBounded: 20,000 frames of a panicking route are all answered
// -10001 and counted, but the log gets a stack trace per interval, and
// counts: it stays small.
func TestPanicLogBounded(t *testing.T) {
	_, ro := realRedis(t)
	const parts = 2
	const frames = 20000
	app := NewApp()
	app.Route(8, func(ctx context.Context, r *Request) error { panic("cmd 8 panics on purpose") })
	var logs storetest.Buffer
	f := newTestFarm(t, ro, parts)
	w := f.worker(app, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	q := newQueuer(t, f.store(), "gwx", parts)
	for c := range 40 {
		conn := "gwx-" + strconv.Itoa(c)
		var envs [][]byte
		for range frames / 40 {
			envs = append(envs, q.env(conn, Frame, 8, "", ""))
		}
		q.put(conn, envs...)
	}
	waitFor(t, 60*time.Second, "every frame to fail", func() bool { return w.Stats.Failed.Load() == frames })
	if n := logs.Len(); n > 200<<10 {
		t.Errorf("the log grew by %d bytes for %d panics, want < 200 KB", n, frames)
	}
	if !strings.Contains(logs.String(), "cmd 8 panics on purpose") || !strings.Contains(logs.String(), "stack=") {
		t.Errorf("the log lacks the panic and its stack:\n%.2000s", logs.String())
	}
	t.Logf("%d panics: %d bytes of log", frames, logs.Len())
}

// TestWriteBudgetSplits: a handler's 200 pushes of about 500 bytes make
// more than a small write budget allows in one list element or pipeline:
// they are split, every element stays within the budget, and all arrive
// in order, before the reply.
func TestWriteBudgetSplits(t *testing.T) {
	_, ro := realRedis(t)
	const parts = 1
	const pushes = 200
	const budget = 6000
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error {
		for i := range pushes {
			if err := r.Push(100, []byte(fmt.Sprintf("%04d%s", i, strings.Repeat("p", 500)))); err != nil {
				return err
			}
		}
		return r.Reply([]byte("done"))
	})
	f := newTestFarm(t, ro, parts)
	w := f.worker(app, func(o *Options) { o.MaxFrame = 1024; o.WriteBudget = budget })
	st := f.store()
	q := newQueuer(t, st, "gwx", parts)
	writes := w.Stats.Writes.Load()
	q.put("gwx-1", q.env("gwx-1", Frame, 1, "", ""))
	waitFor(t, 5*time.Second, "the reply", func() bool {
		got := q.repliesTo("gwx-1")
		return len(got) > 0 && got[len(got)-1].Cmd == 1
	})
	raw, err := st.Client().LRange(t.Context(), st.Keys.Outbound("gwx"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range raw {
		if len(e) > budget {
			t.Errorf("a list element of %d bytes, over the budget of %d", len(e), budget)
		}
	}
	if len(raw) < pushes*500/budget {
		t.Errorf("%d list elements, want the pushes split in at least %d", len(raw), pushes*500/budget)
	}
	got := q.repliesTo("gwx-1")
	if len(got) != pushes+1 {
		t.Fatalf("%d frames, want %d pushes and the reply", len(got), pushes)
	}
	for i, b := range got[:pushes] {
		if n, _ := strconv.Atoi(string(b.Body[:4])); b.Cmd != 100 || n != i {
			t.Fatalf("frame %d is push %d (cmd %d): out of order", i, n, b.Cmd)
		}
	}
	if n := w.Stats.Writes.Load() - writes; n < int64(pushes*500/budget) {
		t.Errorf("%d pipelines, want at least %d", n, pushes*500/budget)
	}
	waitFor(t, 5*time.Second, "the entry to be acknowledged", func() bool { return pending(t, st, 0) == 0 })
}

// TestRefusedWriteNotRetried: a write Redis refuses for its content (here
// the gateway's outbound key holds a string: WRONGTYPE) is counted and
// logged once per interval, not retried; the writer goes on, the entry
// is acknowledged, and other gateways' replies arrive.
func TestRefusedWriteNotRetried(t *testing.T) {
	_, ro := realRedis(t)
	const parts = 1
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error { return r.Reply(r.Box.Body) })
	var logs storetest.Buffer
	f := newTestFarm(t, ro, parts)
	w := f.worker(app, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	st := f.store()
	if err := st.Client().Set(t.Context(), st.Keys.Outbound("gwbad"), "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	bad, good := newQueuer(t, st, "gwbad", parts), newQueuer(t, st, "gwok", parts)
	for range 20 {
		bad.put("gwbad-1", bad.env("gwbad-1", Frame, 1, "x", ""))
	}
	good.put("gwok-1", good.env("gwok-1", Frame, 1, "y", ""))
	waitFor(t, 5*time.Second, "the good gateway's reply", func() bool { return len(good.repliesTo("gwok-1")) == 1 })
	waitFor(t, 5*time.Second, "every entry to be acknowledged", func() bool { return pending(t, st, 0) == 0 })
	if n := w.Stats.RefusedWrites.Load(); n < 1 || n > 20 {
		t.Errorf("Stats.RefusedWrites = %d, want 1 to 20 (one per refused LPUSH)", n)
	}
	if n := strings.Count(logs.String(), "redis refused a write"); n < 1 || n > 5 {
		t.Errorf("%d log lines about the refused write, want 1 to 5:\n%s", n, logs.String())
	}
}

// TestShutdownDuringOutage: Redis dies while the worker holds frames: one
// handler retries its Redis call, one ignores its ctx, one pushes more
// than the writer's queue holds. Run still returns within
// ShutdownTimeout + 1 s of its ctx being cancelled.
func TestShutdownDuringOutage(t *testing.T) {
	srv, ro := realRedis(t)
	const parts = 2
	down := make(chan struct{})
	stuck := make(chan struct{})
	defer close(stuck)
	var started atomic.Int64
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error { // Redis, retried while it is away
		started.Add(1)
		<-down
		_, err := r.Store.IncrCounter(ctx, "n", 1)
		return err
	})
	app.Route(2, func(ctx context.Context, r *Request) error { // ignores its ctx
		started.Add(1)
		<-stuck
		return nil
	})
	app.Route(3, func(ctx context.Context, r *Request) error { // fills the writer's queue
		started.Add(1)
		<-down
		for range maxQueued + 100 {
			_ = r.Push(100, nil)
		}
		return nil
	})
	f := newTestFarm(t, ro, parts)
	const shutdown = 2 * time.Second
	w := f.worker(app, func(o *Options) { o.ShutdownTimeout = shutdown; o.Concurrency = 8 })
	q := newQueuer(t, f.store(), "gwx", parts)
	for c := range 6 {
		conn := "gwx-" + strconv.Itoa(c)
		q.put(conn, q.env(conn, Frame, int32(1+c%3), "", ""), q.env(conn, Frame, 1, "", ""))
	}
	waitFor(t, 5*time.Second, "the handlers to start", func() bool { return started.Load() == 6 })
	srv.Kill()
	close(down)
	time.Sleep(100 * time.Millisecond) // the handlers meet the outage
	start := time.Now()
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > shutdown+time.Second {
		t.Errorf("Run returned %v after its ctx was cancelled, want within %v", took, shutdown+time.Second)
	}
	t.Logf("Run returned %v after its ctx was cancelled, Redis away", took)
}

// TestForgetClosed: the sequence marks of connections closed over
// forgetClosedAfter ago go; the others stay.
func TestForgetClosed(t *testing.T) {
	w := newTestWorker(t, NewApp())
	w.marks.lastSeq["old"] = seqMark{seq: 3, closed: time.Now().Add(-2 * forgetClosedAfter)}
	w.marks.lastSeq["recent"] = seqMark{seq: 3, closed: time.Now()}
	w.marks.lastSeq["open"] = seqMark{seq: 3}
	w.marks.forgetClosed()
	if _, ok := w.marks.lastSeq["old"]; ok || len(w.marks.lastSeq) != 2 {
		t.Errorf("marks left %v, want recent and open", w.marks.lastSeq)
	}
}
