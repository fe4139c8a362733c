package worker_test

import (
	"context"
	"fmt"
	"log"
	"strconv"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/farm/farmtest"
	"github.com/maple-farm/maple/worker"
)

// A game in a few routes: echo, login, and a group of routes that need a
// logged-in player, guarded by a Before hook. In a game's binary the app
// goes to farm.Main; here a farm in the process runs it.
func Example() {
	app := worker.NewApp()
	app.Route(1, func(ctx context.Context, r *worker.Request) error {
		return r.Reply(r.Box.Body) // echo
	})
	app.Route(2, func(ctx context.Context, r *worker.Request) error {
		if err := r.Login(ctx, string(r.Box.Body)); err != nil { // bind the user id to this connection
			return err
		}
		return r.Reply(nil)
	})
	player := app.Group("player")
	player.Before(func(ctx context.Context, r *worker.Request) error {
		if r.Conn.UID == "" {
			return worker.ErrLoginRequired // the client gets its ret code, the handler never runs
		}
		return nil
	})
	player.Route(10, func(ctx context.Context, r *worker.Request) error {
		// Game state lives in Redis, never in the worker: any worker may
		// run the player's next frame.
		n, err := r.Store.UserIncr(ctx, r.Conn.UID, "coins", 5)
		if err != nil {
			return err
		}
		return r.Reply([]byte(strconv.FormatInt(n, 10)))
	})

	f, err := farmtest.Start(app)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	c, err := client.Dial(ctx, f.Addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, req := range []struct {
		cmd  int32
		body string
	}{{1, "hi"}, {10, ""}, {2, "alice"}, {10, ""}, {10, ""}} {
		r, err := c.Request(ctx, req.cmd, []byte(req.body))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("cmd %d: ret %d body %q\n", req.cmd, r.Ret, r.Body)
	}
	// Output:
	// cmd 1: ret 0 body "hi"
	// cmd 10: ret -10004 body ""
	// cmd 2: ret 0 body ""
	// cmd 10: ret 0 body "5"
	// cmd 10: ret 0 body "10"
}

// Connection events and a push: greet each player when they connect.
func ExampleApp_OnOpen() {
	app := worker.NewApp()
	app.OnOpen(func(ctx context.Context, r *worker.Request) error {
		return r.Push(100, []byte("welcome"))
	})
	f, err := farmtest.Start(app)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	c, err := client.Dial(context.Background(), f.Addr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	push := <-c.Pushes()
	fmt.Printf("push cmd=%d body=%s\n", push.Cmd, push.Body)
	// Output: push cmd=100 body=welcome
}
