// Command quickstart is the game that docs/guide.md builds: a few rooms to
// chat in, with logins, pushes, a countdown timer and a Lua script of its
// own, made into a whole farm binary by farm.Main.
//
//	go build -ldflags "-X main.version=v1" -o quickstart .
//	./quickstart dev                                  # a whole farm in one process
//	./quickstart gateway --redis redis://127.0.0.1:6379/0 --listen :28000
//	./quickstart worker  --redis redis://127.0.0.1:6379/0
//
// Its routes are listed in game.go.
package main

import (
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/farm"
	"github.com/maple-farm/maple/worker"
)

// version is set at build time: go build -ldflags "-X main.version=v2".
// cmd 1000 answers it, and `quickstart stat` shows it per process.
var version = "dev"

func main() {
	farm.Main(newApp(), options()...)
}

// options make the binary: its name and version, the game's own flag and
// the startup that reads it.
func options() []farm.Option {
	return []farm.Option{
		farm.Name("quickstart"),
		farm.Usage("the quickstart game of docs/guide.md on a maple farm"),
		farm.Version(version),
		farm.Flags(&cli.StringFlag{
			Name:    "login-secret",
			EnvVars: []string{"MAPLE_LOGIN_SECRET"},
			Usage:   "cmd 2 takes login tokens signed with this secret (quickstart login-token); empty: any user id, for development",
		}),
		farm.Setup(setup),
	}
}

// setup runs in the worker and dev commands, before the worker starts:
// the login route depends on the game's flag.
func setup(c *cli.Context, app *worker.App, log *slog.Logger) error {
	secret := []byte(c.String("login-secret"))
	if len(secret) == 0 {
		log.Warn("open logins: cmd 2 takes any user id (set --login-secret in production)")
	}
	app.Route(CmdLogin, login(secret))
	return nil
}
