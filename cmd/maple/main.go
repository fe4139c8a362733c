// Command maple is the demo binary of the maple farm: every command of a
// farm (dev, gateway, worker, client and the operator tools), with the demo
// game (docs/protocol.md section 3) and tic-tac-toe (docs/tictactoe.md) as
// the game. A game builds its own binary the same way: farm.Main with its
// own app (docs/guide.md).
package main

import (
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/examples/tictactoe"
	"github.com/maple-farm/maple/farm"
	"github.com/maple-farm/maple/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() { farm.Main(worker.NewApp(), options()...) }

// options make the farm binary maple: the demo games, the --login-secret
// flag of the demo's cmd 2, and the tic-tac-toe page.
func options() []farm.Option {
	return []farm.Option{
		farm.Name("maple"),
		farm.Usage("a Redis-centric game-server farm where players never notice a deploy"),
		farm.Version(version),
		farm.Flags(&cli.StringFlag{Name: "login-secret", EnvVars: []string{"MAPLE_LOGIN_SECRET"},
			Usage: "the demo's cmd 2 takes login tokens signed with this secret (worker.SignLogin, maple login-token) instead of a bare user id; empty: open logins"}),
		farm.Setup(setup),
		farm.Web(tictactoe.Web()),
	}
}

// setup adds the demo game (cmd 1-8) and tic-tac-toe (cmd 100 and up) to
// app. With --login-secret, cmd 2 takes signed login tokens; without, it
// says at start that anyone can log in as anyone.
func setup(c *cli.Context, app *worker.App, log *slog.Logger) error {
	secret := c.String("login-secret")
	if secret == "" {
		log.Warn("open logins: cmd 2 binds any user id a client sends, without a credential (set --login-secret for signed login tokens)")
	} else {
		log.Info("signed logins: cmd 2 takes login tokens signed with --login-secret")
	}
	demo.Register(app, demo.Options{LoginSecret: []byte(secret)})
	tictactoe.Register(app, tictactoe.Options{})
	return nil
}

// newApp is the command line main runs, for tests.
func newApp() *cli.App { return farm.New(worker.NewApp(), options()...) }
