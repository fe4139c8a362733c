package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/trigger"
)

func triggerCommand() *cli.Command {
	bodyFlags := []cli.Flag{
		&cli.IntFlag{Name: "cmd", Required: true, Usage: "cmd of the frame"},
		&cli.IntFlag{Name: "ret", Usage: "ret of the frame"},
		&cli.StringFlag{Name: "body", Usage: "body of the frame"},
	}
	uidsFlag := &cli.StringSliceFlag{Name: "uids", Required: true, Usage: "user ids, comma separated or repeated"}
	publish := func(build func(c *cli.Context) trigger.Message) cli.ActionFunc {
		return func(c *cli.Context) error {
			rdb, err := store.Connect(c.Context, c.String("redis"), nil)
			if err != nil {
				return err
			}
			defer rdb.Close()
			m := build(c)
			n, err := trigger.NewPublisher(rdb, c.String("prefix")).Publish(c.Context, m)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s: published to %d gateways\n", m.Op, n)
			return nil
		}
	}
	withFrame := func(c *cli.Context, m trigger.Message) trigger.Message {
		m.Cmd, m.Ret, m.Body = int32(c.Int("cmd")), int32(c.Int("ret")), c.String("body")
		return m
	}
	return &cli.Command{
		Name:  "trigger",
		Usage: "push to users, a group or everyone, close users, or queue a frame for the workers",
		Subcommands: withFlags([]cli.Flag{redisFlag, prefixFlag}, []*cli.Command{
			{
				Name: trigger.OpWriteToUsers, Usage: "push a frame to users",
				Flags: append([]cli.Flag{uidsFlag}, bodyFlags...),
				Action: publish(func(c *cli.Context) trigger.Message {
					return withFrame(c, trigger.Message{Op: trigger.OpWriteToUsers, UIDs: splitList(c.StringSlice("uids"))})
				}),
			},
			{
				Name: trigger.OpWriteToGroup, Usage: "push a frame to the members of a group",
				Flags: append([]cli.Flag{&cli.StringFlag{Name: "group", Required: true}}, bodyFlags...),
				Action: publish(func(c *cli.Context) trigger.Message {
					return withFrame(c, trigger.Message{Op: trigger.OpWriteToGroup, Group: c.String("group")})
				}),
			},
			{
				Name: trigger.OpBroadcast, Usage: "push a frame to every connection",
				Flags: bodyFlags,
				Action: publish(func(c *cli.Context) trigger.Message {
					return withFrame(c, trigger.Message{Op: trigger.OpBroadcast})
				}),
			},
			{
				Name: trigger.OpCloseUsers, Usage: "close the connections of users",
				Flags: []cli.Flag{uidsFlag},
				Action: publish(func(c *cli.Context) trigger.Message {
					return trigger.Message{Op: trigger.OpCloseUsers, UIDs: splitList(c.StringSlice("uids"))}
				}),
			},
			{
				Name: trigger.OpWriteToWorker, Usage: "queue a frame for the workers, as if from a system client",
				Flags: bodyFlags,
				Action: func(c *cli.Context) error {
					rdb, err := store.Connect(c.Context, c.String("redis"), nil)
					if err != nil {
						return err
					}
					defer rdb.Close()
					err = trigger.NewPublisher(rdb, c.String("prefix")).WriteToWorker(c.Context, int32(c.Int("cmd")), []byte(c.String("body")))
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "write_to_worker: queued")
					return nil
				},
			},
		}),
	}
}

// withFlags adds flags to every command, so they may follow the
// subcommand's name.
func withFlags(fs []cli.Flag, cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.Flags = append(append([]cli.Flag{}, fs...), c.Flags...)
	}
	return cmds
}

// splitList accepts "a,b" as well as repeated flags.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
