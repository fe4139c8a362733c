package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
)

// newTestWorker returns a Worker with no Redis whose writer only queues:
// the test reads what handlers sent with outs.
func newTestWorker(t *testing.T, app *App) *Worker {
	t.Helper()
	o := Options{Logger: slog.New(slog.DiscardHandler)}.withDefaults()
	w := newWorker(app, o, o.Logger)
	w.build(nil, nil, nil, 0, false)
	w.table.add(0) // the tests' deliveries are of partition 0
	return w
}

// sent is one outbound message a test worker queued, decoded.
type sent struct {
	gw     string
	out    queue.Out
	frames []box.Box // the frames of an OutWrite
}

// outs drains the test worker's writer: the outbound messages in order,
// and how many acknowledgements were queued.
func outs(t *testing.T, w *Worker) (msgs []sent, acks int) {
	t.Helper()
	for _, op := range w.outbox.take(nil) {
		{
			if op.ack != nil {
				acks++
				continue
			}
			if op.gw == "" || op.conn != "" {
				continue // a barrier, or a handled mark
			}
			m, err := queue.DecodeOut(op.payload)
			if err != nil {
				t.Fatalf("outbound message to %s: %v", op.gw, err)
			}
			s := sent{gw: op.gw, out: m}
			for rest := m.Frames; len(rest) > 0; {
				f, err := box.Split(rest, 0)
				if err != nil || f == nil {
					t.Fatalf("outbound frames %x: %v", m.Frames, err)
				}
				b, err := box.Decode(f)
				if err != nil {
					t.Fatal(err)
				}
				s.frames = append(s.frames, b)
				rest = rest[len(f):]
			}
			msgs = append(msgs, s)
		}
	}
	return msgs, acks
}

// replies returns the frames written to clients, in order.
func replies(t *testing.T, w *Worker) []box.Box {
	t.Helper()
	msgs, _ := outs(t, w)
	var bs []box.Box
	for _, m := range msgs {
		if m.out.Kind != queue.OutWrite {
			t.Errorf("outbound message of kind %d, want only writes", m.out.Kind)
		}
		bs = append(bs, m.frames...)
	}
	return bs
}

// frameEnv is a client frame from connection c1 on gateway gw1.
func frameEnv(cmd int32, sn uint32, body string) queue.Envelope {
	return queue.Envelope{Kind: queue.Kind(Frame), Gateway: "gw1", Conn: "c1", Addr: "127.0.0.1:1", At: 1234,
		Frame: box.Append(nil, cmd, 0, sn, []byte(body))}
}

// handleEnv runs one entry through the worker's own handle, as the
// engine does after reading it from Redis.
func handleEnv(w *Worker, env queue.Envelope) {
	d := queue.Delivery{Part: 0, ID: "1-0", Count: 1, Deliveries: 1, Env: env}
	dp := w.dispatch
	dp.mu.Lock()
	dp.inflight++
	dp.held += heldSize(&d)
	dp.mu.Unlock()
	dp.finish(item{d: &d, e: &entry{ack: ack{id: d.ID}, left: 1}}, w.proc.handle(d))
}

// call runs a client frame through the worker and returns its reply (ret
// and body), failing unless exactly one frame came back with the request's
// cmd and sn.
func call(t *testing.T, w *Worker, cmd int32, body string) (int32, string) {
	t.Helper()
	const sn = 77
	handleEnv(w, frameEnv(cmd, sn, body))
	msgs, acks := outs(t, w)
	if acks != 1 {
		t.Errorf("cmd %d: %d acknowledgements, want 1", cmd, acks)
	}
	if len(msgs) != 1 || len(msgs[0].frames) != 1 {
		t.Fatalf("cmd %d: sent %+v, want one reply", cmd, msgs)
	}
	m := msgs[0]
	if m.gw != "gw1" || m.out.Kind != queue.OutWrite || m.out.Conn != "c1" || m.out.At != 1234 {
		t.Errorf("cmd %d: reply went to gw %q kind %d conn %q at %d, want gw1, write, c1, 1234",
			cmd, m.gw, m.out.Kind, m.out.Conn, m.out.At)
	}
	b := m.frames[0]
	if b.Cmd != cmd || b.SN != sn {
		t.Errorf("reply cmd %d sn %d, want cmd %d sn %d", b.Cmd, b.SN, cmd, sn)
	}
	return b.Ret, string(b.Body)
}

// callNoReply runs a client frame and fails if anything was written back
// but the completion signal (wantCompletion).
func callNoReply(t *testing.T, w *Worker, cmd int32, body string) {
	t.Helper()
	handleEnv(w, frameEnv(cmd, 9, body))
	msgs, _ := outs(t, w)
	wantCompletion(t, msgs)
}

// wantCompletion fails unless msgs is exactly the completion signal of a
// frameEnv frame handled without a reply: an OutWrite to its connection
// with no frames and the envelope's At, by which the gateway counts the
// frame answered.
func wantCompletion(t *testing.T, msgs []sent) {
	t.Helper()
	if len(msgs) != 1 {
		t.Fatalf("sent %+v, want only the completion signal", msgs)
	}
	m := msgs[0]
	if m.gw != "gw1" || m.out.Kind != queue.OutWrite || m.out.Conn != "c1" || m.out.At != 1234 || len(m.out.Frames) != 0 {
		t.Errorf("sent %+v, want an OutWrite to gw1/c1 with At 1234 and no frames", m)
	}
}

// recorder collects the steps of requests, safe for concurrent use.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.steps = append(r.steps, s)
	r.mu.Unlock()
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.steps
	r.steps = nil
	return s
}

func (r *recorder) before(name string) func(context.Context, *Request) error {
	return func(context.Context, *Request) error { r.add(name); return nil }
}

func (r *recorder) after(name string) func(context.Context, *Request, error) {
	return func(_ context.Context, _ *Request, err error) {
		if err != nil {
			r.add(name + "(" + errName(err) + ")")
			return
		}
		r.add(name)
	}
}

// errName names the errors hooks see, for readable step lists.
func errName(err error) string {
	var pe *panicError
	switch {
	case errors.Is(err, ErrStop):
		return "stop"
	case errors.Is(err, ErrNoRoute):
		return "noroute"
	case errors.Is(err, ErrLoginRequired):
		return "login"
	case errors.As(err, &pe):
		return "panic"
	}
	return "err"
}

func replyWith(s string) HandlerFunc {
	return func(ctx context.Context, r *Request) error { return r.Reply([]byte(s)) }
}

func TestRouteDispatch(t *testing.T) {
	app := NewApp()
	app.Route(1, replyWith("one"))
	app.Handle(2, HandlerFunc(func(ctx context.Context, r *Request) error {
		return r.Reply(append([]byte("two:"), r.Box.Body...))
	}))
	lobby := app.Group("lobby")
	lobby.Route(10, replyWith("lobby10"))
	table := app.Group("table")
	table.Handle(20, replyWith("table20"))
	table.Route(-5, replyWith("negative"))
	w := newTestWorker(t, app)

	tests := []struct {
		cmd  int32
		body string
		want string
	}{
		{1, "", "one"},
		{2, "hi", "two:hi"},
		{10, "", "lobby10"},
		{20, "", "table20"},
		{-5, "", "negative"},
		{1, "x", "one"},
	}
	for _, tt := range tests {
		ret, body := call(t, w, tt.cmd, tt.body)
		if ret != box.RetOK || body != tt.want {
			t.Errorf("cmd %d: ret %d body %q, want 0 %q", tt.cmd, ret, body, tt.want)
		}
	}
	if n := w.Stats.Handled.Load(); n != int64(len(tests)) {
		t.Errorf("Stats.Handled = %d, want %d", n, len(tests))
	}
	if n := w.Stats.Failed.Load() + w.Stats.NoRoute.Load(); n != 0 {
		t.Errorf("Failed+NoRoute = %d, want 0", n)
	}
}

func TestRequestFields(t *testing.T) {
	app := NewApp()
	var got Request
	app.Route(3, func(ctx context.Context, r *Request) error {
		got = *r
		if _, ok := ctx.Deadline(); !ok {
			t.Error("handler ctx has no deadline")
		}
		return nil
	})
	w := newTestWorker(t, app)
	env := frameEnv(3, 5, "body")
	env.UID = "u1"
	handleEnv(w, env)
	if got.Kind != Frame || got.Box.Cmd != 3 || got.Box.SN != 5 || string(got.Box.Body) != "body" {
		t.Errorf("request kind %v box %+v", got.Kind, got.Box)
	}
	want := Conn{Gateway: "gw1", ID: "c1", Addr: "127.0.0.1:1", UID: "u1"}
	if got.Conn != want {
		t.Errorf("Conn = %+v, want %+v", got.Conn, want)
	}
	if got.Deliveries != 1 || got.Redelivered() {
		t.Errorf("Deliveries = %d, Redelivered %v", got.Deliveries, got.Redelivered())
	}
	if got.Replied() {
		t.Error("Replied() true without a reply")
	}
	// A handler that returns nil without replying sends nothing but the
	// completion signal.
	msgs, _ := outs(t, w)
	wantCompletion(t, msgs)
}

func TestDuplicateCmdPanics(t *testing.T) {
	nop := func(ctx context.Context, r *Request) error { return nil }
	tests := []struct {
		name  string
		setup func(a *App)
	}{
		{"app twice", func(a *App) { a.Route(1, nop); a.Route(1, nop) }},
		{"app Handle after Route", func(a *App) { a.Route(1, nop); a.Handle(1, HandlerFunc(nop)) }},
		{"group then app", func(a *App) { a.Group("g").Route(1, nop); a.Route(1, nop) }},
		{"app then group", func(a *App) { a.Route(1, nop); a.Group("g").Route(1, nop) }},
		{"same group twice", func(a *App) { g := a.Group("g"); g.Route(1, nop); g.Route(1, nop) }},
		{"across groups", func(a *App) { a.Group("g1").Route(1, nop); a.Group("g2").Route(1, nop) }},
		{"nil handler", func(a *App) { a.Handle(1, nil) }},
		{"nil handler in group", func(a *App) { a.Group("g").Handle(1, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tt.name)
				}
			}()
			tt.setup(NewApp())
		})
	}

	// The panic names both groups.
	func() {
		defer func() {
			msg := fmt.Sprint(recover())
			if !strings.Contains(msg, "g1") || !strings.Contains(msg, "g2") || !strings.Contains(msg, "7") {
				t.Errorf("panic %q does not name the cmd and both groups", msg)
			}
		}()
		a := NewApp()
		a.Group("g1").Route(7, nop)
		a.Group("g2").Route(7, nop)
	}()

	// Different cmds in different groups are fine.
	a := NewApp()
	a.Route(1, nop)
	a.Group("g1").Route(2, nop)
	a.Group("g2").Route(3, nop)
}

func TestUnknownCmd(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	app.Route(1, replyWith("one"))
	app.Before(rec.before("before"))
	app.After(rec.after("after"))
	w := newTestWorker(t, app)

	ret, body := call(t, w, 999, "x")
	if ret != box.RetNoRoute || body != "" {
		t.Errorf("unknown cmd: ret %d body %q, want %d and no body", ret, body, box.RetNoRoute)
	}
	if got, want := rec.take(), []string{"before", "after(noroute)"}; !reflect.DeepEqual(got, want) {
		t.Errorf("app hooks around an unknown cmd ran %q, want %q", got, want)
	}
	if n := w.Stats.NoRoute.Load(); n != 1 {
		t.Errorf("Stats.NoRoute = %d, want 1", n)
	}
	if n := w.Stats.Failed.Load(); n != 0 {
		t.Errorf("Stats.Failed = %d, want 0", n)
	}
	// Through answer alone.
	r := &Request{Kind: Frame, Box: box.Box{Header: box.Header{Cmd: 5, SN: 2}}, Conn: Conn{Gateway: "gw1", ID: "c1"}, svc: w.proc.svc}
	w.proc.answer(r, ErrNoRoute)
	if bs := replies(t, w); len(bs) != 1 || bs[0].Ret != box.RetNoRoute || bs[0].Cmd != 5 || bs[0].SN != 2 {
		t.Errorf("answer(ErrNoRoute) sent %+v", bs)
	}
}

func TestHandlerErrors(t *testing.T) {
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error { return errors.New("boom") })
	app.Route(2, func(ctx context.Context, r *Request) error { panic("kaboom") })
	app.Route(3, func(ctx context.Context, r *Request) error { return &Error{Ret: box.RetLoginRequired} })
	app.Route(4, func(ctx context.Context, r *Request) error {
		return fmt.Errorf("wrapped: %w", ErrLoginRequired)
	})
	app.Route(5, func(ctx context.Context, r *Request) error { return &Error{Ret: 42, Msg: "game rule"} })
	app.Route(6, func(ctx context.Context, r *Request) error {
		// Replied, then failed: the client keeps the first answer.
		_ = r.Reply([]byte("early"))
		return errors.New("late failure")
	})
	app.Route(7, func(ctx context.Context, r *Request) error { panic(fmt.Errorf("panic with an error")) })
	app.Route(8, replyWith("fine"))
	w := newTestWorker(t, app)

	tests := []struct {
		cmd    int32
		ret    int32
		body   string
		failed int64 // Stats.Failed after it
	}{
		{1, box.RetHandlerFailed, "", 1},
		{2, box.RetHandlerFailed, "", 2},
		{8, box.RetOK, "fine", 2}, // the worker goes on after a panic
		{3, box.RetLoginRequired, "", 2},
		{4, box.RetLoginRequired, "", 2},
		{5, 42, "", 2},
		{6, box.RetOK, "early", 3},
		{7, box.RetHandlerFailed, "", 4},
		{8, box.RetOK, "fine", 4},
	}
	for _, tt := range tests {
		ret, body := call(t, w, tt.cmd, "")
		if ret != tt.ret || body != tt.body {
			t.Errorf("cmd %d: ret %d body %q, want %d %q", tt.cmd, ret, body, tt.ret, tt.body)
		}
		if n := w.Stats.Failed.Load(); n != tt.failed {
			t.Errorf("after cmd %d: Stats.Failed = %d, want %d", tt.cmd, n, tt.failed)
		}
	}
	if n := w.Stats.Handled.Load(); n != int64(len(tests)) {
		t.Errorf("Stats.Handled = %d, want %d", n, len(tests))
	}
}

func TestErrorMessage(t *testing.T) {
	if got := (&Error{Ret: 3}).Error(); got != "worker: ret 3" {
		t.Errorf("Error{Ret: 3}.Error() = %q", got)
	}
	if got := (&Error{Ret: 3, Msg: "no gold"}).Error(); got != "worker: no gold" {
		t.Errorf("Error{Msg}.Error() = %q", got)
	}
	pe := &panicError{value: "x"}
	if !strings.Contains(pe.Error(), "panicked: x") {
		t.Errorf("panicError.Error() = %q", pe.Error())
	}
}

func TestHookOrder(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	app.Before(rec.before("app-before-1"))
	app.Before(rec.before("app-before-2"))
	app.After(rec.after("app-after-1"))
	app.After(rec.after("app-after-2"))
	g := app.Group("g")
	g.Before(rec.before("g-before-1"))
	g.Before(rec.before("g-before-2"))
	g.After(rec.after("g-after-1"))
	g.After(rec.after("g-after-2"))
	g.Route(1, func(ctx context.Context, r *Request) error { rec.add("handler"); return r.Reply(nil) })
	g.Route(2, func(ctx context.Context, r *Request) error { rec.add("handler"); return ErrLoginRequired })
	app.Route(3, func(ctx context.Context, r *Request) error { rec.add("handler"); return r.Reply(nil) })
	w := newTestWorker(t, app)

	ret, _ := call(t, w, 1, "")
	if ret != 0 {
		t.Errorf("ret %d", ret)
	}
	want := []string{"app-before-1", "app-before-2", "g-before-1", "g-before-2", "handler",
		"g-after-1", "g-after-2", "app-after-1", "app-after-2"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("group route ran\n %q\nwant\n %q", got, want)
	}

	// After hooks see the handler's error.
	if ret, _ := call(t, w, 2, ""); ret != box.RetLoginRequired {
		t.Errorf("ret %d, want %d", ret, box.RetLoginRequired)
	}
	want = []string{"app-before-1", "app-before-2", "g-before-1", "g-before-2", "handler",
		"g-after-1(login)", "g-after-2(login)", "app-after-1(login)", "app-after-2(login)"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("failing group route ran\n %q\nwant\n %q", got, want)
	}

	// An app route gets only the app's hooks.
	call(t, w, 3, "")
	want = []string{"app-before-1", "app-before-2", "handler", "app-after-1", "app-after-2"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("app route ran\n %q\nwant\n %q", got, want)
	}
}

func TestBeforeStop(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	app.After(rec.after("app-after"))
	g := app.Group("g")
	g.Before(func(ctx context.Context, r *Request) error {
		rec.add("g-before")
		if string(r.Box.Body) == "self" {
			// The hook answers on its own, then stops the request.
			if err := r.ReplyRet(7, []byte("from hook")); err != nil {
				t.Error(err)
			}
		}
		return ErrStop
	})
	g.Before(rec.before("g-before-2"))
	g.After(rec.after("g-after"))
	g.Route(1, func(ctx context.Context, r *Request) error { rec.add("handler"); return r.Reply(nil) })
	w := newTestWorker(t, app)

	callNoReply(t, w, 1, "")
	want := []string{"g-before", "g-after(stop)", "app-after(stop)"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("stopped request ran %q, want %q", got, want)
	}
	if ret, body := call(t, w, 1, "self"); ret != 7 || body != "from hook" {
		t.Errorf("hook's own reply: ret %d body %q", ret, body)
	}
	rec.take()
	if n := w.Stats.Failed.Load(); n != 0 {
		t.Errorf("Stats.Failed = %d after ErrStop, want 0", n)
	}

	// ErrStop wrapped is still a stop.
	app2 := NewApp()
	app2.Before(func(ctx context.Context, r *Request) error { return fmt.Errorf("quiet: %w", ErrStop) })
	app2.Route(1, func(ctx context.Context, r *Request) error { t.Error("handler ran after ErrStop"); return nil })
	callNoReply(t, newTestWorker(t, app2), 1, "")
}

func TestBeforeLoginRequired(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	app.After(rec.after("app-after"))
	player := app.Group("player")
	player.Before(func(ctx context.Context, r *Request) error {
		rec.add("need-login")
		if r.Conn.UID == "" {
			return ErrLoginRequired
		}
		return nil
	})
	player.Before(rec.before("player-before-2"))
	player.After(rec.after("player-after"))
	player.Route(5, func(ctx context.Context, r *Request) error {
		rec.add("handler")
		return r.Reply([]byte(r.Conn.UID))
	})
	w := newTestWorker(t, app)

	if ret, body := call(t, w, 5, ""); ret != box.RetLoginRequired || body != "" {
		t.Errorf("anonymous: ret %d body %q, want %d", ret, body, box.RetLoginRequired)
	}
	want := []string{"need-login", "player-after(login)", "app-after(login)"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("refused request ran %q, want %q", got, want)
	}

	env := frameEnv(5, 1, "")
	env.UID = "alice"
	handleEnv(w, env)
	if bs := replies(t, w); len(bs) != 1 || bs[0].Ret != 0 || string(bs[0].Body) != "alice" {
		t.Errorf("logged in: replies %+v", bs)
	}
	want = []string{"need-login", "player-before-2", "handler", "player-after", "app-after"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("logged-in request ran %q, want %q", got, want)
	}
}

func TestAfterRunsAfterPanic(t *testing.T) {
	tests := []struct {
		name     string
		panicIn  string // "handler", "app-before", "g-before", "app-mw"
		wantRecs []string
	}{
		{"handler", "handler", []string{"app-before", "g-before", "g-after(panic)", "app-after(panic)"}},
		{"group before", "g-before", []string{"app-before", "g-after(panic)", "app-after(panic)"}},
		{"app before", "app-before", []string{"app-after(panic)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			maybePanic := func(where string) {
				if where == tt.panicIn {
					panic("in " + where)
				}
				rec.add(where)
			}
			app := NewApp()
			app.Before(func(ctx context.Context, r *Request) error { maybePanic("app-before"); return nil })
			app.After(rec.after("app-after"))
			g := app.Group("g")
			g.Before(func(ctx context.Context, r *Request) error { maybePanic("g-before"); return nil })
			g.After(rec.after("g-after"))
			g.Route(1, func(ctx context.Context, r *Request) error { maybePanic("handler"); return r.Reply(nil) })
			w := newTestWorker(t, app)

			if ret, _ := call(t, w, 1, ""); ret != box.RetHandlerFailed {
				t.Errorf("ret %d, want %d", ret, box.RetHandlerFailed)
			}
			if got := rec.take(); !reflect.DeepEqual(got, tt.wantRecs) {
				t.Errorf("ran %q, want %q", got, tt.wantRecs)
			}
			if n := w.Stats.Failed.Load(); n != 1 {
				t.Errorf("Stats.Failed = %d, want 1", n)
			}
		})
	}
}

func TestGroupHooksOnlyOwnRoutes(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	lobby := app.Group("lobby")
	lobby.Before(rec.before("lobby-before"))
	lobby.After(rec.after("lobby-after"))
	lobby.Use(func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, r *Request) error { rec.add("lobby-mw"); return next.ServeBox(ctx, r) })
	})
	lobby.Route(10, func(ctx context.Context, r *Request) error { rec.add("lobby10"); return nil })
	table := app.Group("table")
	table.Before(rec.before("table-before"))
	table.Route(20, func(ctx context.Context, r *Request) error { rec.add("table20"); return nil })
	app.Route(1, func(ctx context.Context, r *Request) error { rec.add("app1"); return nil })
	w := newTestWorker(t, app)

	tests := []struct {
		cmd  int32
		want []string
	}{
		{1, []string{"app1"}},
		{20, []string{"table-before", "table20"}},
		{10, []string{"lobby-before", "lobby-mw", "lobby10", "lobby-after"}},
		{999, nil}, // unknown cmds get only app hooks
	}
	for _, tt := range tests {
		handleEnv(w, frameEnv(tt.cmd, 1, ""))
		outs(t, w)
		if got := rec.take(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("cmd %d ran %q, want %q", tt.cmd, got, tt.want)
		}
	}
}

func TestMiddlewareOrder(t *testing.T) {
	rec := &recorder{}
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, r *Request) error {
				rec.add(name + ">")
				err := next.ServeBox(ctx, r)
				rec.add("<" + name)
				return err
			})
		}
	}
	app := NewApp()
	app.Use(mw("a1"), mw("a2"))
	app.Use(mw("a3"))
	app.Before(rec.before("app-before"))
	app.After(rec.after("app-after"))
	g := app.Group("g")
	g.Use(mw("g1"), mw("g2"))
	g.Before(rec.before("g-before"))
	g.After(rec.after("g-after"))
	g.Route(1, func(ctx context.Context, r *Request) error { rec.add("handler"); return r.Reply(nil) })
	app.Route(2, func(ctx context.Context, r *Request) error { rec.add("handler"); return r.Reply(nil) })
	// A middleware may answer without calling next.
	guard := app.Group("guarded")
	guard.Use(func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, r *Request) error { return &Error{Ret: 9} })
	})
	guard.Route(3, func(ctx context.Context, r *Request) error { t.Error("guarded handler ran"); return nil })
	w := newTestWorker(t, app)

	call(t, w, 1, "")
	// Middleware registered first is outermost; each level's Before and
	// After hooks wrap its middleware.
	want := []string{"app-before", "a1>", "a2>", "a3>", "g-before", "g1>", "g2>", "handler",
		"<g2", "<g1", "g-after", "<a3", "<a2", "<a1", "app-after"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("group route ran\n %q\nwant\n %q", got, want)
	}
	call(t, w, 2, "")
	want = []string{"app-before", "a1>", "a2>", "a3>", "handler", "<a3", "<a2", "<a1", "app-after"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("app route ran\n %q\nwant\n %q", got, want)
	}
	if ret, _ := call(t, w, 3, ""); ret != 9 {
		t.Errorf("guarded route: ret %d, want 9", ret)
	}
	want = []string{"app-before", "a1>", "a2>", "a3>", "<a3", "<a2", "<a1", "app-after(err)"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("guarded route ran\n %q\nwant\n %q", got, want)
	}
}

func TestOpenClose(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	app.Route(1, replyWith("one"))
	event := func(name string) HandlerFunc {
		return func(ctx context.Context, r *Request) error {
			rec.add(fmt.Sprintf("%s:%s:%s", name, r.Kind, r.Conn.ID))
			if err := r.Reply([]byte("no")); err == nil {
				t.Errorf("%s: Reply succeeded on a %s event", name, r.Kind)
			}
			if err := r.ReplyRet(1, nil); err == nil {
				t.Errorf("%s: ReplyRet succeeded on a %s event", name, r.Kind)
			}
			if r.Replied() {
				t.Errorf("%s: Replied() after failed replies", name)
			}
			return nil
		}
	}
	app.OnOpen(event("open1"))
	app.OnOpen(event("open2"))
	app.OnClose(event("close1"))
	app.OnClose(func(ctx context.Context, r *Request) error {
		rec.add("close2")
		return errors.New("close failed") // logged; nobody to answer
	})
	app.OnClose(func(ctx context.Context, r *Request) error {
		rec.add("close3") // still runs after close2 failed
		return nil
	})
	w := newTestWorker(t, app)

	open := queue.Envelope{Kind: queue.Kind(Open), Seq: 1, Gateway: "gw1", Conn: "c1", Addr: "127.0.0.1:1"}
	handleEnv(w, open)
	if got, want := rec.take(), []string{"open1:open:c1", "open2:open:c1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("open ran %q, want %q", got, want)
	}
	if msgs, acks := outs(t, w); len(msgs) != 0 || acks != 1 {
		t.Errorf("open sent %+v with %d acks, want nothing and 1 ack", msgs, acks)
	}

	cl := queue.Envelope{Kind: queue.Kind(Close), Seq: 2, Gateway: "gw1", Conn: "c1", Addr: "127.0.0.1:1"}
	handleEnv(w, cl)
	if got, want := rec.take(), []string{"close1:close:c1", "close2", "close3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("close ran %q, want %q", got, want)
	}
	if msgs, acks := outs(t, w); len(msgs) != 0 || acks != 1 {
		t.Errorf("close sent %+v with %d acks, want nothing and 1 ack", msgs, acks)
	}
	if n := w.Stats.Failed.Load(); n != 1 {
		t.Errorf("Stats.Failed = %d, want 1 (the failed close handler)", n)
	}

	// An app without open/close handlers ignores the events.
	w2 := newTestWorker(t, NewApp())
	handleEnv(w2, open)
	handleEnv(w2, cl)
	if msgs, acks := outs(t, w2); len(msgs) != 0 || acks != 2 {
		t.Errorf("events with no handler sent %+v with %d acks", msgs, acks)
	}
}

func TestEveryPanics(t *testing.T) {
	nop := func(ctx context.Context, r *Request) error { return nil }
	tests := []struct {
		name  string
		setup func(a *App)
	}{
		{"duplicate name", func(a *App) { a.Every("tick", time.Second, nop); a.Every("tick", time.Minute, nop) }},
		{"zero period", func(a *App) { a.Every("tick", 0, nop) }},
		{"negative period", func(a *App) { a.Every("tick", -time.Second, nop) }},
		{"empty name", func(a *App) { a.Every("", time.Second, nop) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tt.name)
				}
			}()
			tt.setup(NewApp())
		})
	}
	a := NewApp()
	a.Every("a", time.Second, nop)
	a.Every("b", time.Second, nop)
	if len(a.jobs) != 2 {
		t.Errorf("%d jobs, want 2", len(a.jobs))
	}
}

func TestJobDispatch(t *testing.T) {
	rec := &recorder{}
	app := NewApp()
	app.Route(0, func(ctx context.Context, r *Request) error { rec.add("route0"); return nil })
	job := func(name string) HandlerFunc {
		return func(ctx context.Context, r *Request) error {
			rec.add(fmt.Sprintf("%s:%s:%s", name, r.Kind, r.Box.Body))
			if err := r.Reply(nil); err == nil {
				t.Errorf("job %s: Reply succeeded", name)
			}
			return nil
		}
	}
	app.Every("save", time.Minute, job("save"))
	app.Every("tick", time.Second, job("tick"))
	w := newTestWorker(t, app)

	// As queue.ClaimPeriod queues it.
	jobEnv := func(name string) queue.Envelope {
		return queue.Envelope{Kind: queue.Kind(Job), Frame: box.Append(nil, 0, 0, 0, []byte(name))}
	}
	handleEnv(w, jobEnv("tick"))
	handleEnv(w, jobEnv("save"))
	want := []string{"tick:job:tick", "save:job:save"}
	if got := rec.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("jobs ran %q, want %q", got, want)
	}
	if msgs, acks := outs(t, w); len(msgs) != 0 || acks != 2 {
		t.Errorf("jobs sent %+v with %d acks", msgs, acks)
	}

	// A job this app does not declare (an older release's) fails, and is
	// not mistaken for cmd 0.
	handleEnv(w, jobEnv("gone"))
	if got := rec.take(); len(got) != 0 {
		t.Errorf("unknown job ran %q", got)
	}
	if n := w.Stats.Failed.Load(); n != 1 {
		t.Errorf("Stats.Failed = %d, want 1", n)
	}
	r := &Request{Kind: Job, Box: box.Box{Body: []byte("gone")}, svc: w.proc.svc}
	if err := app.ServeBox(context.Background(), r); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("unknown job: err %v", err)
	}
}

func TestSystemRequestRoutes(t *testing.T) {
	app := NewApp()
	var got *Request
	app.Route(30, func(ctx context.Context, r *Request) error {
		got = r
		if err := r.Reply(nil); err == nil {
			t.Error("Reply succeeded on a system frame")
		}
		if err := r.Push(1, nil); err == nil {
			t.Error("Push succeeded on a request with no client")
		}
		if err := r.CloseClient(); err == nil {
			t.Error("CloseClient succeeded on a request with no client")
		}
		return nil
	})
	w := newTestWorker(t, app)
	handleEnv(w, queue.Envelope{Kind: queue.Kind(System), Frame: box.Append(nil, 30, 0, 0, []byte("timer"))})
	if got == nil || got.Kind != System || string(got.Box.Body) != "timer" {
		t.Fatalf("system frame: request %+v", got)
	}
	if msgs, _ := outs(t, w); len(msgs) != 0 {
		t.Errorf("system frame sent %+v", msgs)
	}
	// A failing system frame has nobody to answer.
	handleEnv(w, queue.Envelope{Kind: queue.Kind(System), Frame: box.Append(nil, 31, 0, 0, nil)})
	if msgs, _ := outs(t, w); len(msgs) != 0 {
		t.Errorf("unknown system cmd sent %+v", msgs)
	}
}

func TestReplyTwice(t *testing.T) {
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error {
		if r.Replied() {
			t.Error("Replied() before the reply")
		}
		if err := r.Reply([]byte("first")); err != nil {
			t.Errorf("first reply: %v", err)
		}
		if !r.Replied() {
			t.Error("Replied() false after the reply")
		}
		if err := r.Reply([]byte("second")); err == nil {
			t.Error("second Reply succeeded")
		}
		if err := r.ReplyRet(5, nil); err == nil {
			t.Error("ReplyRet after Reply succeeded")
		}
		return nil
	})
	w := newTestWorker(t, app)
	if ret, body := call(t, w, 1, ""); ret != 0 || body != "first" {
		t.Errorf("ret %d body %q, want 0 first", ret, body)
	}
}

func TestPushAndClose(t *testing.T) {
	app := NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error {
		if err := r.Push(100, []byte("p1")); err != nil {
			return err
		}
		if err := r.Reply([]byte("r")); err != nil {
			return err
		}
		if err := r.Push(101, []byte("p2")); err != nil {
			return err
		}
		return r.CloseClient()
	})
	w := newTestWorker(t, app)
	handleEnv(w, frameEnv(1, 3, ""))
	msgs, acks := outs(t, w)
	if acks != 1 {
		t.Errorf("%d acks, want 1", acks)
	}
	type frame struct {
		kind queue.OutKind
		cmd  int32
		sn   uint32
		body string
	}
	var got []frame
	for _, m := range msgs {
		if m.gw != "gw1" || m.out.Conn != "c1" {
			t.Errorf("message to gw %q conn %q", m.gw, m.out.Conn)
		}
		if len(m.frames) == 0 {
			got = append(got, frame{kind: m.out.Kind})
		}
		for _, b := range m.frames {
			got = append(got, frame{m.out.Kind, b.Cmd, b.SN, string(b.Body)})
		}
	}
	want := []frame{
		{queue.OutWrite, 100, 0, "p1"},
		{queue.OutWrite, 1, 3, "r"},
		{queue.OutWrite, 101, 0, "p2"},
		{kind: queue.OutClose},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sent %+v, want %+v", got, want)
	}
}

func TestAppIsHandler(t *testing.T) {
	inner := NewApp()
	inner.Route(1, replyWith("inner"))
	outer := NewApp()
	outer.Handle(1, inner) // an App is a Handler
	w := newTestWorker(t, outer)
	if ret, body := call(t, w, 1, ""); ret != 0 || body != "inner" {
		t.Errorf("ret %d body %q", ret, body)
	}
}

func TestEventPanicRecovered(t *testing.T) {
	app := NewApp()
	app.OnOpen(func(ctx context.Context, r *Request) error { panic("open panics") })
	app.Route(1, replyWith("still here"))
	w := newTestWorker(t, app)
	handleEnv(w, queue.Envelope{Kind: queue.Kind(Open), Seq: 1, Gateway: "gw1", Conn: "c1"})
	if msgs, acks := outs(t, w); len(msgs) != 0 || acks != 1 {
		t.Errorf("panicking open handler sent %+v with %d acks", msgs, acks)
	}
	if n := w.Stats.Failed.Load(); n != 1 {
		t.Errorf("Stats.Failed = %d, want 1", n)
	}
	if ret, body := call(t, w, 1, ""); ret != 0 || body != "still here" {
		t.Errorf("after the panic: ret %d body %q", ret, body)
	}
}
