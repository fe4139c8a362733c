package farm

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/maple-farm/maple/worker"
)

// loginTokenCommand prints a signed login token, as a game's account
// service makes them (worker.SignLogin), for tests, bots and operators:
//
//	maple client --cmd 2 --body "$(maple login-token --uid ann)"
func loginTokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "login-token",
		Usage: "print a login token for a user id, signed with --login-secret (for workers started with it)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "uid", Required: true, Usage: "the user id the token logs in as"},
			&cli.StringFlag{Name: "login-secret", EnvVars: []string{"MAPLE_LOGIN_SECRET"}, Usage: "the secret the workers check tokens with"},
			&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "how long the token is valid"},
		},
		Action: func(c *cli.Context) error {
			secret := c.String("login-secret")
			if secret == "" {
				return errors.New("login-token: --login-secret (or MAPLE_LOGIN_SECRET) is required")
			}
			if c.Duration("ttl") <= 0 {
				return errors.New("login-token: --ttl must be positive")
			}
			fmt.Fprintln(c.App.Writer, worker.SignLogin([]byte(secret), c.String("uid"), time.Now().Add(c.Duration("ttl"))))
			return nil
		},
	}
}
