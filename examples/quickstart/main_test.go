package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/farm"
	"github.com/maple-farm/maple/store/storetest"
)

// TestGame plays the game on `quickstart dev`: a whole farm in this
// process, on an embedded Redis.
func TestGame(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	addr := startDev(t, ctx)

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

// startDev runs `quickstart dev` on free ports until the test ends and
// returns the gateway's address.
func startDev(t *testing.T, ctx context.Context) string {
	ctx, cancel := context.WithCancel(ctx)
	cmd := farm.New(newApp(), options()...)
	var out storetest.Buffer
	cmd.Writer, cmd.ErrWriter = &out, &bytes.Buffer{}
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = cmd.RunContext(ctx, []string{"quickstart", "dev", "--listen", "127.0.0.1:0", "--ws-listen", "",
			"--log-level", "error"})
	}()
	t.Cleanup(func() { cancel(); <-done })
	re := regexp.MustCompile(`quickstart dev: gateway on (\S+),`)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case <-done:
			t.Fatalf("dev exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("dev printed no address:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
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
