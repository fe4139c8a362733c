package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/examples/tictactoe"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/worker"
)

// wsConn is a WebSocket player for tests: one frame per binary message,
// requests matched to replies by sn, the rest on pushes.
type wsConn struct {
	t      *testing.T
	c      *websocket.Conn
	mu     sync.Mutex
	sn     uint32
	wait   map[uint32]chan box.Box
	pushes chan box.Box
	done   chan struct{}
	err    error
}

func dialWS(t *testing.T, gw *gateway.Server) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+gw.WSAddr().String()+gateway.DefaultWSPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &wsConn{t: t, c: c, wait: map[uint32]chan box.Box{}, pushes: make(chan box.Box, 256), done: make(chan struct{})}
	go w.read()
	t.Cleanup(func() { _ = c.CloseNow() })
	return w
}

func (w *wsConn) read() {
	defer close(w.done)
	for {
		typ, msg, err := w.c.Read(context.Background())
		if err == nil && typ != websocket.MessageBinary {
			err = errNotBinary
		}
		var b box.Box
		if err == nil {
			if b, err = box.Decode(msg); err == nil && int(b.Len) != len(msg) {
				err = errNotOneFrame
			}
		}
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		ch := w.wait[b.SN]
		delete(w.wait, b.SN)
		w.mu.Unlock()
		if b.SN != 0 && ch != nil {
			ch <- b
			continue
		}
		w.pushes <- b
	}
}

var (
	errNotBinary   = errors.New("a text message from the gateway")
	errNotOneFrame = errors.New("a message that is not exactly one frame")
)

func (w *wsConn) request(cmd int32, body string) box.Box {
	w.t.Helper()
	w.mu.Lock()
	w.sn++
	sn := w.sn
	ch := make(chan box.Box, 1)
	w.wait[sn] = ch
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageBinary, box.Append(nil, cmd, 0, sn, []byte(body))); err != nil {
		w.t.Fatalf("write cmd %d: %v", cmd, err)
	}
	select {
	case b := <-ch:
		return b
	case <-w.done:
		w.t.Fatalf("connection ended waiting for the reply to cmd %d: %v", cmd, w.err)
	case <-ctx.Done():
		w.t.Fatalf("no reply to cmd %d in 10s", cmd)
	}
	return box.Box{}
}

func (w *wsConn) expectPush(cmd int32, body string) {
	w.t.Helper()
	select {
	case p := <-w.pushes:
		if p.Cmd != cmd || string(p.Body) != body || p.SN != 0 {
			w.t.Fatalf("push cmd %d sn %d body %q, want cmd %d sn 0 body %q", p.Cmd, p.SN, p.Body, cmd, body)
		}
	case <-w.done:
		w.t.Fatalf("connection ended waiting for push %q: %v", body, w.err)
	case <-time.After(10 * time.Second):
		w.t.Fatalf("no push %q within 10s", body)
	}
}

// TestWSAndTCPShareGroup: a WebSocket player and a TCP player in one group
// (the demo's cmd 5 and 6) each receive the other's message: a WebSocket
// player is a connection like any other.
func TestWSAndTCPShareGroup(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := newFarm(t, b.redis(t))
			gw := f.gateway(func(o *gateway.Options) { o.WSListen = "127.0.0.1:0" })
			f.worker(nil, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			web := dialWS(t, gw)
			if r := web.request(demo.CmdLogin, "wendy"); r.Ret != 0 {
				t.Fatalf("ws login: ret %d", r.Ret)
			}
			if r := web.request(demo.CmdWhoami, ""); string(r.Body) != "wendy" {
				t.Fatalf("ws whoami: %q", r.Body)
			}
			if r := web.request(demo.CmdJoin, "room"); r.Ret != 0 {
				t.Fatalf("ws join: ret %d", r.Ret)
			}
			tcp := dial(t, gw)
			for _, req := range []struct {
				cmd  int32
				body string
			}{{demo.CmdLogin, "tom"}, {demo.CmdJoin, "room"}} {
				if r, err := tcp.Request(ctx, req.cmd, []byte(req.body)); err != nil || r.Ret != 0 {
					t.Fatalf("tcp cmd %d: ret %d, %v", req.cmd, r.Ret, err)
				}
			}

			if r := web.request(demo.CmdSay, "hello from the browser"); r.Ret != 0 {
				t.Fatalf("ws say: ret %d", r.Ret)
			}
			expectPush(t, tcp, demo.CmdSay, "wendy: hello from the browser")
			web.expectPush(demo.CmdSay, "wendy: hello from the browser")

			if r, err := tcp.Request(ctx, demo.CmdSay, []byte("hello from the socket")); err != nil || r.Ret != 0 {
				t.Fatalf("tcp say: ret %d, %v", r.Ret, err)
			}
			web.expectPush(demo.CmdSay, "tom: hello from the socket")
			expectPush(t, tcp, demo.CmdSay, "tom: hello from the socket")

			// Pipelined requests on the WebSocket come back in order, each
			// as one message.
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body := string(rune('a' + i))
					if r := web.request(demo.CmdEcho, body); string(r.Body) != body {
						t.Errorf("echo %q: %q", body, r.Body)
					}
				}()
			}
			wg.Wait()
			if n := gw.Stats.Conns.Load(); n != 2 {
				t.Errorf("gateway holds %d connections, want 2", n)
			}
		})
	}
}

// tttApp is the app of `maple dev`: the demo and tic-tac-toe.
func tttApp(turn time.Duration) *worker.App {
	app := demo.New()
	tictactoe.Register(app, tictactoe.Options{Turn: turn})
	return app
}

// TestTictactoeTurnTimer: a player who does not move in time forfeits; the
// turn timer fires on whichever worker is alive, also after the worker
// that set it stopped. A client cannot send the timer's cmd itself.
func TestTictactoeTurnTimer(t *testing.T) {
	f := newFarm(t, realRedis(t))
	gw := f.gateway(func(o *gateway.Options) { o.WSListen = "127.0.0.1:0" })
	const turn = 1500 * time.Millisecond
	w1 := f.worker(tttApp(turn), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// One player over WebSocket, one over TCP.
	ann := dialWS(t, gw)
	if r := ann.request(demo.CmdLogin, "ann"); r.Ret != 0 {
		t.Fatalf("login: %d", r.Ret)
	}
	if r := ann.request(tictactoe.CmdLobby, ""); r.Ret != 0 {
		t.Fatalf("lobby: %d %q", r.Ret, r.Body)
	}
	ben := dial(t, gw)
	for _, req := range []struct {
		cmd  int32
		body string
	}{{demo.CmdLogin, "ben"}, {tictactoe.CmdLobby, ""}} {
		if r, err := ben.Request(ctx, req.cmd, []byte(req.body)); err != nil || r.Ret != 0 {
			t.Fatalf("ben cmd %d: ret %d %q, %v", req.cmd, r.Ret, r.Body, err)
		}
	}
	if r := ann.request(tictactoe.CmdTurnTimeout, "m1 0"); r.Ret != box.RetNoRoute {
		t.Fatalf("a client sending the timer's cmd: ret %d, want %d", r.Ret, box.RetNoRoute)
	}
	r := ann.request(tictactoe.CmdChallenge, "ben")
	var m tictactoe.Match
	if err := json.Unmarshal(r.Body, &m); r.Ret != 0 || err != nil {
		t.Fatalf("challenge: ret %d %q %v", r.Ret, r.Body, err)
	}
	if m.X != "ann" || m.O != "ben" || m.Turn != "x" || m.Left <= 0 || m.Left > turn.Milliseconds() {
		t.Fatalf("new match %+v", m)
	}
	if r := ann.request(tictactoe.CmdMove, "4"); r.Ret != 0 {
		t.Fatalf("move: %d %q", r.Ret, r.Body)
	}
	if r, _ := ben.Request(ctx, tictactoe.CmdMove, []byte("4")); r.Ret != tictactoe.RetRefused {
		t.Fatalf("move on a taken cell: ret %d %q", r.Ret, r.Body)
	}
	// ben's turn runs out while the worker that set the timer is gone.
	started := time.Now()
	w1.stop()
	f.worker(tttApp(turn), nil)

	var final tictactoe.Match
	deadline := time.After(20 * time.Second)
	for final.Winner == "" {
		select {
		case p := <-ben.Pushes():
			if p.Cmd == tictactoe.CmdMatch {
				if err := json.Unmarshal(p.Body, &final); err != nil {
					t.Fatal(err)
				}
			}
		case <-deadline:
			t.Fatal("no forfeit within 20s")
		}
	}
	if final.Winner != "x" || final.WinnerName != "ann" || final.Reason != "timeout" || final.Board != "....x...." {
		t.Fatalf("after the timeout: %+v", final)
	}
	if took := time.Since(started); took > turn+10*time.Second {
		t.Errorf("forfeit %v after the move", took)
	}
	// ann saw it too.
	for {
		select {
		case p := <-ann.pushes:
			var got tictactoe.Match
			if p.Cmd != tictactoe.CmdMatch || json.Unmarshal(p.Body, &got) != nil || got.Winner == "" {
				continue
			}
			if got.WinnerName != "ann" {
				t.Fatalf("ann saw %+v", got)
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("ann got no final board")
		}
	}
}
