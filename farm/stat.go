package farm

// Observing a farm: the stat reporters and the metrics server of the
// gateway, worker and dev commands (startObserving), and `maple stat`,
// whose viewer is package statview.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/metrics"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/stat/statview"
	"github.com/maple-farm/maple/worker"
)

// processStart is when this process started, for the reports' uptime.
var processStart = time.Now()

var metricsAddrFlag = &cli.StringFlag{
	Name: "metrics-addr", EnvVars: []string{"MAPLE_METRICS_ADDR"},
	Usage: "serve Prometheus metrics at http://<addr>/metrics and pprof at /debug/pprof/ (like :9100; empty: off)",
}

// observeFlags are the flags of the commands that run a gateway or a worker.
func observeFlags() []cli.Flag { return []cli.Flag{metricsAddrFlag} }

// observed is a gateway or worker whose counters are reported.
type observed struct {
	kind   string
	id     string
	sample stat.SampleFunc
	queues bool // report the partition queue lengths too
}

func gatewayObserved(gw *gateway.Server) observed {
	return observed{kind: stat.KindGateway, id: gw.ID(), sample: metrics.Gateway(&gw.Stats)}
}

// workerObserved reports the queue lengths too: one process of the farm is
// enough, and where there are workers there is work to watch.
func workerObserved(w *worker.Worker) observed {
	return observed{kind: stat.KindWorker, id: w.ID(), sample: metrics.Worker(&w.Stats), queues: true}
}

// startObserving starts a stat reporter for each part of the process and,
// with --metrics-addr, the metrics server. Call stop once the gateway and
// worker have returned, so their drain is still visible; stop deletes the
// stat hashes and closes the server.
func (g *game) startObserving(c *cli.Context, ro *redis.UniversalOptions, log *slog.Logger, parts ...observed) (stop func(), err error) {
	// Reports are best effort: their own small client, no retries, and
	// deadlines that hold, so a slow Redis never piles reports up.
	o := *ro
	o.PoolSize = 2
	o.MaxRetries = -1
	o.ContextTimeoutEnabled = true
	rdb := queue.NewClient(&o)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var srv *metrics.Server
	stop = func() {
		cancel()
		wg.Wait()
		rdb.Close()
		if srv != nil {
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = srv.Shutdown(sctx)
			scancel()
		}
	}
	srcs := make([]metrics.Source, 0, len(parts))
	for _, p := range parts {
		r, err := stat.NewReporter(stat.ReporterOptions{
			Redis: rdb, Prefix: c.String("prefix"), Kind: p.kind, ID: p.id, Sample: p.sample,
			Version: g.version, Started: processStart, Queues: p.queues, Partitions: c.Int("partitions"),
			Logger: log,
		})
		if err != nil {
			stop()
			return nil, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
		srcs = append(srcs, metrics.Source{Kind: p.kind, Sample: p.sample})
	}
	if addr := c.String("metrics-addr"); addr != "" {
		h, err := metrics.NewHandler(srcs...)
		var ln net.Listener
		if err == nil {
			// A reload hands the port to the replacement (reload.go).
			ln, err = listenOrInherit("metrics", addr)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("metrics: %w", err)
		}
		srv = metrics.Serve(ln, h, log)
	}
	return stop, nil
}
func statCommand() *cli.Command {
	return &cli.Command{
		Name:        "stat",
		Usage:       "show every gateway and worker of the farm, live: counters, rates, latency, queue depths",
		Description: statview.Help,
		Flags: append(redisFlags(), prefixFlag,
			&cli.BoolFlag{Name: "once", Usage: "print one snapshot (two reads 1s apart, for the rates) and exit"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON, one object per snapshot and line"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "time between refreshes"},
		),
		Action: func(c *cli.Context) error {
			rdb, err := connectRedis(c)
			if err != nil {
				return err
			}
			defer rdb.Close()
			return statview.Run(c.Context, rdb, statview.Options{
				Prefix: c.String("prefix"), Out: c.App.Writer, JSON: c.Bool("json"),
				Once: c.Bool("once"), Interval: c.Duration("interval"),
			})
		},
	}
}
