package farm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/worker"
)

func gatewayFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: gateway.DefaultListen, EnvVars: []string{"MAPLE_LISTEN"},
			Usage: "TCP address for players"},
		&cli.BoolFlag{Name: "reuseport", EnvVars: []string{"MAPLE_REUSEPORT"},
			Usage: "bind with SO_REUSEPORT, so a new gateway can take over the port (rolling restart)"},
		&cli.IntFlag{Name: "max-frame", Value: box.DefaultMaxFrame, EnvVars: []string{"MAPLE_MAX_FRAME"},
			Usage: "largest frame (packet_len) accepted, in bytes"},
		&cli.IntFlag{Name: "max-conns", Value: gateway.DefaultMaxConns, EnvVars: []string{"MAPLE_MAX_CONNS"},
			Usage: "most client connections held; more are refused"},
		&cli.DurationFlag{Name: "idle-timeout", Value: gateway.DefaultIdleTimeout, EnvVars: []string{"MAPLE_IDLE_TIMEOUT"},
			Usage: "close a client that sent nothing this long (-1s: never)"},
		&cli.IntFlag{Name: "out-buffer", EnvVars: []string{"MAPLE_OUT_BUFFER"}, DefaultText: "2 x --max-frame + 64 KiB",
			Usage: "bytes queued for one client before it is dropped as not reading (at least 2 x --max-frame)"},
		&cli.IntFlag{Name: "max-inflight", Value: gateway.DefaultMaxInflight, EnvVars: []string{"MAPLE_MAX_INFLIGHT"},
			Usage: "frames one connection may have queued and not answered; past it frames get -10002 at once (-1: no bound)"},
		&cli.IntFlag{Name: "max-conns-per-ip", EnvVars: []string{"MAPLE_MAX_CONNS_PER_IP"},
			Usage: "connections one client address may hold; more are refused (0: no limit)"},
		&cli.DurationFlag{Name: "frame-timeout", Value: gateway.DefaultFrameTimeout, EnvVars: []string{"MAPLE_FRAME_TIMEOUT"},
			Usage: "close a client whose frame is not complete this long after its first byte (-1s: never)"},
		&cli.IntFlag{Name: "partial-budget", Value: gateway.DefaultPartialBudget, EnvVars: []string{"MAPLE_PARTIAL_BUDGET"},
			Usage: "bytes of frames not yet complete, all connections together; past it the connections with the oldest are closed"},
		&cli.IntFlag{Name: "write-budget", Value: queue.DefaultWriteBudget, EnvVars: []string{"MAPLE_WRITE_BUDGET"},
			Usage: "most bytes of one Redis stream entry, list element or pipeline; bigger batches are split"},
		&cli.IntFlag{Name: "backlog", Value: gateway.DefaultBacklog, EnvVars: []string{"MAPLE_BACKLOG"},
			Usage: "frames held while Redis is slow or away; past it frames get -10002"},
		&cli.IntFlag{Name: "queue-bound", Value: gateway.DefaultQueueBound, EnvVars: []string{"MAPLE_QUEUE_BOUND"},
			Usage: "frames this gateway has queued and workers have not finished, past which frames get -10002 (-1: no bound)"},
		&cli.IntFlag{Name: "loops", Value: gateway.DefaultLoops, EnvVars: []string{"MAPLE_LOOPS"},
			Usage: "event loops serving sockets"},
		&cli.StringFlag{Name: "id", EnvVars: []string{"MAPLE_GATEWAY_ID"},
			Usage: "gateway id (default: random)"},
		&cli.DurationFlag{Name: "write-stall", Value: gateway.DefaultWriteStall, EnvVars: []string{"MAPLE_WRITE_STALL"},
			Usage: "drop a client whose queued output has not moved this long"},
		&cli.DurationFlag{Name: "drain-timeout", EnvVars: []string{"MAPLE_DRAIN_TIMEOUT"},
			Usage: "on SIGTERM, stop accepting and keep serving connected players this long (rolling restart)"},
		&cli.DurationFlag{Name: "close-grace", Value: gateway.DefaultCloseGrace, EnvVars: []string{"MAPLE_CLOSE_GRACE"},
			Usage: "after the drain, how long to wait for replies still owed before closing"},
	}
}

func workerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "concurrency", Value: worker.DefaultConcurrency, EnvVars: []string{"MAPLE_CONCURRENCY"},
			Usage: "handlers running at once (one connection's frames always run one at a time)"},
		&cli.DurationFlag{Name: "liveness", Value: worker.DefaultLiveness, EnvVars: []string{"MAPLE_LIVENESS"},
			Usage: "a killed worker's frames move to another worker about this long after it stopped; a worker that cannot renew its liveness this long gives its partitions up"},
		&cli.DurationFlag{Name: "lease", Value: worker.DefaultLease, EnvVars: []string{"MAPLE_LEASE"},
			Usage: "a partition lease: how long a partition stays with a stopped worker that cannot be seen dead by --liveness (one of an older release)"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: worker.DefaultShutdownTimeout, EnvVars: []string{"MAPLE_SHUTDOWN_TIMEOUT"},
			Usage: "on SIGTERM, time to finish the frames in hand"},
		&cli.IntFlag{Name: "max-deliveries", Value: worker.DefaultMaxDeliveries, EnvVars: []string{"MAPLE_MAX_DELIVERIES"},
			Usage: "tries before a frame goes to the dead-letter list"},
		&cli.DurationFlag{Name: "handler-timeout", Value: worker.DefaultHandlerTimeout, EnvVars: []string{"MAPLE_HANDLER_TIMEOUT"},
			Usage: "deadline of each handler's context"},
		&cli.StringFlag{Name: "worker-id", EnvVars: []string{"MAPLE_WORKER_ID"},
			Usage: "worker name, a label: each process adds a random suffix to it, so a reload or a second process with the same name never shares its leases (default: random)"},
		&cli.DurationFlag{Name: "gateway-timeout", Value: worker.DefaultGatewayTimeout, EnvVars: []string{"MAPLE_GATEWAY_TIMEOUT"},
			Usage: "a gateway silent this long is dead: its players' sessions are removed"},
		&cli.StringFlag{Name: "login-mode", Value: string(store.Kick), EnvVars: []string{"MAPLE_LOGIN_MODE"},
			Usage: "a second login of a user: kick (close the older connection) or refuse"},
		&cli.Int64Flag{Name: "max-held-bytes", Value: worker.DefaultMaxHeldBytes, EnvVars: []string{"MAPLE_MAX_HELD_BYTES"},
			Usage: "bytes of frames read and not yet done a worker holds; past it, it reads nothing new until some are done"},
	}
}

// workerSharedFlags are the worker's flags that gatewayFlags defines too,
// with the same meaning for both: `maple dev` gets them from there, once,
// and `maple worker` from here.
func workerSharedFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "max-frame", Value: worker.DefaultMaxFrame, EnvVars: []string{"MAPLE_MAX_FRAME"},
			Usage: "largest frame (header and body) a handler may send a client; bigger replies and pushes are refused"},
		&cli.IntFlag{Name: "write-budget", Value: worker.DefaultWriteBudget, EnvVars: []string{"MAPLE_WRITE_BUDGET"},
			Usage: "most bytes of one list element or pipeline written to Redis; bigger batches are split"},
	}
}

func gatewayOptions(c *cli.Context, ro *redis.UniversalOptions) gateway.Options {
	return gateway.Options{
		Listen: c.String("listen"), ReusePort: c.Bool("reuseport"), Redis: ro,
		Prefix: c.String("prefix"), Partitions: c.Int("partitions"), ID: c.String("id"),
		MaxFrame: c.Int("max-frame"), MaxConns: c.Int("max-conns"), IdleTimeout: c.Duration("idle-timeout"),
		OutBuffer: c.Int("out-buffer"), Backlog: c.Int("backlog"), QueueBound: c.Int("queue-bound"),
		Loops: c.Int("loops"), WriteStall: c.Duration("write-stall"),
		DrainTimeout: c.Duration("drain-timeout"), CloseGrace: c.Duration("close-grace"),
		MaxInflight: c.Int("max-inflight"), MaxConnsPerIP: c.Int("max-conns-per-ip"),
		FrameTimeout: c.Duration("frame-timeout"), PartialBudget: c.Int("partial-budget"),
		WriteBudget: c.Int("write-budget"),
	}
}

func workerOptions(c *cli.Context, ro *redis.UniversalOptions) worker.Options {
	return worker.Options{
		Redis: ro, Prefix: c.String("prefix"), Partitions: c.Int("partitions"), ID: c.String("worker-id"),
		Concurrency: c.Int("concurrency"), Lease: c.Duration("lease"), Liveness: c.Duration("liveness"),
		ShutdownTimeout: c.Duration("shutdown-timeout"), MaxDeliveries: c.Int("max-deliveries"),
		HandlerTimeout: c.Duration("handler-timeout"), GatewayTimeout: c.Duration("gateway-timeout"),
		LoginMode:    store.LoginMode(c.String("login-mode")),
		MaxHeldBytes: c.Int64("max-held-bytes"),
		// Shared with the gateway's flags (workerSharedFlags); 0 (not
		// defined) means the default.
		MaxFrame: c.Int("max-frame"), WriteBudget: c.Int("write-budget"),
	}
}

func commonFlags(extra ...[]cli.Flag) []cli.Flag {
	fs := append(redisFlags(), prefixFlag, partitionsFlag)
	for _, e := range extra {
		fs = append(fs, e...)
	}
	return append(fs, logFlags()...)
}

func (g *game) gatewayCommand() *cli.Command {
	return &cli.Command{
		Name:  "gateway",
		Usage: "hold player connections and move their frames through Redis",
		Flags: commonFlags(gatewayFlags(), g.wsFlags(""), observeFlags()), // observeFlags: stat.go
		Action: func(c *cli.Context) error {
			log, err := newLogger(c, c.App.ErrWriter)
			if err != nil {
				return err
			}
			ro, err := redisOptions(c)
			if err != nil {
				return err
			}
			o := gatewayOptions(c, ro)
			o.Logger = log
			g.wsOptions(c, &o, false)
			gw, err := gateway.New(o)
			if err != nil {
				return err
			}
			// Stat reports and metrics (stat.go): until the gateway has drained.
			stopObserving, err := g.startObserving(c, ro, log, gatewayObserved(gw))
			if err != nil {
				return err
			}
			defer stopObserving()
			return gw.Run(c.Context)
		},
	}
}

func (g *game) workerCommand() *cli.Command {
	return &cli.Command{
		Name:  "worker",
		Usage: "run the game's handlers on frames from Redis",
		Flags: commonFlags(workerFlags(), workerSharedFlags(), observeFlags(), g.flags), // observeFlags: stat.go
		Action: func(c *cli.Context) error {
			log, err := newLogger(c, c.App.ErrWriter)
			if err != nil {
				return err
			}
			ro, err := redisOptions(c)
			if err != nil {
				return err
			}
			o := workerOptions(c, ro)
			o.Logger = log
			app, err := g.setup(c, log)
			if err != nil {
				return err
			}
			w, err := worker.New(app, o)
			if err != nil {
				return err
			}
			// Stat reports and metrics (stat.go): until the worker has drained.
			stopObserving, err := g.startObserving(c, ro, log, workerObserved(w))
			if err != nil {
				return err
			}
			defer stopObserving()
			ctx := reloadOnHUP(c.Context, log)
			go func() {
				select {
				case <-w.Ready():
					signalReady()
				case <-ctx.Done():
				}
			}()
			return w.Run(ctx)
		},
	}
}

func (g *game) devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a whole farm in one process: embedded Redis, a gateway (TCP and WebSocket, with the game's page) and a worker",
		Flags: append(append(gatewayFlags(), g.wsFlags(DefaultDevWSListen)...), append([]cli.Flag{
			&cli.StringFlag{Name: "redis-listen", Value: "127.0.0.1:0", EnvVars: []string{"MAPLE_REDIS_LISTEN"},
				Usage: "address of the embedded Redis (miniredis), for redis-cli"},
			prefixFlag, partitionsFlag,
		}, append(workerFlags(), append(observeFlags(), append(g.flags, logFlags()...)...)...)...)...), // observeFlags: stat.go
		Action: func(c *cli.Context) error {
			log, err := newLogger(c, c.App.ErrWriter)
			if err != nil {
				return err
			}
			mr := miniredis.NewMiniRedis()
			if err := mr.StartAddr(c.String("redis-listen")); err != nil {
				return fmt.Errorf("embedded redis on %s: %w", c.String("redis-listen"), err)
			}
			defer mr.Close()
			mr.ClockTTL(true) // real time TTLs: leases and heartbeats expire
			ro := &redis.UniversalOptions{Addrs: []string{mr.Addr()}}

			go_ := gatewayOptions(c, ro)
			go_.Logger = log
			g.wsOptions(c, &go_, true)
			gw, err := gateway.New(go_)
			if err != nil {
				return err
			}
			wo := workerOptions(c, ro)
			wo.Logger = log
			app, err := g.setup(c, log)
			if err != nil {
				return err
			}
			w, err := worker.New(app, wo)
			if err != nil {
				return err
			}
			// Stat reports and metrics (stat.go): until both have drained,
			// before the embedded Redis closes.
			stopObserving, err := g.startObserving(c, ro, log, gatewayObserved(gw), workerObserved(w))
			if err != nil {
				return err
			}
			defer stopObserving()
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			wg.Add(2)
			go func() { defer wg.Done(); errs <- gw.Run(ctx) }()
			go func() { defer wg.Done(); errs <- w.Run(ctx) }()
			select {
			case <-gw.Ready():
				addr := dialable(gw.Addr())
				fmt.Fprintf(c.App.Writer, "%s dev: gateway on %s, embedded redis on %s\n", c.App.Name, addr, mr.Addr())
				fmt.Fprintf(c.App.Writer, "try:  %s client --addr %s --cmd 1 --body hi\n", g.runHint(), addr)
				fmt.Fprintf(c.App.Writer, "      redis-cli -p %s PUBLISH maple:trigger '{\"op\":\"broadcast\",\"cmd\":100,\"body\":\"hello\"}'\n", port(mr.Addr()))
				if a := gw.WSAddr(); a != nil && go_.Web != nil {
					fmt.Fprintf(c.App.Writer, "play:  open http://%s/\n", dialable(a))
				}
			case err := <-errs:
				cancel()
				wg.Wait()
				return err
			}
			var first error
			select {
			case <-ctx.Done():
			case first = <-errs:
				cancel()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if first == nil && err != nil && !errors.Is(err, context.Canceled) {
					first = err
				}
			}
			return first
		},
	}
}

// dialable turns a listen address like [::]:28000 into one a client can
// dial.
func dialable(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ta.IP == nil || ta.IP.IsUnspecified() {
		return "127.0.0.1:" + strconv.Itoa(ta.Port)
	}
	return ta.String()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// WebSocket players and the web page (gateway/ws.go, examples/tictactoe).

// DefaultDevWSListen is where `maple dev` serves WebSocket players and the
// tic-tac-toe page.
const DefaultDevWSListen = ":28080"

func (g *game) wsFlags(listen string) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "ws-listen", Value: listen, EnvVars: []string{"MAPLE_WS_LISTEN"},
			Usage: "HTTP address for WebSocket players (one Box frame per binary message); empty: none"},
		&cli.StringFlag{Name: "ws-path", Value: gateway.DefaultWSPath, EnvVars: []string{"MAPLE_WS_PATH"},
			Usage: "URL path of the WebSocket endpoint"},
		&cli.StringFlag{Name: "ws-origins", EnvVars: []string{"MAPLE_WS_ORIGINS"},
			Usage: "comma-separated host patterns of other page origins allowed to connect (like *.example.com); the listener's own host always is"},
		&cli.DurationFlag{Name: "ws-ping", Value: gateway.DefaultWSPing, EnvVars: []string{"MAPLE_WS_PING"},
			Usage: "how often WebSocket clients are pinged (-1s: never)"},
		&cli.DurationFlag{Name: "ws-idle-timeout", Value: gateway.DefaultWSIdleTimeout, EnvVars: []string{"MAPLE_WS_IDLE_TIMEOUT"},
			Usage: "close a WebSocket client from which nothing, not even a pong, came this long (-1s: never)"},
		&cli.StringFlag{Name: "web-root", EnvVars: []string{"MAPLE_WEB_ROOT"},
			Usage: "serve this directory's files on the WebSocket listener (a game's page; /maple.js is the JavaScript client unless the directory has one)"},
	}
	if listen == "" && g.web != nil { // gateway: the game's page only on request
		fs = append(fs, &cli.BoolFlag{Name: "web-demo", EnvVars: []string{"MAPLE_WEB_DEMO"},
			Usage: "serve the game's page on the WebSocket listener (dev always does, unless --web-root)"})
	}
	return fs
}

// wsOptions sets the WebSocket options of o from the flags; demoPage
// serves the game's page (Web) when no --web-root is given.
func (g *game) wsOptions(c *cli.Context, o *gateway.Options, demoPage bool) {
	o.WSListen = c.String("ws-listen")
	if demoPage && !c.IsSet("ws-listen") && o.WSListen == DefaultDevWSListen {
		// maple dev on its default port: if that is taken (another dev
		// farm), take any free one; the URL printed says which.
		if ln, err := net.Listen("tcp", o.WSListen); err != nil {
			o.WSListen = "127.0.0.1:0"
		} else {
			_ = ln.Close()
		}
	}
	o.WSPath = c.String("ws-path")
	for _, p := range strings.Split(c.String("ws-origins"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.WSOrigins = append(o.WSOrigins, p)
		}
	}
	o.WSPing = c.Duration("ws-ping")
	o.WSIdleTimeout = c.Duration("ws-idle-timeout")
	var web http.Handler
	switch {
	case c.String("web-root") != "":
		web = WebFS(os.DirFS(c.String("web-root")))
	case g.web != nil && (demoPage || c.Bool("web-demo")):
		web = g.web
	}
	if web != nil && o.WSPath != gateway.DefaultWSPath {
		// Tell the page where the endpoint is.
		path := o.WSPath
		inner := web
		web = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/" && r.URL.Query().Get("ws") == "" {
				http.Redirect(w, r, "/?ws="+path, http.StatusFound)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	o.Web = web
}
