package worker_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/worker"
)

// A small game: an echo route, a login route, and a "player" group whose
// Before hook refuses anonymous clients with ret -10004. It needs a Redis
// and a gateway to talk to, so it has no output to check.
func ExampleApp() {
	app := worker.NewApp()
	app.Route(1, func(ctx context.Context, r *worker.Request) error {
		return r.Reply(r.Box.Body) // echo
	})
	app.Route(2, func(ctx context.Context, r *worker.Request) error {
		if err := r.Login(ctx, string(r.Box.Body)); err != nil {
			return err // answered -10001
		}
		return r.Reply([]byte("welcome"))
	})
	player := app.Group("player")
	player.Before(func(ctx context.Context, r *worker.Request) error {
		if r.Conn.UID == "" {
			return worker.ErrLoginRequired
		}
		return nil
	})
	player.Route(3, func(ctx context.Context, r *worker.Request) error {
		return r.Reply([]byte("hello " + r.Conn.UID))
	})

	w, err := worker.New(app, worker.Options{Redis: &redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}}})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := w.Run(ctx); err != nil { // drains and returns nil on Ctrl-C
		log.Fatal(err)
	}
}
