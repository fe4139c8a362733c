// Package demo is the demo game of docs/protocol.md section 3, the app that
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

// The demo game's routes (docs/protocol.md section 3).
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

// Options configure the demo app.
type Options struct {
	// LoginSecret, if set, makes cmd 2 take a signed login token
	// (worker.SignLogin) instead of a bare user id: a client logs in only
	// as the user its account service vouched for. Without it anyone can
	// log in as anyone, which is what the protocol's demo says.
	LoginSecret []byte
}

// New returns the demo app, with open logins (docs/protocol.md section 3).
func New() *worker.App { return NewWith(Options{}) }

// NewWith returns the demo app configured by o.
func NewWith(o Options) *worker.App {
	app := worker.NewApp()
	Register(app, o)
	return app
}

// Register adds the demo game's routes to app.
func Register(app *worker.App, o Options) {
	app.Route(CmdEcho, echo)
	if len(o.LoginSecret) > 0 {
		secret := o.LoginSecret
		app.Route(CmdLogin, func(ctx context.Context, r *worker.Request) error {
			if err := r.LoginWithToken(ctx, secret, string(r.Box.Body)); err != nil {
				return err
			}
			return r.Reply(nil)
		})
	} else {
		app.Route(CmdLogin, login)
	}
	app.Route(CmdCounter, counter)
	app.Route(CmdWhoami, whoami)

	// Routes that need a logged-in player.
	player := app.Group("player")
	player.Before(requireLogin)
	player.Route(CmdJoin, join)
	player.Route(CmdSay, say)

	app.Route(CmdSleep, sleep)
	app.Route(CmdPanic, func(ctx context.Context, r *worker.Request) error {
		panic("demo: cmd 8 panics on purpose")
	})
}

func echo(ctx context.Context, r *worker.Request) error {
	return r.Reply(r.Box.Body)
}

// counter increments the named counter (store.Store.IncrCounter) and
// answers the new value in ASCII decimal.
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

// login binds the connection to the user id in the body; an older
// connection of the same user, on any gateway, is closed.
func login(ctx context.Context, r *worker.Request) error {
	uid := string(r.Box.Body)
	if uid == "" {
		return errors.New("demo: login needs a user id")
	}
	if err := r.Login(ctx, uid); err != nil {
		return err
	}
	return r.Reply(nil)
}

func whoami(ctx context.Context, r *worker.Request) error {
	return r.Reply([]byte(r.Conn.UID))
}

func requireLogin(ctx context.Context, r *worker.Request) error {
	if r.Conn.UID == "" {
		return worker.ErrLoginRequired
	}
	return nil
}

func join(ctx context.Context, r *worker.Request) error {
	group := string(r.Box.Body)
	if group == "" {
		return errors.New("demo: join needs a group name")
	}
	if err := r.Store.JoinGroup(ctx, group, r.Conn.UID); err != nil {
		return err
	}
	return r.Reply(nil)
}

// say pushes "<uid>: <text>" to every member of the sender's groups, the
// sender included, once each.
func say(ctx context.Context, r *worker.Request) error {
	groups, err := r.Store.GroupsOf(ctx, r.Conn.UID)
	if err != nil {
		return err
	}
	seen := map[string]bool{r.Conn.UID: true}
	uids := []string{r.Conn.UID}
	for _, g := range groups {
		members, err := r.Store.Members(ctx, g)
		if err != nil {
			return err
		}
		for _, m := range members {
			if !seen[m] {
				seen[m] = true
				uids = append(uids, m)
			}
		}
	}
	msg := append([]byte(r.Conn.UID+": "), r.Box.Body...)
	if _, err := r.PushUsers(ctx, uids, CmdSay, msg); err != nil {
		return err
	}
	return r.Reply(nil)
}
