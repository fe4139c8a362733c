// Command testworker is the demo game plus routes that the restart tests
// need: one that kills its process, one that records the order frames are
// handled in. Configured by the same MAPLE_* variables as maple worker.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/worker"
)

// Routes added to the demo game.
const (
	CmdCrash  int32 = 50 // the process exits at once, as if killed
	CmdRecord int32 = 51 // RPUSH "<conn> <sn>" to OrderKey, then echo
)

// OrderKey is the list CmdRecord appends to: Store.Key("test", "order",
// "list"), <prefix>:{test:order}:list.
const OrderKey = "{test:order}:list"

// record appends to a list: the game's own script, through the public API.
var record = store.NewScript(`return redis.call('RPUSH', KEYS[1], ARGV[1])`)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ro, err := store.ParseURL(os.Getenv("MAPLE_REDIS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	app := demo.New()
	app.Route(CmdCrash, func(ctx context.Context, r *worker.Request) error {
		log.Info("crashing on purpose", "deliveries", r.Deliveries)
		os.Exit(3)
		return nil
	})
	prefix := os.Getenv("MAPLE_PREFIX")
	app.Route(CmdRecord, func(ctx context.Context, r *worker.Request) error {
		key, err := r.Store.Key("test", "order", "list")
		if err != nil {
			return err
		}
		if err := r.Store.Run(ctx, record, []string{key}, r.Conn.ID+" "+strconv.FormatUint(uint64(r.Box.SN), 10)).Err(); err != nil {
			return err
		}
		return r.Reply(r.Box.Body)
	})
	o := worker.Options{Redis: ro, Prefix: prefix, Logger: log}
	o.Concurrency, _ = strconv.Atoi(os.Getenv("MAPLE_CONCURRENCY"))
	o.MaxDeliveries, _ = strconv.Atoi(os.Getenv("MAPLE_MAX_DELIVERIES"))
	o.Lease, _ = time.ParseDuration(os.Getenv("MAPLE_LEASE"))
	o.ShutdownTimeout, _ = time.ParseDuration(os.Getenv("MAPLE_SHUTDOWN_TIMEOUT"))
	w, err := worker.New(app, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
