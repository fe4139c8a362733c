package farm

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/trigger"
)

// forceFlag lets `maple trigger` act on a --prefix with no farm behind it
// (checkFarm); `maple dead` has its own.
var forceFlag = &cli.BoolFlag{
	Name: "force",
	Usage: "act even if no farm is found under --prefix (no gateways, workers or partition count); " +
		"write_to_worker then sets the partition count to 16 if none is set",
}

func triggerCommand() *cli.Command {
	// --cmd is a string flag so that its help shows no default: it has
	// none, it is required.
	cmdFlag := &cli.StringFlag{Name: "cmd", Required: true, Usage: "cmd of the frame: the route number, not 0 (required)"}
	bodyFlags := []cli.Flag{
		&cli.StringFlag{Name: "body", Usage: "body of the frame, as text (empty if not given)"},
		&cli.StringFlag{Name: "body-b64", Usage: "body of the frame in base64, for binary bodies (instead of --body)"},
	}
	idFlag := &cli.StringFlag{Name: "id", Usage: `the message's "id" field (docs/protocol.md section 4): ` +
		"free text that tells it apart from an identical message (in MONITOR, say); gateways act on every message, id or not"}
	frameFlags := append([]cli.Flag{cmdFlag,
		&cli.IntFlag{Name: "ret", Usage: "ret of the frame (the result code clients see)"},
	}, append(bodyFlags, idFlag)...)
	uidsFlag := &cli.StringSliceFlag{Name: "uids", Required: true, Usage: "user ids, comma separated or repeated (required)"}
	publish := func(build func(c *cli.Context) (trigger.Message, error)) cli.ActionFunc {
		return func(c *cli.Context) error {
			m, err := build(c)
			if err != nil {
				return err
			}
			m.ID = c.String("id")
			rdb, known, err := openTriggers(c)
			if err != nil {
				return err
			}
			defer rdb.Close()
			n, err := trigger.NewPublisher(rdb, c.String("prefix")).Publish(c.Context, m)
			if err != nil {
				return permissionError(err)
			}
			if n == 0 && !known {
				return fmt.Errorf("%s: %w", m.Op, noGateway(c))
			}
			fmt.Fprintf(c.App.Writer, "%s: published to %d gateways\n", m.Op, n)
			return nil
		}
	}
	withFrame := func(c *cli.Context, m trigger.Message) (trigger.Message, error) {
		cmd, err := parseCmd(c)
		if err != nil {
			return m, err
		}
		ret := c.Int("ret")
		if ret < math.MinInt32 || ret > math.MaxInt32 {
			return m, fmt.Errorf("--ret %d: out of range, want a 32-bit integer", ret)
		}
		m.Cmd, m.Ret = cmd, int32(ret)
		if c.IsSet("body-b64") {
			if _, err := parseBody(c); err != nil {
				return m, err
			}
			m.BodyB64 = c.String("body-b64")
		} else {
			m.Body = c.String("body")
		}
		return m, nil
	}
	return &cli.Command{
		Name:  "trigger",
		Usage: "push to users, a group or everyone, close users, or queue a frame for the workers",
		Description: "Pushes and closes are published on <prefix>:trigger (docs/protocol.md section 4):\n" +
			"every gateway acts on its own connections; pub/sub is at most once. write_to_worker\n" +
			"queues straight onto a partition stream, once. Every subcommand first checks that\n" +
			"a farm runs under --prefix on this Redis and refuses otherwise, unless --force.\n" +
			"With a Redis user that may only PUBLISH on the trigger channel (the operator role of\n" +
			"docs/security.md) it cannot check: it publishes and fails if no gateway received the\n" +
			"message, and write_to_worker asks the gateways to queue the frame (at most once).",
		Subcommands: withFlags(append(redisFlags(), prefixFlag, forceFlag), []*cli.Command{
			{
				Name: trigger.OpWriteToUsers, Usage: "push a frame (sn 0) to users, wherever they are connected",
				Flags: append([]cli.Flag{uidsFlag}, frameFlags...),
				Action: publish(func(c *cli.Context) (trigger.Message, error) {
					return withFrame(c, trigger.Message{Op: trigger.OpWriteToUsers, UIDs: splitList(c.StringSlice("uids"))})
				}),
			},
			{
				Name: trigger.OpWriteToGroup, Usage: "push a frame (sn 0) to the members of a group",
				Flags: append([]cli.Flag{&cli.StringFlag{Name: "group", Required: true,
					Usage: "name of the group (as handlers join users to it, JoinGroup); its connected members get the frame (required)"}},
					frameFlags...),
				Action: publish(func(c *cli.Context) (trigger.Message, error) {
					return withFrame(c, trigger.Message{Op: trigger.OpWriteToGroup, Group: c.String("group")})
				}),
			},
			{
				Name: trigger.OpBroadcast, Usage: "push a frame (sn 0) to every connection of the farm",
				Flags: frameFlags,
				Action: publish(func(c *cli.Context) (trigger.Message, error) {
					return withFrame(c, trigger.Message{Op: trigger.OpBroadcast})
				}),
			},
			{
				Name: trigger.OpCloseUsers, Usage: "close the connections of users",
				Flags: []cli.Flag{uidsFlag, idFlag},
				Action: publish(func(c *cli.Context) (trigger.Message, error) {
					return trigger.Message{Op: trigger.OpCloseUsers, UIDs: splitList(c.StringSlice("uids"))}, nil
				}),
			},
			{
				Name: trigger.OpWriteToWorker,
				Usage: "queue a frame for the workers, as if from a system client: handled once, by one worker " +
					"(its ret is 0; straight onto a partition stream, so no --id is needed)",
				Flags: append([]cli.Flag{cmdFlag}, bodyFlags...),
				Action: func(c *cli.Context) error {
					cmd, err := parseCmd(c)
					if err != nil {
						return err
					}
					body, err := parseBody(c)
					if err != nil {
						return err
					}
					rdb, known, err := openTriggers(c)
					if err != nil {
						return err
					}
					defer rdb.Close()
					pub := trigger.NewPublisher(rdb, c.String("prefix"))
					if known {
						err := pub.WriteToWorker(c.Context, cmd, body)
						if err == nil {
							fmt.Fprintln(c.App.Writer, "write_to_worker: queued")
							return nil
						}
						if !store.IsNoPermission(err) {
							return err
						}
					}
					// This user may not add to the farm's queues (an
					// operator's, allowed only PUBLISH on the trigger
					// channel): the gateways queue it.
					n, err := pub.WriteToWorkerViaGateways(c.Context, cmd, body)
					if err != nil {
						return permissionError(err)
					}
					if n == 0 {
						return fmt.Errorf("write_to_worker: not queued: %w", noGateway(c))
					}
					fmt.Fprintf(c.App.Writer, "write_to_worker: published to %d gateways, one of which queues it "+
						"(this Redis user may not write the farm's queues)\n", n)
					return nil
				},
			},
		}),
	}
}

// parseCmd reads --cmd: a non-zero 32-bit route number.
func parseCmd(c *cli.Context) (int32, error) {
	s := c.String("cmd")
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	switch {
	case err != nil:
		return 0, fmt.Errorf("--cmd %q: want a route number (a 32-bit integer)", s)
	case n == 0:
		return 0, fmt.Errorf("--cmd 0: frames need a non-zero cmd")
	}
	return int32(n), nil
}

// parseBody reads --body or --body-b64; giving both is an error.
func parseBody(c *cli.Context) ([]byte, error) {
	if !c.IsSet("body-b64") {
		return []byte(c.String("body")), nil
	}
	if c.IsSet("body") {
		return nil, fmt.Errorf("--body and --body-b64: give one")
	}
	b, err := base64.StdEncoding.DecodeString(c.String("body-b64"))
	if err != nil {
		return nil, fmt.Errorf("--body-b64: not standard base64: %v", err)
	}
	return b, nil
}

// openFarm connects to --redis and, unless --force, makes sure a farm runs
// under --prefix there (checkFarm). Nothing is written before.
func openFarm(c *cli.Context) (redis.UniversalClient, error) {
	rdb, err := connectRedis(c)
	if err != nil {
		return nil, err
	}
	if err := checkFarm(c.Context, rdb, c.String("redis"), c.String("prefix"), c.Bool("force")); err != nil {
		rdb.Close()
		return nil, permissionError(err)
	}
	return rdb, nil
}

// openTriggers is openFarm for `maple trigger`, which an operator's Redis
// user may run with nothing but PUBLISH on the trigger channel
// (docs/security.md). Such a user may not PING: the refusal (NOPERM) shows
// that the server answered and took the user's password, so the client is
// kept. Nor may it look for the farm (checkFarm's EXISTS): known is then
// false, and the caller counts the gateways that receive what it
// publishes instead (noGateway). Publishing writes no key, so a mistyped
// --prefix costs nothing.
func openTriggers(c *cli.Context) (rdb redis.UniversalClient, known bool, err error) {
	o, err := parseRedis(c)
	if err != nil {
		return nil, false, err
	}
	rdb, err = store.ConnectOptions(c.Context, c.String("redis"), o)
	if store.IsNoPermission(err) {
		rdb, err = queue.NewClient(o), nil
	}
	if err != nil {
		return nil, false, err
	}
	err = checkFarm(c.Context, rdb, c.String("redis"), c.String("prefix"), c.Bool("force"))
	if store.IsNoPermission(err) {
		return rdb, false, nil
	}
	if err != nil {
		rdb.Close()
		return nil, false, err
	}
	return rdb, true, nil
}

// noGateway is the error of a trigger that no gateway received from a
// user that may not check for the farm first.
func noGateway(c *cli.Context) error {
	return fmt.Errorf("no gateway received it on %s: this Redis user may not look for a farm under --prefix %q "+
		"(docs/security.md), and no gateway listens there; check --prefix and --redis (--force publishes anyway)",
		keys.New(c.String("prefix")).TriggerChannel(), keys.New(c.String("prefix")).Prefix)
}

// checkFarm refuses a prefix with nothing of a farm behind it (no registry
// of gateways or workers, no partition count): a typo in --prefix would
// otherwise publish to nobody, or create a partition count and queues no
// process reads, and report success.
func checkFarm(ctx context.Context, rdb redis.UniversalClient, rawURL, prefix string, force bool) error {
	if force {
		return nil
	}
	ok, err := trigger.FarmExists(ctx, rdb, prefix)
	if err != nil || ok {
		return err
	}
	k := keys.New(prefix)
	where := "this Redis"
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		where = u.Redacted()
	}
	return fmt.Errorf("no farm under --prefix %q on %s: none of %s, %s, %s exists; "+
		"check --prefix and --redis (--force acts anyway)", k.Prefix, where, k.Gateways(), k.Workers(), k.PartitionCount())
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
