package queue

import (
	"slices"
	"testing"

	"github.com/maple-farm/maple/internal/keys"
)

// TestForgetConsumers: the names of gone workers leave a partition's
// group once they hold nothing pending; live workers' names and names
// with pending entries stay.
func TestForgetConsumers(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		const p = 0
		if err := s.EnsureGroups(ctx, 1); err != nil {
			t.Fatal(err)
		}
		enqueueEntries(t, s, p, "c", 1, 1, 1, 1)
		// Three workers each read one entry; "done" acknowledged its own.
		for _, name := range []string{"gone-pending", "done", "live"} {
			ds, err := s.ReadInbound(ctx, name, []int{p}, 1, -1)
			if err != nil || len(ds) != 1 {
				t.Fatalf("%s read %d: %v", name, len(ds), err)
			}
			if name == "done" {
				if err := s.rdb.XAck(ctx, s.Keys.Inbound(p), keys.ConsumerGroup, ds[0].ID).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		n, err := s.ForgetConsumers(ctx, p, func(name string) bool { return name == "live" })
		if err != nil || n != 1 {
			t.Fatalf("ForgetConsumers = %d, %v; want 1 (done)", n, err)
		}
		cs, err := s.rdb.XInfoConsumers(ctx, s.Keys.Inbound(p), keys.ConsumerGroup).Result()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range cs {
			names = append(names, c.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"gone-pending", "live"}) {
			t.Errorf("consumers left = %v, want [gone-pending live]", names)
		}
	})
}
