package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/worker"
)

// TestSignedLogins: a `maple worker --login-secret` takes only logins
// signed with its secret: a bare user id, another secret's token, an
// expired token and a token whose user id was changed are refused
// (-10001) and bind nothing; a valid token logs in as its user. Without
// the secret the worker says at start that logins are open.
func TestSignedLogins(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	secret := []byte("s3cret of the account service")
	w := startProc(t, append(append([]string{}, pf.env...), "MAPLE_LOGIN_SECRET="+string(secret)), mapleBin, "worker")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, pf.gw.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := worker.SignLogin(secret, "ann", time.Now().Add(time.Hour))
	parts := strings.SplitN(good, ".", 4)
	for name, body := range map[string]string{
		"bare user id":   "ann",
		"other secret":   worker.SignLogin([]byte("guess"), "ann", time.Now().Add(time.Hour)),
		"expired":        worker.SignLogin(secret, "ann", time.Now().Add(-time.Hour)),
		"user id edited": strings.Join([]string{parts[0], parts[1], parts[2], "bob"}, "."),
	} {
		r, err := c.Request(ctx, demo.CmdLogin, []byte(body))
		if err != nil || r.Ret != box.RetHandlerFailed {
			t.Errorf("login with %s: ret %d err %v, want -10001", name, r.Ret, err)
		}
	}
	if r, err := c.Request(ctx, demo.CmdWhoami, nil); err != nil || len(r.Body) != 0 {
		t.Fatalf("whoami after refused logins: %q %v, want nobody", r.Body, err)
	}
	if r, err := c.Request(ctx, demo.CmdLogin, []byte(good)); err != nil || r.Ret != 0 {
		t.Fatalf("login with a valid token: ret %d err %v", r.Ret, err)
	}
	if r, err := c.Request(ctx, demo.CmdWhoami, nil); err != nil || string(r.Body) != "ann" {
		t.Fatalf("whoami = %q %v, want ann", r.Body, err)
	}
	logged, _ := os.ReadFile(w.log)
	if !strings.Contains(string(logged), "signed logins") {
		t.Errorf("the worker did not say it runs with signed logins")
	}
	// Without a secret: open logins, said at start.
	open := pf.mapleWorker(t)
	waitFor(t, "the open-login warning", func() bool {
		b, _ := os.ReadFile(open.log)
		return strings.Contains(string(b), "open logins")
	})
}
