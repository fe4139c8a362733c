package farm

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/worker"
)

// defaultGOGC is the garbage collector's target when GOGC is not set: the
// frame path allocates a little per frame and the heap stays small, so
// collecting a quarter as often buys about a tenth more frames per second
// (docs/benchmarks.md) for a few MB more memory. GOGC=100 restores Go's
// default; GOMEMLIMIT still applies.
const defaultGOGC = 400

// Main runs the game's binary: it reads the command line, runs the command
// it names until SIGINT or SIGTERM (a drain), and exits; on an error it
// prints it on one line and exits with status 1. app holds the game's
// routes and hooks; Main never returns.
//
// Unless GOGC is set, Main sets the collector's target to 400 (see
// docs/operations.md).
func Main(app *worker.App, opts ...Option) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cmd := New(app, opts...)
	if err := cmd.RunContext(ctx, os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd.Name, err)
		stop()
		os.Exit(1)
	}
	stop()
	os.Exit(0)
}

// New returns the command line Main runs, for tests and for programs that
// run it themselves (cli.App.RunContext). Its commands are those of the
// maple binary: dev, gateway, worker, client, login-token, trigger, dead,
// stat, bench and refserver, where worker and dev run app.
func New(app *worker.App, opts ...Option) *cli.App {
	g := &game{app: app, name: filepath.Base(os.Args[0]), version: "dev",
		usage: "a game on maple, a Redis-centric game-server farm where players never notice a deploy"}
	for _, o := range opts {
		o(g)
	}
	if g.app == nil {
		g.app = worker.NewApp()
	}
	cmds := []*cli.Command{
		g.devCommand(),
		g.gatewayCommand(),
		g.workerCommand(),
		clientCommand(),
		loginTokenCommand(),
		triggerCommand(),
		deadCommand(),
		statCommand(),
		benchCommand(), refserverCommand(),
	}
	return &cli.App{
		Name:     g.name,
		Usage:    g.usage,
		Version:  g.version,
		Commands: append(cmds, g.commands...),
		// Errors are printed once, by Main; cli must not call os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// An Option changes what New and Main build.
type Option func(*game)

// Name sets the binary's name in help and messages (default: the name it
// was started by).
func Name(name string) Option { return func(g *game) { g.name = name } }

// Usage sets the one-line description of the binary in its help.
func Usage(usage string) Option { return func(g *game) { g.usage = usage } }

// Version sets the version that --version prints and that stat reports
// carry (maple stat shows it per process, so a reload is visible). Set it
// at build time: -ldflags "-X main.version=...".
func Version(v string) Option { return func(g *game) { g.version = v } }

// Flags adds the game's own flags to the worker and dev commands; Setup
// reads them.
func Flags(flags ...cli.Flag) Option {
	return func(g *game) { g.flags = append(g.flags, flags...) }
}

// Setup runs fn in the worker and dev commands after the flags are read
// and before the worker starts, once per process (a SIGHUP reload runs it
// again in the new process). It may add routes and hooks to app, read the
// game's flags (Flags) and open what the game needs; an error stops the
// command before it serves anything.
func Setup(fn func(c *cli.Context, app *worker.App, log *slog.Logger) error) Option {
	return func(g *game) { g.setups = append(g.setups, fn) }
}

// Commands adds commands of the game's own (a tool, a migration) next to
// the farm's.
func Commands(cmds ...*cli.Command) Option {
	return func(g *game) { g.commands = append(g.commands, cmds...) }
}

// Web sets the game's web page, served on the gateway's WebSocket
// listener: always by dev, by gateway with --web-demo. --web-root serves a
// directory instead.
func Web(page http.Handler) Option { return func(g *game) { g.web = page } }

// game is what the options set: the binary's identity and the game's parts.
type game struct {
	app      *worker.App
	name     string
	usage    string
	version  string
	flags    []cli.Flag
	setups   []func(c *cli.Context, app *worker.App, log *slog.Logger) error
	commands []*cli.Command
	web      http.Handler
}

// setup runs the game's Setup functions and returns the app to serve.
func (g *game) setup(c *cli.Context, log *slog.Logger) (*worker.App, error) {
	for _, fn := range g.setups {
		if err := fn(c, g.app, log); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	return g.app, nil
}

// runHint is how a user runs this binary again, for the hints dev prints:
// its name, or "go run <dir>" when `go run` built it from a directory of
// the working tree (the quick start).
func (g *game) runHint() string {
	if !strings.Contains(exePath, string(filepath.Separator)+"go-build") {
		return g.name
	}
	if wd, err := os.Getwd(); err == nil {
		if _, err := os.Stat(filepath.Join(wd, "cmd", g.name)); err == nil {
			return "go run ./cmd/" + g.name
		}
	}
	return "go run ."
}
