package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/store/storetest"
)

// TestHelpGolden pins `maple --help`: the command list is part of what
// operators script against.
func TestHelpGolden(t *testing.T) {
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	if err := app.Run([]string{"maple", "--help"}); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "help.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/maple -update)", err)
	}
	if out.String() != string(want) {
		t.Errorf("maple --help changed; run go test ./cmd/maple -update if intended:\n%s", out.String())
	}
}

// TestBadRedisURL: a wrong or unreachable Redis gives a one-line error
// that names it, not a stack trace.
func TestBadRedisURL(t *testing.T) {
	port := storetest.FreePort(t) // nothing listens there
	for _, args := range [][]string{
		{"maple", "gateway", "--redis", "redis://127.0.0.1:" + itoa(port) + "/0", "--listen", "127.0.0.1:0"},
		{"maple", "worker", "--redis", "redis://127.0.0.1:" + itoa(port) + "/0"},
		{"maple", "worker", "--redis", "redis://127.0.0.1:notaport/0"},
	} {
		app := newApp()
		app.Writer, app.ErrWriter = &bytes.Buffer{}, &bytes.Buffer{}
		err := app.Run(args)
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "127.0.0.1:") {
			t.Errorf("%v: error %q, want one line naming the server", args, msg)
		}
	}
}

// TestDev runs `maple dev` in-process: embedded Redis, gateway, worker;
// the printed address answers an echo.
func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole farm")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out storetest.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &bytes.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, []string{"maple", "dev", "--listen", "127.0.0.1:0", "--log-level", "error"})
	}()
	re := regexp.MustCompile(`gateway on (\S+),`)
	var addr string
	for deadline := time.Now().Add(15 * time.Second); addr == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("dev exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no address:\n%s", out.String())
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	c, err := client.Dial(rctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Request(rctx, 1, []byte("hi"))
	if err != nil || r.Ret != 0 || string(r.Body) != "hi" {
		t.Fatalf("echo: %q ret %d err %v", r.Body, r.Ret, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dev did not stop within 20s of its context ending")
	}
}

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func itoa(n int) string { return strconvItoa(n) }

var strconvItoa = strconv.Itoa
