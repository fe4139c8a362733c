package main

import (
	"context"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/farm/farmtest"
	"github.com/maple-farm/maple/worker"
)

// startFarm runs the game on a whole farm in this process, on an embedded
// Redis, with the login route that setup adds for a login secret.
func startFarm(t *testing.T, secret []byte) string {
	t.Helper()
	app := newApp()
	app.Route(CmdLogin, login(secret))
	f, err := farmtest.Start(app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f.Addr
}

// TestGame plays the game: rooms, their history, pushes and a countdown.
func TestGame(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	addr := startFarm(t, nil)

	ann, bob := dial(t, ctx, addr), dial(t, ctx, addr)
	call := func(c *client.Conn, cmd int32, body string) box.Box {
		t.Helper()
		r, err := c.Request(ctx, cmd, []byte(body))
		if err != nil {
			t.Fatalf("cmd %d: %v", cmd, err)
		}
		return r
	}
	expect := func(r box.Box, ret int32, body string) {
		t.Helper()
		if r.Ret != ret || string(r.Body) != body {
			t.Fatalf("cmd %d: ret %d body %q, want ret %d body %q", r.Cmd, r.Ret, r.Body, ret, body)
		}
	}
	push := func(c *client.Conn, cmd int32, body string) {
		t.Helper()
		select {
		case p := <-c.Pushes():
			if p.Cmd != cmd || p.SN != 0 || string(p.Body) != body {
				t.Fatalf("push cmd %d sn %d %q, want cmd %d %q", p.Cmd, p.SN, p.Body, cmd, body)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no push cmd %d %q", cmd, body)
		}
	}

	expect(call(ann, CmdEcho, "hi"), 0, "hi")
	expect(call(ann, CmdVersion, ""), 0, version)
	expect(call(ann, CmdJoin, "lobby"), box.RetLoginRequired, "")

	expect(call(ann, CmdLogin, "ann"), 0, "")
	push(ann, PushWelcome, "welcome ann")
	expect(call(ann, CmdSay, "anyone?"), ErrNoRoom.Ret, "")
	expect(call(ann, CmdJoin, "lobby"), 0, "")
	push(ann, PushJoined, "ann")
	expect(call(ann, CmdSay, "hello"), 0, "1")
	push(ann, PushLine, "1 ann: hello")

	// bob joins later and gets the room's history.
	expect(call(bob, CmdLogin, "bob"), 0, "")
	push(bob, PushWelcome, "welcome bob")
	expect(call(bob, CmdJoin, "lobby"), 0, "1 ann: hello")
	push(bob, PushJoined, "bob")
	push(ann, PushJoined, "bob")
	expect(call(bob, CmdSay, "hi ann"), 0, "2")
	push(ann, PushLine, "2 bob: hi ann")
	push(bob, PushLine, "2 bob: hi ann")

	// The countdown's timer fires on the worker and pushes to the room.
	expect(call(ann, CmdCountdown, "0"), ErrBadRequest.Ret, "")
	start := time.Now()
	expect(call(ann, CmdCountdown, "1"), 0, "")
	push(ann, PushGo, "go")
	push(bob, PushGo, "go")
	if d := time.Since(start); d < time.Second {
		t.Errorf("countdown of 1 s over after %v", d)
	}
	// The timer's cmd is not a client's to send.
	expect(call(ann, cmdCountdownOver, "lobby"), box.RetNoRoute, "")
}

func dial(t *testing.T, ctx context.Context, addr string) *client.Conn {
	t.Helper()
	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTokenLogin: with a login secret, cmd 2 takes only a token signed
// with it (what the game's account service hands its players).
func TestTokenLogin(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	secret := []byte("test secret")
	c := dial(t, ctx, startFarm(t, secret))
	for _, tc := range []struct {
		body string
		ret  int32
	}{
		{"ann", box.RetHandlerFailed}, // a bare user id
		{worker.SignLogin([]byte("other secret"), "ann", time.Now().Add(time.Hour)), box.RetHandlerFailed},
		{worker.SignLogin(secret, "ann", time.Now().Add(-time.Hour)), box.RetHandlerFailed}, // expired
		{worker.SignLogin(secret, "ann", time.Now().Add(time.Hour)), 0},
	} {
		r, err := c.Request(ctx, CmdLogin, []byte(tc.body))
		if err != nil || r.Ret != tc.ret {
			t.Fatalf("login with %q: ret %d err %v, want ret %d", tc.body, r.Ret, err, tc.ret)
		}
	}
}
