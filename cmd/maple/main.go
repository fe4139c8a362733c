// Command maple runs every part of a maple farm: dev (all in one process on
// an embedded Redis), gateway, worker, client, and the operator tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultGOGC is the garbage collector's target when GOGC is not set: the
// frame path allocates a little per frame and the heap stays small, so
// collecting a quarter as often buys about a tenth more frames per second
// (docs/benchmarks.md) for a few MB more memory. GOGC=100 restores Go's
// default; GOMEMLIMIT still applies.
const defaultGOGC = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
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
			loginTokenCommand(),
			triggerCommand(),
			deadCommand(),
			statCommand(),
			benchCommand(), refserverCommand(),
		},
		// Errors are printed once, by main; cli must not call os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
