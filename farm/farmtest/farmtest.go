// Package farmtest runs a whole farm inside the process, for a game's tests
// and examples: an embedded Redis (miniredis), a gateway on a free port of
// 127.0.0.1 and one worker running the game's app, as `dev` does. It is to
// a game what net/http/httptest is to a handler:
//
//	f, err := farmtest.Start(app)
//	if err != nil {
//		t.Fatal(err)
//	}
//	defer f.Close()
//	c, err := client.Dial(ctx, f.Addr, client.Options{})
//
// Tests that need a real redis-server (Lua that miniredis does not run,
// Cluster, restarts) start the farm's processes themselves; see e2e/.
package farmtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/worker"
)

// Farm is a running in-process farm.
type Farm struct {
	// Addr is the gateway's TCP address, for client.Dial.
	Addr string
	// Redis is the embedded Redis's address, for a go-redis client or
	// trigger.NewPublisher.
	Redis string
	// Prefix starts the farm's keys and channels (store.DefaultPrefix).
	Prefix string

	mr      *miniredis.Miniredis
	cancel  context.CancelFunc
	done    chan error // gateway's and worker's Run results
	running int        // how many of them have not returned
}

// Options change the farm Start runs; the zero value is fine.
type Options struct {
	Logger *slog.Logger // default: discard
	// Worker and Gateway are the processes' options, if a test needs to
	// set some (their Redis, Listen and Logger are set by Start).
	Worker  worker.Options
	Gateway gateway.Options
}

// Start runs a farm for app and returns once the gateway takes
// connections and the worker pulls frames. Close stops it.
func Start(app *worker.App) (*Farm, error) { return StartWith(app, Options{}) }

// StartWith is Start with options.
func StartWith(app *worker.App, o Options) (*Farm, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, fmt.Errorf("farmtest: embedded redis: %w", err)
	}
	mr.ClockTTL(true) // leases and heartbeats expire in real time
	ro := &redis.UniversalOptions{Addrs: []string{mr.Addr()}}

	gwo := o.Gateway
	gwo.Redis, gwo.Logger = ro, log
	if gwo.Listen == "" {
		gwo.Listen = "127.0.0.1:0"
	}
	gw, err := gateway.New(gwo)
	if err != nil {
		mr.Close()
		return nil, err
	}
	wo := o.Worker
	wo.Redis, wo.Logger = ro, log
	w, err := worker.New(app, wo)
	if err != nil {
		mr.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Farm{Redis: mr.Addr(), Prefix: gwo.Prefix, mr: mr, cancel: cancel, done: make(chan error, 2), running: 2}
	if f.Prefix == "" {
		f.Prefix = store.DefaultPrefix
	}
	go func() { f.done <- gw.Run(ctx) }()
	go func() { f.done <- w.Run(ctx) }()
	timeout := time.After(10 * time.Second)
	for _, ready := range []<-chan struct{}{gw.Ready(), w.Ready()} {
		select {
		case <-ready:
		case err := <-f.done:
			f.running--
			f.Close()
			return nil, fmt.Errorf("farmtest: a process stopped while starting: %w", err)
		case <-timeout:
			f.Close()
			return nil, errors.New("farmtest: the farm did not start within 10s")
		}
	}
	f.Addr = gw.Addr().String()
	if ta, ok := gw.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		f.Addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(ta.Port))
	}
	return f, nil
}

// Close stops the gateway and the worker (a drain, as on SIGTERM) and the
// embedded Redis.
func (f *Farm) Close() {
	f.cancel()
	timeout := time.After(30 * time.Second)
	for ; f.running > 0; f.running-- {
		select {
		case <-f.done:
		case <-timeout:
			f.running = 0
		}
	}
	f.mr.Close()
}
