// Package demo is the demo game of PROTOCOL.md section 3, the app that
// `maple dev` and `maple worker` run. Outside test suites rely on its
// routes.
package demo

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/maple-farm/maple/worker"
)

// The demo game's routes (PROTOCOL.md section 3).
const (
	CmdEcho    int32 = 1
	CmdLogin   int32 = 2
	CmdCounter int32 = 3
	CmdWhoami  int32 = 4
	CmdJoin    int32 = 5
	CmdSay     int32 = 6
	CmdSleep   int32 = 7
	CmdPanic   int32 = 8
)

// MaxSleep is the longest cmd 7 sleeps.
const MaxSleep = 10 * time.Second

// New returns the demo app.
func New() *worker.App {
	app := worker.NewApp()
	app.Route(CmdEcho, echo)
	app.Route(CmdCounter, counter)
	app.Route(CmdSleep, sleep)
	app.Route(CmdPanic, func(ctx context.Context, r *worker.Request) error {
		panic("demo: cmd 8 panics on purpose")
	})
	return app
}

func echo(ctx context.Context, r *worker.Request) error {
	return r.Reply(r.Box.Body)
}

// counter increments the named counter with a Lua script and answers the
// new value in ASCII decimal.
func counter(ctx context.Context, r *worker.Request) error {
	n, err := r.Store.IncrCounter(ctx, string(r.Box.Body), 1)
	if err != nil {
		return err
	}
	return r.Reply(strconv.AppendInt(nil, n, 10))
}

func sleep(ctx context.Context, r *worker.Request) error {
	ms, err := strconv.Atoi(string(r.Box.Body))
	if err != nil || ms < 0 {
		return errors.New("demo: sleep wants milliseconds in ASCII decimal")
	}
	d := min(time.Duration(ms)*time.Millisecond, MaxSleep)
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	return r.Reply(r.Box.Body)
}
