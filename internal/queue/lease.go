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

// RenewLeases renews worker id's leases on parts in one round trip
// (lease_acquire.lua per partition, pipelined; on Redis Cluster one per
// master). held[i] says whether id holds parts[i] now; errs[i] is that
// partition's error, if any.
func (q *Broker) RenewLeases(ctx context.Context, parts []int, id string, ttl time.Duration) (held []bool, errs []error) {
	held, errs = make([]bool, len(parts)), make([]error, len(parts))
	if len(parts) == 0 {
		return held, errs
	}
	cmds := make([]*redis.Cmd, len(parts))
	_ = execScripts(ctx, q.rdb, func(pipe redis.Pipeliner) {
		for i, p := range parts {
			cmds[i] = scriptLeaseAcquire.EvalSha(ctx, pipe, []string{q.Keys.Owner(p)}, id, ttl.Milliseconds())
		}
	})
	for i, c := range cmds {
		n, err := c.Int()
		if err != nil {
			errs[i] = fmt.Errorf("store: renew lease of partition %d: %w", parts[i], err)
			continue
		}
		held[i] = n == 1
	}
	return held, errs
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

// ReleaseLeases gives up the leases on parts that id holds, in one round
// trip (lease_release.lua per partition, pipelined). Asked for every
// partition, it also drops a lease whose taking or renewal reached Redis
// while its reply did not reach the caller (a worker stopping mid-round).
func (q *Broker) ReleaseLeases(ctx context.Context, parts []int, id string) error {
	if len(parts) == 0 {
		return nil
	}
	err := execScripts(ctx, q.rdb, func(pipe redis.Pipeliner) {
		for _, p := range parts {
			scriptLeaseRelease.EvalSha(ctx, pipe, []string{q.Keys.Owner(p)}, id)
		}
	})
	if err != nil {
		return fmt.Errorf("store: release partitions: %w", err)
	}
	return nil
}

// LiveRound marks worker id alive for liveness more (by Redis's clock),
// and returns the workers alive and those that stopped renewing less than
// forget ago (dead). Those silent for longer are forgotten.
//
// known names the workers the caller listed at its last round, live or
// dead: their marks are read in the same round trip as the renewal, so a
// round is one round trip of native commands (an idle farm's most
// frequent call to Redis: a script cost Redis several times as much). A
// worker listed that is not in known (new to the caller) has its mark
// read in a second round trip.
//
// The commands need not run atomically. A worker is named dead only by
// an EXISTS of its mark that found none, sent after the ZRANGEBYSCORE
// that listed it: by then Redis expired its mark (liveness after Redis ran
// its last SET, which it sent earlier still, so it fenced itself before;
// worker/leases.go) or the worker deleted it, having given its leases up
// (LiveForget). A worker's SET goes before its ZADD on one connection, so
// whoever lists it reads a mark that was set. What runs between the
// commands only makes a verdict a moment old, as a script's was once
// returned.
//
// probe, if not nil, rides in the same round trip (its errors are its
// own: TimerProbe.Due).
func (q *Broker) LiveRound(ctx context.Context, id string, liveness, forget time.Duration, known []string, probe *TimerProbe) (live, dead []string, err error) {
	now := time.Now().UnixMilli()
	reg := q.Keys.Live()
	marks := make(map[string]*redis.IntCmd, len(known))
	pipe := q.rdb.Pipeline()
	renew := []redis.Cmder{
		pipe.Set(ctx, q.Keys.LiveMark(id), "1", liveness),
		pipe.ZAdd(ctx, reg, redis.Z{Score: float64(now), Member: id}),
	}
	all := pipe.ZRangeByScoreWithScores(ctx, reg, &redis.ZRangeBy{Min: "-inf", Max: "+inf"})
	renew = append(renew, all)
	for _, w := range known {
		if w != id {
			marks[w] = pipe.Exists(ctx, q.Keys.LiveMark(w))
			renew = append(renew, marks[w])
		}
	}
	if probe != nil {
		probe.add(ctx, q, pipe)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range renew {
		if err := c.Err(); err != nil {
			return nil, nil, fmt.Errorf("store: liveness round: %w", err)
		}
	}
	var unknown []string
	for _, z := range all.Val() {
		w, _ := z.Member.(string)
		if _, ok := marks[w]; !ok && w != id {
			unknown = append(unknown, w)
		}
	}
	if len(unknown) > 0 {
		_, err = q.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, w := range unknown {
				marks[w] = pipe.Exists(ctx, q.Keys.LiveMark(w))
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("store: liveness round: %w", err)
		}
	}
	var forgotten []any
	for _, z := range all.Val() {
		w, _ := z.Member.(string)
		switch {
		case w == id || marks[w].Val() == 1:
			live = append(live, w)
		case z.Score < float64(now-forget.Milliseconds()):
			// Silent for longer than forget: its leases, which it stopped
			// renewing too, ran out by then.
			forgotten = append(forgotten, w)
		default:
			dead = append(dead, w)
		}
	}
	if len(forgotten) > 0 {
		if err := q.rdb.ZRem(ctx, reg, forgotten...).Err(); err != nil {
			return nil, nil, fmt.Errorf("store: liveness round: %w", err)
		}
	}
	return live, dead, nil
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
