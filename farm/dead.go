package farm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
)

func deadCommand() *cli.Command {
	open := func(c *cli.Context) (*queue.Broker, int, func(), error) {
		rdb, err := openFarm(c)
		if err != nil {
			return nil, 0, nil, err
		}
		st := queue.New(rdb, c.String("prefix"))
		n, err := farmPartitions(c.Context, st)
		if err != nil {
			rdb.Close()
			return nil, 0, nil, err
		}
		return st, n, func() { rdb.Close() }, nil
	}
	force := &cli.BoolFlag{Name: "force",
		Usage: "act even if no farm is found under --prefix (no gateways, workers or partition count)"}
	return &cli.Command{
		Name:  "dead",
		Usage: "inspect and re-queue dead letters: frames that failed --max-deliveries times",
		Description: "A frame whose handling killed its worker --max-deliveries times, or an entry no\n" +
			"worker could read, is copied to its partition's dead-letter stream (<prefix>:{p<N>}:dead).\n" +
			"Both subcommands first check that a farm runs under --prefix on this Redis and\n" +
			"refuse otherwise, unless --force.",
		Subcommands: withFlags(append(redisFlags(), prefixFlag, force), []*cli.Command{
			{
				Name: "list",
				Usage: "list dead letters: <partition>/<id>, kind, cmd, sn, connection, user, deliveries, reason, body; " +
					"an entry no worker could read shows as unreadable, with why",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "limit", Value: 100, Usage: "most to show per partition"},
					&cli.BoolFlag{Name: "json", Usage: "one JSON object per line"},
				},
				Action: func(c *cli.Context) error {
					st, parts, done, err := open(c)
					if err != nil {
						return err
					}
					defer done()
					total, unreadable := 0, 0
					for p := 0; p < parts; p++ {
						dls, err := st.DeadLetters(c.Context, p, int64(c.Int("limit")))
						if err != nil {
							return err
						}
						for _, d := range dls {
							total++
							if d.Unreadable != "" {
								unreadable++
							}
							printDead(c, d)
						}
					}
					if !c.Bool("json") {
						fmt.Fprintf(c.App.Writer, "%d dead letters", total)
						if unreadable > 0 {
							fmt.Fprintf(c.App.Writer, ", %d unreadable (they cannot be re-queued)", unreadable)
						}
						fmt.Fprintln(c.App.Writer)
					}
					return nil
				},
			},
			{
				Name: "requeue",
				Usage: "put dead letters back on their queue: requeue <partition>/<id>... or --all; " +
					"an unreadable one is refused (the others still go back, and the command fails)",
				ArgsUsage: "<partition>/<id>...",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "every dead letter"}},
				Action: func(c *cli.Context) error {
					st, parts, done, err := open(c)
					if err != nil {
						return err
					}
					defer done()
					var ids []string
					if c.Bool("all") {
						for p := 0; p < parts; p++ {
							dls, err := st.DeadLetters(c.Context, p, 1<<20)
							if err != nil {
								return err
							}
							for _, d := range dls {
								ids = append(ids, strconv.Itoa(p)+"/"+d.ID)
							}
						}
					} else {
						ids = c.Args().Slice()
					}
					if len(ids) == 0 {
						if c.Bool("all") {
							fmt.Fprintln(c.App.Writer, "re-queued 0: no dead letters")
							return nil
						}
						return fmt.Errorf("requeue: name dead letters (<partition>/<id>) or use --all")
					}
					type part struct {
						p   int
						eid string
					}
					named := make([]part, 0, len(ids))
					for _, id := range ids {
						ps, eid, ok := strings.Cut(id, "/")
						p, err := strconv.Atoi(ps)
						if !ok || err != nil || p < 0 || p >= parts || eid == "" {
							return fmt.Errorf("requeue: bad id %q, want <partition>/<entry id> with a partition below %d", id, parts)
						}
						named = append(named, part{p, eid})
					}
					// Each goes back or fails on its own: one that cannot
					// go back does not keep the others in the dead letters.
					var failed []error
					n := 0
					for _, d := range named {
						err := st.Requeue(c.Context, d.p, d.eid)
						switch {
						case err == nil:
							n++
						case errors.Is(err, queue.ErrUnreadable) || errors.Is(err, queue.ErrNotFound):
							failed = append(failed, err)
						default:
							fmt.Fprintf(c.App.Writer, "re-queued %d of %d\n", n, len(named))
							return err // Redis failed: stop
						}
					}
					fmt.Fprintf(c.App.Writer, "re-queued %d of %d\n", n, len(named))
					switch len(failed) {
					case 0:
						return nil
					case 1:
						return failed[0]
					}
					msgs := make([]string, len(failed))
					for i, err := range failed {
						msgs[i] = err.Error()
					}
					return fmt.Errorf("%d dead letters not re-queued: %s", len(failed), strings.Join(msgs, "; "))
				},
			},
		}),
	}
}

// farmPartitions returns the farm's partition count, or the default when
// none is set (only with --force: checkFarm refuses a prefix without a
// farm). Unlike store.Store.Partitions it never sets it.
func farmPartitions(ctx context.Context, st *queue.Broker) (int, error) {
	key := st.Keys.PartitionCount()
	v, err := st.Client().Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return queue.DefaultPartitions, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad partition count %q in %s", v, key)
	}
	return n, nil
}

func printDead(c *cli.Context, d queue.DeadLetter) {
	id := fmt.Sprintf("%d/%s", d.Part, d.ID)
	if d.Unreadable != "" {
		if c.Bool("json") {
			_ = json.NewEncoder(c.App.Writer).Encode(map[string]any{
				"id": id, "from": d.From, "index": d.Index, "deliveries": d.Deliveries, "reason": d.Reason,
				"unreadable": d.Unreadable, "envelope_len": len(d.Raw),
				"envelope_b64": base64.StdEncoding.EncodeToString(d.Raw),
			})
			return
		}
		fmt.Fprintf(c.App.Writer, "%s  unreadable (%s): %d bytes from entry %s #%d, deliveries=%d reason=%q\n",
			id, d.Unreadable, len(d.Raw), d.From, d.Index, d.Deliveries, d.Reason)
		return
	}
	var h box.Header
	var body []byte
	frameErr := ""
	if hasFrame(d.Env.Kind) {
		if b, err := box.Decode(d.Env.Frame); err == nil {
			h, body = b.Header, b.Body
		} else {
			frameErr = err.Error()
		}
	}
	if c.Bool("json") {
		m := map[string]any{
			"id": id, "from": d.From, "index": d.Index, "deliveries": d.Deliveries,
			"reason": d.Reason, "kind": d.Env.Kind.String(), "conn": d.Env.Conn, "uid": d.Env.UID,
			"cmd": h.Cmd, "sn": h.SN, "body_len": len(body),
		}
		if frameErr != "" {
			m["bad_frame"] = frameErr
		}
		_ = json.NewEncoder(c.App.Writer).Encode(m)
		return
	}
	switch {
	case frameErr != "":
		fmt.Fprintf(c.App.Writer, "%s  %s bad frame (%s) conn=%s uid=%s deliveries=%d reason=%q\n",
			id, d.Env.Kind, frameErr, d.Env.Conn, d.Env.UID, d.Deliveries, d.Reason)
	case hasFrame(d.Env.Kind):
		fmt.Fprintf(c.App.Writer, "%s  %s cmd=%d sn=%d conn=%s uid=%s deliveries=%d reason=%q body=%q\n",
			id, d.Env.Kind, h.Cmd, h.SN, d.Env.Conn, d.Env.UID, d.Deliveries, d.Reason, truncate(body, 40))
	default: // a connection's open or close event: no frame
		fmt.Fprintf(c.App.Writer, "%s  %s conn=%s uid=%s deliveries=%d reason=%q\n",
			id, d.Env.Kind, d.Env.Conn, d.Env.UID, d.Deliveries, d.Reason)
	}
}

// hasFrame reports whether envelopes of kind k carry a frame.
func hasFrame(k queue.Kind) bool {
	return k == queue.KindFrame || k == queue.KindSystem || k == queue.KindJob
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
