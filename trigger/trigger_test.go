package trigger

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

// TestFarmExists: a prefix has a farm behind it once any of its gateway
// or worker registries or its partition count exists; looking writes
// nothing.
func TestFarmExists(t *testing.T) {
	for name, addr := range map[string]func(t *testing.T) string{
		"redis":     func(t *testing.T) string { return storetest.Start(t, storetest.Options{}).Addr },
		"miniredis": func(t *testing.T) string { return storetest.Mini(t).Addr() },
	} {
		t.Run(name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: addr(t)})
			defer rdb.Close()
			ctx := t.Context()
			check := func(prefix string, want bool) {
				t.Helper()
				got, err := FarmExists(ctx, rdb, prefix)
				if err != nil || got != want {
					t.Errorf("FarmExists(%q) = %v, %v; want %v", prefix, got, err, want)
				}
			}
			check("", false)
			check("nope", false)
			if n, _ := rdb.DBSize(ctx).Result(); n != 0 {
				t.Fatalf("FarmExists wrote %d keys", n)
			}
			if _, err := store.New(rdb, "").Partitions(ctx, 0); err != nil {
				t.Fatal(err)
			}
			check("", true) // the default prefix
			check("maple", true)
			check("nope", false)
			st := store.New(rdb, "g")
			st.Heartbeat(ctx, st.Keys.Gateways(), "gw1", time.Now())
			check("g", true)
			st = store.New(rdb, "w")
			st.Heartbeat(ctx, st.Keys.Workers(), "w1", time.Now())
			check("w", true)
			check("gw", false)
		})
	}
}
