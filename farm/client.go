package farm

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
)

func clientCommand() *cli.Command {
	return &cli.Command{
		Name:  "client",
		Usage: "send one frame to a gateway and print the reply (and pushes, with --listen)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:28000", EnvVars: []string{"MAPLE_ADDR"},
				Usage: "gateway address"},
			&cli.IntFlag{Name: "cmd", Value: 1, Usage: "route number"},
			&cli.StringFlag{Name: "body", Usage: "request body"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "how long to wait for the reply"},
			&cli.DurationFlag{Name: "listen", Usage: "after the reply, print pushes for this long"},
		},
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			conn, err := client.Dial(ctx, c.String("addr"), client.Options{})
			if err != nil {
				return err
			}
			defer conn.Close()
			reply, err := conn.Request(ctx, int32(c.Int("cmd")), []byte(c.String("body")))
			if err != nil {
				return fmt.Errorf("cmd %d: %w", c.Int("cmd"), err)
			}
			printBox(c, "reply", reply)
			if d := c.Duration("listen"); d > 0 {
				t := time.NewTimer(d)
				defer t.Stop()
				for {
					select {
					case p := <-conn.Pushes():
						printBox(c, "push", p)
					case <-conn.Done():
						return conn.Err()
					case <-t.C:
						return nil
					case <-c.Context.Done():
						return nil
					}
				}
			}
			return nil
		},
	}
}

func printBox(c *cli.Context, what string, b box.Box) {
	fmt.Fprintf(c.App.Writer, "%s cmd=%d ret=%d sn=%d body=%q\n", what, b.Cmd, b.Ret, b.SN, b.Body)
}
