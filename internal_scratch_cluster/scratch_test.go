package scratch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

func TestFailoverReload(t *testing.T) {
	start := time.Now()
	c := storetest.StartCluster(t, 3, 1)
	t.Logf("cluster up in %v: %v", time.Since(start), c.MasterAddrs())
	o, err := store.ParseURL(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewUniversalClient(o)
	defer rdb.Close()
	ctx := context.Background()
	keys := []string{}
	for i := 0; i < 16; i++ {
		keys = append(keys, fmt.Sprintf("maple:{p%d}:in", i))
	}
	for _, k := range keys {
		if err := rdb.Set(ctx, k, "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.MasterOf(keys[0])
	for i, m := range c.MasterAddrs() {
		if m == victim {
			c.KillMaster(i)
		}
	}
	kill := time.Now()
	t.Logf("killed %s", victim)
	healthyAt := time.Duration(0)
	go func() {
		if err := c.WaitHealthy(30 * time.Second); err != nil {
			t.Log(err)
		}
		healthyAt = time.Since(kill)
	}()
	for time.Since(kill) < 70*time.Second {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := rdb.Set(cctx, keys[0], "y", 0).Err()
		cancel()
		if err == nil {
			t.Logf("write ok %v after kill (healthy after %v)", time.Since(kill), healthyAt)
			return
		}
		t.Logf("%v: %v", time.Since(kill).Round(time.Millisecond), err)
		time.Sleep(500 * time.Millisecond)
	}
}
