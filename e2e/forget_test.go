package e2e

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store/storetest"
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

// TestGatewaySIGTERMLeavesNothing: a `maple gateway` process on a real
// redis-server, stopped with SIGTERM while its players are logged in and
// connected, leaves no key of its own and no registry entry once it exits
// (a cleanly stopped gateway's frame count used to survive it). Its
// players' sessions are gone too.
func TestGatewaySIGTERMLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	srv := storetest.Start(t, storetest.Options{})
	prefix := storetest.Prefix(t)
	env := []string{"MAPLE_REDIS=" + srv.URL(), "MAPLE_PREFIX=" + prefix}
	startProc(t, env, mapleBin, "worker")
	const id = "gwterm"
	port := storetest.FreePort(t)
	gw := gatewayProc(t, env, port, "--id", id)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, uid := range []string{"ann", "bob", "cid", "dan"} {
		c, err := client.Dial(ctx, "127.0.0.1:"+strconv.Itoa(port), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if r, err := c.Request(ctx, demo.CmdLogin, []byte(uid)); err != nil || r.Ret != 0 {
			t.Fatalf("login %s: %d %v", uid, r.Ret, err)
		}
		for j := range 20 {
			if r, err := c.Request(ctx, demo.CmdEcho, []byte(strconv.Itoa(j))); err != nil || r.Ret != 0 {
				t.Fatalf("echo: %d %v", r.Ret, err)
			}
		}
		if i == 0 {
			c.Close() // one left before the stop
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	k := keys.New(prefix)
	if n, _ := rdb.Exists(ctx, k.Queued(id), k.Handled(id), k.GatewayUsers(id)).Result(); n == 0 {
		t.Fatal("the gateway wrote none of its keys: the test checks nothing")
	}
	gw.signal(syscall.SIGTERM)
	if exited, err := gw.wait(30 * time.Second); !exited || err != nil {
		t.Fatalf("gateway: exited=%v err=%v, want exit 0", exited, err)
	}
	left, err := rdb.Keys(ctx, prefix+":*{gw:"+id+"}*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("keys of the stopped gateway left in Redis: %v", left)
	}
	if _, err := rdb.ZScore(ctx, k.Gateways(), id).Result(); err != redis.Nil {
		t.Errorf("stopped gateway still registered (err %v)", err)
	}
	for _, uid := range []string{"ann", "bob", "cid", "dan"} {
		if n, _ := rdb.Exists(ctx, k.Session(uid)).Result(); n != 0 {
			t.Errorf("session of %s left", uid)
		}
	}
}
