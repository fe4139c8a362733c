// Command maple runs every part of a maple farm: dev (all in one process on
// an embedded Redis), gateway, worker, client, and the operator tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "maple:", err)
		stop()
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "maple",
		Usage:   "a Redis-centric game-server farm where players never notice a deploy",
		Version: version,
		Commands: []*cli.Command{
			devCommand(),
			gatewayCommand(),
			workerCommand(),
			clientCommand(),
			triggerCommand(),
			deadCommand(),
			statCommand(),
			benchCommand(), refserverCommand(),
		},
		// Errors are printed once, by main; cli must not call os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
