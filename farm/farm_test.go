package farm_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/farm"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/worker"
)

// TestGameBinary builds a game's command line as a game's main would and
// runs its dev command: the game's own flag reaches its Setup, the route
// Setup adds answers through the gateway, and the game's own command sits
// next to the farm's.
func TestGameBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole farm")
	}
	app := worker.NewApp()
	app.Route(1, func(ctx context.Context, r *worker.Request) error { return r.Reply(r.Box.Body) })
	var toolRan bool
	cmd := farm.New(app,
		farm.Name("mygame"), farm.Version("1.2.3"),
		farm.Flags(&cli.StringFlag{Name: "greeting", Value: "hello"}),
		farm.Setup(func(c *cli.Context, app *worker.App, log *slog.Logger) error {
			greeting := c.String("greeting")
			app.Route(2, func(ctx context.Context, r *worker.Request) error {
				return r.Reply([]byte(greeting + " " + string(r.Box.Body)))
			})
			return nil
		}),
		farm.Commands(&cli.Command{Name: "tool", Action: func(*cli.Context) error { toolRan = true; return nil }}),
	)

	var help bytes.Buffer
	cmd.Writer = &help
	if err := cmd.Run([]string{"mygame", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mygame", "dev", "gateway", "worker", "trigger", "stat", "tool"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
	if err := cmd.Run([]string{"mygame", "tool"}); err != nil || !toolRan {
		t.Fatalf("the game's own command: ran %v, err %v", toolRan, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out storetest.Buffer
	cmd.Writer, cmd.ErrWriter = &out, &bytes.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- cmd.RunContext(ctx, []string{"mygame", "dev", "--listen", "127.0.0.1:0", "--ws-listen", "",
			"--log-level", "error", "--greeting", "hi"})
	}()
	re := regexp.MustCompile(`mygame dev: gateway on (\S+),`)
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
	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for cmdNo, want := range map[int32]string{1: "you", 2: "hi you"} {
		r, err := c.Request(ctx, cmdNo, []byte("you"))
		if err != nil || r.Ret != 0 || string(r.Body) != want {
			t.Errorf("cmd %d: %q ret %d err %v, want %q", cmdNo, r.Body, r.Ret, err, want)
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("dev stopped with %v", err)
	}
}

// A failing Setup stops the worker before it serves anything, with the
// error.
func TestSetupError(t *testing.T) {
	cmd := farm.New(worker.NewApp(), farm.Setup(func(*cli.Context, *worker.App, *slog.Logger) error {
		return errors.New("no config")
	}))
	cmd.Writer, cmd.ErrWriter = &bytes.Buffer{}, &bytes.Buffer{}
	r := storetest.Mini(t)
	err := cmd.Run([]string{"game", "worker", "--redis", "redis://" + r.Addr()})
	if err == nil || !strings.Contains(err.Error(), "no config") {
		t.Fatalf("err = %v, want the setup's error", err)
	}
}
