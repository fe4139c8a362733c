package farm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/bench"
)

// defaultRefListen is where `maple refserver` listens unless told.
const defaultRefListen = "127.0.0.1:28100"

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load a gateway with pipelined requests; report replies/s, latency percentiles and wrong or lost replies",
		Description: "Each connection keeps --depth requests in flight and checks every reply (sn, ret, and for\n" +
			"cmd 1 the echoed body). Compare with `maple refserver`, an echo server with no Redis;\n" +
			"scripts/bench.sh does both. Exits non-zero if any reply was wrong, lost, or failed,\n" +
			"or a connection broke.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:28000", EnvVars: []string{"MAPLE_ADDR"},
				Usage: "gateway address; several, comma-separated, spread the connections over them round-robin"},
			&cli.IntFlag{Name: "conns", Value: bench.DefaultConns, Usage: "TCP connections"},
			&cli.IntFlag{Name: "depth", Value: bench.DefaultDepth, Usage: "requests in flight per connection"},
			&cli.DurationFlag{Name: "duration", Value: bench.DefaultDuration, Usage: "length of the measured window"},
			&cli.IntFlag{Name: "size", Value: bench.DefaultSize, Usage: "request body bytes"},
			&cli.IntFlag{Name: "cmd", Value: bench.DefaultCmd, Usage: "route of every request; bodies are checked for cmd 1 (echo)"},
			&cli.DurationFlag{Name: "warmup", Value: bench.DefaultWarmup, Usage: "load before the measured window"},
			&cli.BoolFlag{Name: "json", Usage: "print only the result, as JSON, on stdout"},
			&cli.BoolFlag{Name: "ws", Usage: "speak WebSocket to --addr (a gateway's --ws-listen): one frame per binary message, both ways"},
			&cli.StringFlag{Name: "ws-path", Value: bench.DefaultWSPath, Usage: "URL path of the WebSocket endpoint (with --ws)"},
			&cli.IntFlag{Name: "requests", Usage: "requests per connection, then it stays open, idle, until the window ends; 0: no limit"},
			&cli.StringFlag{Name: "marks", Usage: "file of instants during the run (unix seconds, as `date +%s.%N` prints), read when it ends: for each, report how long the last request sent before it waited (a worker killed, a gateway rolled)"},
		},
		Action: func(c *cli.Context) error {
			o := bench.Options{
				Addr: c.String("addr"), Conns: c.Int("conns"), Depth: c.Int("depth"),
				Duration: c.Duration("duration"), Size: c.Int("size"), Cmd: int32(c.Int("cmd")),
				Warmup: c.Duration("warmup"), WS: c.Bool("ws"), WSPath: c.String("ws-path"), Requests: c.Int("requests"),
			}
			if o.Conns <= 0 || o.Depth <= 0 || o.Duration <= 0 || o.Size < 0 || o.Warmup < 0 || o.Requests < 0 {
				return errors.New("bench: --conns, --depth and --duration must be positive, --size, --warmup and --requests not negative")
			}
			if path := c.String("marks"); path != "" {
				o.Marks = func() ([]time.Time, error) { return bench.ReadMarks(path) }
			}
			if o.Size == 0 {
				o.Size = -1 // bench.Options: -1 is an empty body, 0 the default
			}
			if o.Warmup == 0 {
				o.Warmup = -1
			}
			tty := isTerminal(c.App.ErrWriter)
			o.Progress = func(p bench.Progress) {
				line := fmt.Sprintf("%-6s %5.1fs  sent %d  answered %d  %.0f replies/s  in flight %d",
					p.Phase, p.Elapsed.Seconds(), p.Sent, p.Answered, p.RepliesPerSec, p.InFlight)
				if p.Busy+p.Failed+p.Mismatches+p.ConnErrors > 0 {
					line += fmt.Sprintf("  busy %d  failed %d  mismatches %d  conn errors %d",
						p.Busy, p.Failed, p.Mismatches, p.ConnErrors)
				}
				if tty {
					fmt.Fprintf(c.App.ErrWriter, "\r\033[K%s", line)
				} else {
					fmt.Fprintln(c.App.ErrWriter, line)
				}
			}
			res, err := bench.Run(c.Context, o)
			if tty {
				fmt.Fprint(c.App.ErrWriter, "\r\033[K")
			}
			if err != nil && res.Sent == 0 {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printResult(c.App.Writer, res, c.Duration("warmup"))
			}
			if err != nil {
				return err
			}
			return verdict(res)
		},
	}
}

// verdict is the error that makes `maple bench` exit non-zero: any reply
// that was wrong, lost or failed, or a broken connection. Busy replies are
// load shedding, reported but not failures.
func verdict(r bench.Result) error {
	var bad []string
	for _, f := range []struct {
		n    int64
		what string
	}{
		{r.Mismatches, "mismatches"}, {r.Duplicates, "duplicate replies"}, {r.Unanswered, "unanswered"},
		{r.Failed, "failed replies"}, {r.ConnErrors, "connection errors"},
	} {
		if f.n > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", f.n, f.what))
		}
	}
	if r.Answered == 0 {
		bad = append(bad, "no replies")
	}
	if len(bad) > 0 {
		return fmt.Errorf("bench: %s", strings.Join(bad, ", "))
	}
	return nil
}

func printResult(w io.Writer, r bench.Result, warmup time.Duration) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }
	proto := ""
	if r.WS {
		proto = " (WebSocket)"
	}
	fmt.Fprintf(w, "%s%s: %d conns x depth %d, cmd %d, %d B bodies, %v (after %v warmup)\n",
		r.Addr, proto, r.Conns, r.Depth, r.Cmd, r.Size, r.Duration, warmup)
	fmt.Fprintf(w, "  sent          %d\n", r.Sent)
	fmt.Fprintf(w, "  answered      %d\n", r.Answered)
	fmt.Fprintf(w, "  replies/s     %.0f\n", r.RepliesPerSec)
	fmt.Fprintf(w, "  latency       p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max))
	fmt.Fprintf(w, "  mismatches    %d\n", r.Mismatches)
	fmt.Fprintf(w, "  duplicates    %d\n", r.Duplicates)
	fmt.Fprintf(w, "  unanswered    %d\n", r.Unanswered)
	fmt.Fprintf(w, "  busy          %d\n", r.Busy)
	fmt.Fprintf(w, "  failed        %d\n", r.Failed)
	fmt.Fprintf(w, "  conn errors   %d\n", r.ConnErrors)
	if r.Pushes > 0 {
		fmt.Fprintf(w, "  pushes        %d\n", r.Pushes)
	}
	if len(r.Stalls) > 0 {
		worst := slices.Max(r.Stalls)
		parts := make([]string, len(r.Stalls))
		for i, s := range r.Stalls {
			parts[i] = ms(s)
		}
		fmt.Fprintf(w, "  stalls        worst %s: %s\n", ms(worst), strings.Join(parts, " "))
	}
}

// isTerminal reports whether w is a character device, so progress can be
// rewritten in place with \r.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func refserverCommand() *cli.Command {
	return &cli.Command{
		Name:   "refserver",
		Usage:  "serve Box echo with no Redis: the yardstick for `maple bench`",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: defaultRefListen, EnvVars: []string{"MAPLE_REF_LISTEN"},
				Usage: "TCP address"},
		},
		Action: func(c *cli.Context) error {
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "%s refserver: echo on %s\n", c.App.Name, ln.Addr())
			return bench.ServeReference(c.Context, ln)
		},
	}
}
