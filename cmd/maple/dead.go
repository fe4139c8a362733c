package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/store"
)

func deadCommand() *cli.Command {
	open := func(c *cli.Context) (*store.Store, int, func(), error) {
		rdb, err := store.Connect(c.Context, c.String("redis"), nil)
		if err != nil {
			return nil, 0, nil, err
		}
		st := store.New(rdb, c.String("prefix"))
		n, err := st.Partitions(c.Context, 0)
		if err != nil {
			rdb.Close()
			return nil, 0, nil, err
		}
		return st, n, func() { rdb.Close() }, nil
	}
	return &cli.Command{
		Name:  "dead",
		Usage: "inspect and re-queue dead letters: frames that failed --max-deliveries times",
		Subcommands: withFlags([]cli.Flag{redisFlag, prefixFlag}, []*cli.Command{
			{
				Name:  "list",
				Usage: "list dead letters (ids are <partition>/<entry id>)",
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
					total := 0
					for p := 0; p < parts; p++ {
						dls, err := st.DeadLetters(c.Context, p, int64(c.Int("limit")))
						if err != nil {
							return err
						}
						for _, d := range dls {
							total++
							printDead(c, d)
						}
					}
					if !c.Bool("json") {
						fmt.Fprintf(c.App.Writer, "%d dead letters\n", total)
					}
					return nil
				},
			},
			{
				Name:      "requeue",
				Usage:     "put dead letters back on their queue: requeue <partition>/<id>... or --all",
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
						return fmt.Errorf("requeue: name dead letters (<partition>/<id>) or use --all")
					}
					for _, id := range ids {
						ps, eid, ok := strings.Cut(id, "/")
						p, err := strconv.Atoi(ps)
						if !ok || err != nil || p < 0 || p >= parts {
							return fmt.Errorf("requeue: bad id %q, want <partition>/<entry id>", id)
						}
						if err := st.Requeue(c.Context, p, eid); err != nil {
							return err
						}
					}
					fmt.Fprintf(c.App.Writer, "re-queued %d\n", len(ids))
					return nil
				},
			},
		}),
	}
}

func printDead(c *cli.Context, d store.DeadLetter) {
	var h box.Header
	var body []byte
	if b, err := box.Decode(d.Env.Frame); err == nil {
		h, body = b.Header, b.Body
	}
	if c.Bool("json") {
		_ = json.NewEncoder(c.App.Writer).Encode(map[string]any{
			"id": fmt.Sprintf("%d/%s", d.Part, d.ID), "from": d.From, "deliveries": d.Deliveries,
			"reason": d.Reason, "kind": d.Env.Kind.String(), "conn": d.Env.Conn, "uid": d.Env.UID,
			"cmd": h.Cmd, "sn": h.SN, "body_len": len(body),
		})
		return
	}
	fmt.Fprintf(c.App.Writer, "%d/%s  %s cmd=%d sn=%d conn=%s uid=%s deliveries=%d reason=%q body=%q\n",
		d.Part, d.ID, d.Env.Kind, h.Cmd, h.SN, d.Env.Conn, d.Env.UID, d.Deliveries, d.Reason, truncate(body, 40))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
