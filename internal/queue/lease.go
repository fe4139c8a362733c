package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
)

// scriptLeaseAcquire (lua/lease_acquire.lua) takes a free lease or renews the caller's.
var scriptLeaseAcquire = loadScript("lease_acquire")

// AcquireLease takes or renews the lease on partition p for worker id.
// A lease held by one of dead (LiveRound's dead workers) is taken as if
// free: that worker stopped before its liveness ran out (it fences itself).
func (q *Broker) AcquireLease(ctx context.Context, p int, id string, ttl time.Duration, dead ...string) (bool, error) {
	args := make([]any, 0, 2+len(dead))
	args = append(args, id, ttl.Milliseconds())
	for _, d := range dead {
		args = append(args, d)
	}
	n, err := scriptLeaseAcquire.Run(ctx, q.rdb, []string{q.Keys.Owner(p)}, args...).Int()
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

// scriptLiveRound (lua/live_round.lua) renews a worker's liveness and
// lists the live and the dead.
var scriptLiveRound = loadScript("live_round")

// LiveRound marks worker id alive for liveness more (by Redis's clock),
// and returns the workers alive and those that stopped renewing less than
// forget ago (dead). Those silent for longer are forgotten.
func (q *Broker) LiveRound(ctx context.Context, id string, liveness, forget time.Duration) (live, dead []string, err error) {
	res, err := scriptLiveRound.Run(ctx, q.rdb, []string{q.Keys.Live()}, id, liveness.Milliseconds(),
		forget.Milliseconds(), time.Now().UnixMilli()).Slice()
	if err != nil {
		return nil, nil, fmt.Errorf("store: liveness round: %w", err)
	}
	if len(res) != 2 {
		return nil, nil, fmt.Errorf("store: liveness round: %d replies, want 2", len(res))
	}
	return stringList(res[0]), stringList(res[1]), nil
}

// LiveForget takes worker id off the liveness registry (it stopped
// cleanly and holds no partition any more).
func (q *Broker) LiveForget(ctx context.Context, id string) error {
	_, err := q.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Del(ctx, q.Keys.LiveMark(id))
		pipe.ZRem(ctx, q.Keys.Live(), id)
		return nil
	})
	return err
}

// stringList converts a script's array of strings.
func stringList(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
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
