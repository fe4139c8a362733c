package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/maple-farm/maple/internal/keys"
)

// scriptLeaseAcquire (lua/lease_acquire.lua) takes a free lease or renews the caller's.
var scriptLeaseAcquire = loadScript("lease_acquire")

// AcquireLease takes or renews the lease on partition p for worker id.
func (q *Broker) AcquireLease(ctx context.Context, p int, id string, ttl time.Duration) (bool, error) {
	n, err := scriptLeaseAcquire.Run(ctx, q.rdb, []string{q.Keys.Owner(p)}, id, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("store: lease partition %d: %w", p, err)
	}
	return n == 1, nil
}

// scriptLeaseRelease (lua/lease_release.lua) gives a lease up if still the caller's.
var scriptLeaseRelease = loadScript("lease_release")

// ReleaseLease gives up the lease on partition p if id holds it.
func (q *Broker) ReleaseLease(ctx context.Context, p int, id string) error {
	if err := scriptLeaseRelease.Run(ctx, q.rdb, []string{q.Keys.Owner(p)}, id).Err(); err != nil {
		return fmt.Errorf("store: release partition %d: %w", p, err)
	}
	return nil
}

// ForgetConsumers deletes the consumers of partition p's group that hold
// no pending entry and are not alive (alive reports the live workers'
// instance ids), and returns how many it deleted. Each worker process
// reads under its own name; without this a group would keep every name
// ever used. A dead consumer with entries pending keeps them until the
// partition's next owner claims them; it goes at a later call.
func (q *Broker) ForgetConsumers(ctx context.Context, p int, alive func(name string) bool) (int, error) {
	key := q.Keys.Inbound(p)
	cs, err := q.rdb.XInfoConsumers(ctx, key, keys.ConsumerGroup).Result()
	if err != nil {
		return 0, fmt.Errorf("store: consumers of partition %d: %w", p, err)
	}
	n := 0
	for _, c := range cs {
		if c.Pending > 0 || alive(c.Name) {
			continue
		}
		if err := q.rdb.XGroupDelConsumer(ctx, key, keys.ConsumerGroup, c.Name).Err(); err != nil {
			return n, fmt.Errorf("store: forget consumer %s of partition %d: %w", c.Name, p, err)
		}
		n++
	}
	return n, nil
}
