package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
)

// TestStoppedGatewayLeavesNothing: a gateway stopped cleanly, whose
// players logged in, sent frames and were connected at the stop, leaves no
// key of its own in Redis once the workers finished its last events: no
// frame count, handled marks, outbound lists, user set or registry entry.
func TestStoppedGatewayLeavesNothing(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ro := be.redis(t)
			f := newFarm(t, ro)
			f.worker(nil, nil)
			gw, err := gateway.New(gateway.Options{Listen: "127.0.0.1:0", Redis: ro, Prefix: f.prefix, Logger: logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- gw.Run(ctx) }()
			<-gw.Ready()
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer rcancel()
			for i, uid := range []string{"ann", "bob", "cid"} {
				c := dial(t, gw)
				if r, err := c.Request(rctx, demo.CmdLogin, []byte(uid)); err != nil || r.Ret != 0 {
					t.Fatalf("login %s: %d %v", uid, r.Ret, err)
				}
				if r, err := c.Request(rctx, demo.CmdEcho, []byte("x")); err != nil || r.Ret != 0 {
					t.Fatalf("echo: %d %v", r.Ret, err)
				}
				if i == 0 {
					c.Close() // one left before the stop
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("gateway Run: %v", err)
			}
			rdb := redis.NewUniversalClient(ro)
			defer rdb.Close()
			var left []string
			iter := rdb.Scan(rctx, 0, f.prefix+":*", 1000).Iterator()
			for iter.Next(rctx) {
				if strings.Contains(iter.Val(), "{gw:"+gw.ID()+"}") {
					left = append(left, iter.Val())
				}
			}
			if err := iter.Err(); err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Errorf("keys of the stopped gateway left in Redis: %v", left)
			}
			if _, err := rdb.ZScore(rctx, f.keys().Gateways(), gw.ID()).Result(); err != redis.Nil {
				t.Errorf("stopped gateway still registered (err %v)", err)
			}
			for _, uid := range []string{"ann", "bob", "cid"} {
				if n, _ := rdb.Exists(rctx, f.keys().Session(uid)).Result(); n != 0 {
					t.Errorf("session of %s left", uid)
				}
			}
		})
	}
}
