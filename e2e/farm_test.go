// Package e2e runs whole farms (gateways, workers, real TCP clients)
// against a real redis-server started per test, and against miniredis.
package e2e

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/worker"
)

var verbose = flag.Bool("farm.log", false, "show the farm's logs")

func logger(t testing.TB) *slog.Logger {
	if *verbose {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// backend is a Redis a farm runs on.
type backend struct {
	name  string
	redis func(t *testing.T) *redis.UniversalOptions
}

func realRedis(t *testing.T) *redis.UniversalOptions {
	srv := storetest.Start(t, storetest.Options{})
	return &redis.UniversalOptions{Addrs: []string{srv.Addr}}
}

func miniRedis(t *testing.T) *redis.UniversalOptions {
	m := storetest.Mini(t)
	return &redis.UniversalOptions{Addrs: []string{m.Addr()}}
}

var backends = []backend{{"redis", realRedis}, {"miniredis", miniRedis}}

// farm is a set of in-process gateways and workers sharing one Redis.
type farm struct {
	t      *testing.T
	ro     *redis.UniversalOptions
	prefix string
	// logOut, if set (keepLog), is where its processes log.
	logOut *os.File
}

// log is the logger of the farm's processes: the test's (-verbose), or
// the file kept for a failure (keepLog).
func (f *farm) log() *slog.Logger {
	if f.logOut != nil && !*verbose {
		return slog.New(slog.NewTextHandler(f.logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return logger(f.t)
}

// keepLog has the farm's processes started from now on log (info and up)
// to a file, whose tail is shown if the test fails, as a process farm's
// logs are: a failure under load in CI, where -verbose is off, says what
// the farm saw.
func (f *farm) keepLog() {
	path := filepath.Join(f.t.TempDir(), "farm.log")
	out, err := os.Create(path)
	if err != nil {
		f.t.Fatal(err)
	}
	f.logOut = out
	f.t.Cleanup(func() {
		out.Close()
		if f.t.Failed() {
			b, _ := os.ReadFile(path)
			f.t.Logf("--- tail of the farm's log:\n%s", tail(b, 30000))
		}
	})
}

func (f *farm) keys() keys.Keys { return keys.New(f.prefix) }

func newFarm(t *testing.T, ro *redis.UniversalOptions) *farm {
	return &farm{t: t, ro: ro, prefix: storetest.Prefix(t)}
}

// gateway starts a gateway and returns it once it listens; it stops when
// the test ends.
func (f *farm) gateway(mod func(*gateway.Options)) *gateway.Server {
	f.t.Helper()
	o := gateway.Options{Listen: "127.0.0.1:0", Redis: f.ro, Prefix: f.prefix, Logger: f.log()}
	if mod != nil {
		mod(&o)
	}
	gw, err := gateway.New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("gateway stopped with %v", err)
		}
	})
	select {
	case <-gw.Ready():
	case err := <-done:
		f.t.Fatalf("gateway did not start: %v", err)
	case <-time.After(10 * time.Second):
		f.t.Fatal("gateway did not start in 10s")
	}
	return gw
}

// runningWorker is a worker the test can stop.
type runningWorker struct {
	*worker.Worker
	stop func() // cancels and waits for Run to return
}

// worker starts a demo worker (or app, if given); it stops when the test
// ends, or earlier with stop.
func (f *farm) worker(app *worker.App, mod func(*worker.Options)) *runningWorker {
	f.t.Helper()
	if app == nil {
		app = demo.New()
	}
	o := worker.Options{Redis: f.ro, Prefix: f.prefix, Logger: f.log(), Lease: 2 * time.Second}
	if mod != nil {
		mod(&o)
	}
	w, err := worker.New(app, o)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("worker stopped with %v", err)
		}
	}
	f.t.Cleanup(stop)
	return &runningWorker{Worker: w, stop: stop}
}

func dial(t *testing.T, gw *gateway.Server) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, gw.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
