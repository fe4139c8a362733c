package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store/storetest"
)

// These tests pin ws.go, the WebSocket transport: one frame per binary
// message both ways, close codes for bad messages, the slow-client and
// idle policies, origins, the path and the page served beside it. The
// end-to-end tests (e2e/ws_test.go, e2e/browser_test.go) run it with
// workers, TCP players and a browser.

// startWSGateway starts a gateway with a WebSocket listener on a real
// Redis; it stops when the test ends.
func startWSGateway(t *testing.T, opts Options) (*Server, *redis.Client) {
	t.Helper()
	srv := storetest.Start(t, storetest.Options{})
	opts.Listen = "127.0.0.1:0"
	if opts.WSListen == "" {
		opts.WSListen = "127.0.0.1:0"
	}
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
	if gw.WSAddr() == nil {
		t.Fatal("WSAddr is nil once Ready")
	}
	return gw, rdb
}

func wsURL(gw *Server, path string) string {
	if path == "" {
		path = DefaultWSPath
	}
	return "ws://" + gw.WSAddr().String() + path
}

// dialWS opens a WebSocket to gw and returns it with the gateway's id of
// the connection.
func dialWS(t *testing.T, gw *Server, hdr http.Header) (*websocket.Conn, string) {
	t.Helper()
	want := gw.Stats.Accepted.Load() + 1
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(gw, ""), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", wsURL(gw, ""), err, resp)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { _ = c.CloseNow() })
	wsWaitFor(t, 10*time.Second, "gateway to open the connection", func() bool {
		return gw.Stats.Accepted.Load() >= want
	})
	id := gw.ID() + "-" + strconv.FormatInt(want, 10)
	if gw.lookup(id) == nil {
		t.Fatalf("connection %s not registered", id)
	}
	return c, id
}

func wsWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wsPush queues outbound messages for connection id, as workers do.
func wsPush(t *testing.T, gw *Server, rdb *redis.Client, msgs ...*queue.Out) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range msgs {
			p.LPush(ctx, gw.keys.Outbound(gw.ID()), queue.AppendOut(nil, m))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func seqFrame(seq uint64) []byte {
	var body [8]byte
	binary.BigEndian.PutUint64(body[:], seq)
	return box.Append(nil, 100, box.RetOK, 0, body[:])
}

// readFrame reads one message and checks it is one binary frame.
func readFrame(t *testing.T, c *websocket.Conn) box.Box {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("got a %v message, want binary", typ)
	}
	b, err := box.Decode(msg)
	if err != nil {
		t.Fatalf("message is not one frame: %v", err)
	}
	if int(b.Len) != len(msg) {
		t.Fatalf("message of %d bytes holds a frame of %d", len(msg), b.Len)
	}
	return b
}

// expectClose reads until the connection ends and checks the close code.
func expectClose(t *testing.T, c *websocket.Conn, code websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != code {
			t.Fatalf("connection ended with %v (code %d), want close code %d", err, got, code)
		}
		return
	}
}

// TestWSOneFramePerMessage: frames sent as binary messages are taken, and
// output to the client arrives one frame per message, in order, also when
// a worker's message holds several frames back to back.
func TestWSOneFramePerMessage(t *testing.T) {
	gw, rdb := startWSGateway(t, Options{})
	c, id := dialWS(t, gw, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 {
		if err := c.Write(ctx, websocket.MessageBinary, box.Append(nil, 1, 0, uint32(i+1), []byte("hi"))); err != nil {
			t.Fatal(err)
		}
	}
	wsWaitFor(t, 10*time.Second, "5 frames in", func() bool { return gw.Stats.FramesIn.Load() == 5 })

	const total = 2000
	var msgs []*queue.Out
	for i := uint64(0); i < total; i += 4 {
		var frames []byte
		for j := i; j < i+4; j++ {
			frames = append(frames, seqFrame(j)...)
		}
		msgs = append(msgs, &queue.Out{Kind: queue.OutWrite, Conn: id, Frames: frames})
	}
	wsPush(t, gw, rdb, msgs...)
	for i := range uint64(total) {
		b := readFrame(t, c)
		if got := binary.BigEndian.Uint64(b.Body); got != i || b.Cmd != 100 || b.SN != 0 {
			t.Fatalf("frame %d: cmd %d sn %d seq %d: lost, duplicated or reordered output", i, b.Cmd, b.SN, got)
		}
	}
	if n := gw.Stats.FramesOut.Load(); n != total {
		t.Errorf("FramesOut = %d, want %d", n, total)
	}

	// A close from the farm comes after the output queued before it.
	wsPush(t, gw, rdb, &queue.Out{Kind: queue.OutWrite, Conn: id, Frames: seqFrame(total)},
		&queue.Out{Kind: queue.OutClose, Conn: id})
	if b := readFrame(t, c); binary.BigEndian.Uint64(b.Body) != total {
		t.Fatalf("last frame before the close: seq %d", binary.BigEndian.Uint64(b.Body))
	}
	expectClose(t, c, WSCloseNormal)
	wsWaitFor(t, 10*time.Second, "the connection to be gone", func() bool { return gw.Stats.Conns.Load() == 0 })
}

// TestWSBadMessagesClose: a text message, part of a frame, two frames, a
// bad frame or an oversized message closes that connection with a close
// code, counted as a bad frame; another connection goes on.
func TestWSBadMessagesClose(t *testing.T) {
	const maxFrame = 4096
	gw, rdb := startWSGateway(t, Options{MaxFrame: maxFrame})
	good, goodID := dialWS(t, gw, nil)
	frame := box.Append(nil, 1, 0, 1, []byte("hello"))
	bad := box.Append(nil, 1, 0, 1, nil)
	binary.BigEndian.PutUint32(bad[0:4], 0xdeadbeef)
	tests := []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
		code websocket.StatusCode
	}{
		{"text", websocket.MessageText, []byte("hello"), WSCloseText},
		{"partial", websocket.MessageBinary, frame[:len(frame)-1], WSCloseBadFrame},
		{"header only part", websocket.MessageBinary, frame[:10], WSCloseBadFrame},
		{"two frames", websocket.MessageBinary, append(append([]byte(nil), frame...), frame...), WSCloseBadFrame},
		{"frame and a byte", websocket.MessageBinary, append(append([]byte(nil), frame...), 0x79), WSCloseBadFrame},
		{"bad magic", websocket.MessageBinary, bad, WSCloseBadFrame},
		{"too big", websocket.MessageBinary, box.Append(nil, 1, 0, 1, make([]byte, maxFrame)), WSCloseTooBig},
		{"empty", websocket.MessageBinary, []byte{}, WSCloseBadFrame},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := gw.Stats.BadFrames.Load()
			c, _ := dialWS(t, gw, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Write(ctx, tt.typ, tt.msg); err != nil {
				t.Fatal(err)
			}
			expectClose(t, c, tt.code)
			wsWaitFor(t, 5*time.Second, "the bad frame counted", func() bool { return gw.Stats.BadFrames.Load() == before+1 })
			// The good connection still gets its output.
			wsPush(t, gw, rdb, &queue.Out{Kind: queue.OutWrite, Conn: goodID, Frames: seqFrame(uint64(i))})
			if b := readFrame(t, good); binary.BigEndian.Uint64(b.Body) != uint64(i) {
				t.Fatalf("good connection got seq %d, want %d", binary.BigEndian.Uint64(b.Body), i)
			}
		})
	}
	// The server counts a connection gone once its handler returned, a
	// moment after the client saw the close.
	wsWaitFor(t, 5*time.Second, "Conns == 1 (the good one)", func() bool { return gw.Stats.Conns.Load() == 1 })
}

// TestWSSlowClientClosed: a client that reads nothing is closed once its
// queued output passes OutBuffer, counted as slow, and memory stays bound.
func TestWSSlowClientClosed(t *testing.T) {
	gw, rdb := startWSGateway(t, Options{OutBuffer: 256 << 10, WriteStall: 2 * time.Second})
	c, id := dialWS(t, gw, nil)
	_ = c // never read
	big := box.Append(nil, 100, 0, 0, make([]byte, 32<<10))
	var msgs []*queue.Out
	for range 200 { // 6.4 MiB: far past the socket buffers and OutBuffer
		msgs = append(msgs, &queue.Out{Kind: queue.OutWrite, Conn: id, Frames: big})
	}
	wsPush(t, gw, rdb, msgs...)
	wsWaitFor(t, 15*time.Second, "the slow client to be closed", func() bool {
		return gw.Stats.SlowClosed.Load() == 1 && gw.Stats.Conns.Load() == 0
	})
}

// TestWSIdleTimeout: the gateway pings; a client that answers (it reads)
// stays while sending nothing, one that does not answer is closed.
func TestWSIdleTimeout(t *testing.T) {
	const idle = time.Second
	gw, _ := startWSGateway(t, Options{WSPing: 100 * time.Millisecond, WSIdleTimeout: idle})
	live, _ := dialWS(t, gw, nil)
	readErr := make(chan error, 1)
	go func() {
		_, _, err := live.Read(context.Background()) // answers pings while it waits
		readErr <- err
	}()
	start := time.Now()
	dead, _ := dialWS(t, gw, nil) // never reads: pings go unanswered
	_ = dead
	wsWaitFor(t, 10*time.Second, "the silent client to be closed", func() bool { return gw.Stats.IdleClosed.Load() == 1 })
	if took := time.Since(start); took < idle {
		t.Errorf("closed after %v, before the idle timeout", took)
	}
	time.Sleep(idle / 2)
	if n := gw.Stats.Conns.Load(); n != 1 {
		t.Fatalf("Conns = %d, want 1: the client answering pings must stay", n)
	}
	select {
	case err := <-readErr:
		t.Fatalf("live client's read ended: %v", err)
	default:
	}
}

// TestWSOrigins: a page of a foreign origin is refused unless allowed;
// clients without an Origin header (apps, bots) are accepted.
func TestWSOrigins(t *testing.T) {
	gw, _ := startWSGateway(t, Options{WSOrigins: []string{"*.game.example"}})
	dial := func(origin string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		c, resp, err := websocket.Dial(ctx, wsURL(gw, ""), &websocket.DialOptions{HTTPHeader: hdr})
		if c != nil {
			_ = c.CloseNow()
		}
		if resp != nil {
			return resp.StatusCode, err
		}
		return 0, err
	}
	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + gw.WSAddr().String(), true}, // same host
		{"https://play.game.example", true},
		{"https://evil.example", false},
	} {
		code, err := dial(tt.origin)
		if tt.ok && err != nil {
			t.Errorf("origin %q refused: %d %v", tt.origin, code, err)
		}
		if !tt.ok && (err == nil || code != http.StatusForbidden) {
			t.Errorf("origin %q: status %d, err %v; want 403", tt.origin, code, err)
		}
	}
}

// TestWSPathAndWeb: the endpoint is at WSPath and Web serves the rest.
func TestWSPathAndWeb(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "page at "+r.URL.Path)
	})
	gw, _ := startWSGateway(t, Options{WSPath: "/play", Web: web})
	resp, err := http.Get("http://" + gw.WSAddr().String() + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "page at /index.html" {
		t.Errorf("GET /index.html = %q", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(gw, "/play"), nil)
	if err != nil {
		t.Fatalf("dial /play: %v", err)
	}
	defer c.CloseNow()
	// Not a WebSocket endpoint: the page handler answers.
	_, resp, err = websocket.Dial(ctx, wsURL(gw, "/ws"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusOK {
		t.Errorf("dial /ws with WSPath /play: %v, %v", err, resp)
	}
}

// TestWSShutdown: a stopping gateway closes WebSocket players with 1001
// and reports them closed; it stops accepting first.
func TestWSShutdown(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	gw, err := New(Options{Listen: "127.0.0.1:0", WSListen: "127.0.0.1:0", Prefix: storetest.Prefix(t), Logger: testLogger(),
		Redis: &redis.UniversalOptions{Addrs: []string{srv.Addr}}, CloseGrace: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	<-gw.Ready()
	c, _ := dialWS(t, gw, nil)
	reply := make(chan websocket.StatusCode, 1)
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				reply <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	if code := <-reply; code != WSCloseNormal && code != WSCloseGoingAway {
		t.Errorf("close code %d, want 1000 (drained) or 1001", code)
	}
	if n := gw.Stats.Conns.Load(); n != 0 {
		t.Errorf("Conns = %d after Run returned", n)
	}
	if _, _, err := websocket.Dial(context.Background(), wsURL(gw, ""), nil); err == nil || !isRefused(err) {
		t.Errorf("dial after stop: %v, want refused", err)
	}
}

func isRefused(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "refused") || errors.Is(err, io.EOF))
}

// TestWSFrameTimeout: a WebSocket message that does not arrive whole
// within FrameTimeout closes its connection, like a TCP frame; while it
// arrives it counts in the partial-frame budget.
func TestWSFrameTimeout(t *testing.T) {
	gw, _ := startWSGateway(t, Options{FrameTimeout: time.Second, WSPing: -1, WSIdleTimeout: -1})
	c, _ := dialWS(t, gw, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	frame := box.Append(nil, 1, 0, 1, make([]byte, 64<<10))
	if _, err := w.Write(frame[:40<<10]); err != nil { // past the writer's buffer: sent as non-final frames
		t.Fatal(err)
	}
	wsWaitFor(t, 5*time.Second, "the message counted as a partial frame", func() bool { return gw.partials.held() > 0 })
	wsWaitFor(t, 10*time.Second, "the connection closed for the frame timeout", func() bool {
		return gw.Stats.FrameTimeouts.Load() == 1 && gw.Stats.Conns.Load() == 0
	})
	if n := gw.partials.held(); n != 0 {
		t.Errorf("partial bytes held after the close = %d", n)
	}
}

// TestWSIdleCostsNoGoroutine: WebSocket players live on the event loop,
// like TCP players: holding them adds no goroutine.
func TestWSIdleCostsNoGoroutine(t *testing.T) {
	gw, _ := startWSGateway(t, Options{})
	dialWS(t, gw, nil) // warm up
	before := runtime.NumGoroutine()
	const n = 50
	for range n {
		c, _ := dialWS(t, gw, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.Write(ctx, websocket.MessageBinary, box.Append(nil, 1, 0, 1, []byte("hi")))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	wsWaitFor(t, 10*time.Second, "the frames in", func() bool { return gw.Stats.FramesIn.Load() == n })
	// The client library holds a goroutine or two per connection of its
	// own; the gateway none.
	if grown := runtime.NumGoroutine() - before; grown > n/2 {
		t.Errorf("%d goroutines more for %d connections", grown, n)
	}
	var srv int
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "maple/gateway.") && !strings.Contains(g, "_test.go") {
			srv++
		}
	}
	t.Logf("%d goroutines more for %d connections, %d in the gateway", runtime.NumGoroutine()-before, n, srv)
	if srv > 20 {
		t.Errorf("%d gateway goroutines with %d connections open", srv, n+1)
	}
}

// TestWSClientCloses: a client's close is answered with its code and the
// connection ends, reported as a clean close.
func TestWSClientCloses(t *testing.T) {
	gw, _ := startWSGateway(t, Options{})
	c, _ := dialWS(t, gw, nil)
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	wsWaitFor(t, 5*time.Second, "the connection gone", func() bool { return gw.Stats.Conns.Load() == 0 })
	if n := gw.Stats.BadFrames.Load(); n != 0 {
		t.Errorf("BadFrames = %d", n)
	}
}

// TestWSMaxConns: past MaxConns a WebSocket player is refused with 1013,
// and past MaxConnsPerIP too.
func TestWSMaxConns(t *testing.T) {
	for _, o := range []Options{{MaxConns: 1}, {MaxConnsPerIP: 1}} {
		gw, _ := startWSGateway(t, o)
		dialWS(t, gw, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, wsURL(gw, ""), nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		expectClose(t, c, WSCloseFull)
		if n := gw.Stats.Conns.Load(); n != 1 {
			t.Errorf("%+v: Conns = %d, want 1", o, n)
		}
	}
}

// TestWSPlainHTTP: requests that are not a handshake get HTTP answers.
func TestWSPlainHTTP(t *testing.T) {
	gw, _ := startWSGateway(t, Options{})
	for _, tt := range []struct {
		path string
		code int
	}{{"/ws", http.StatusUpgradeRequired}, {"/other", http.StatusNotFound}} {
		resp, err := http.Get("http://" + gw.WSAddr().String() + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("GET %s: %d, want %d", tt.path, resp.StatusCode, tt.code)
		}
	}
	if n := gw.Stats.Accepted.Load(); n != 0 {
		t.Errorf("Accepted = %d: a request was taken for a player", n)
	}
}
