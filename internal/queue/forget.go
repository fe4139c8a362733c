package queue

import (
	"context"
	"fmt"
)

// ForgetGateway deletes everything gateway gw left in Redis: its users'
// sessions (where they still point at it), its user set, its outbound
// list and the batch in transit, its frame count, its connections'
// handled marks, and its registry entry. It returns the number of sessions
// removed.
//
// It is the one way a gateway is forgotten: by the gateway itself once it
// stopped cleanly and the workers finished what it queued
// (gateway/forget.go), and by the workers' reaper when it died
// (worker/reaper.go). Either way no key of gw stays behind.
func (q *Broker) ForgetGateway(ctx context.Context, gw string) (int, error) {
	uids, err := q.rdb.SMembers(ctx, q.Keys.GatewayUsers(gw)).Result()
	if err != nil {
		return 0, fmt.Errorf("store: reap gateway %s: %w", gw, err)
	}
	n := 0
	for _, uid := range uids {
		ok, err := scriptSessionUnbind.Run(ctx, q.rdb, []string{q.Keys.Session(uid)}, "", gw).Int()
		if err != nil {
			return n, fmt.Errorf("store: reap gateway %s: %w", gw, err)
		}
		n += ok
	}
	pipe := q.rdb.Pipeline()
	// UNLINK: the handled marks and the outbound list of a big gateway
	// hold a field or element per connection; Redis frees them in the
	// background instead of blocking on them. The keys share the
	// gateway's hash tag: one command, also on a Cluster.
	pipe.Unlink(ctx, q.Keys.GatewayKeys(gw)...)
	pipe.ZRem(ctx, q.Keys.Gateways(), gw)
	if _, err := pipe.Exec(ctx); err != nil {
		return n, fmt.Errorf("store: reap gateway %s: %w", gw, err)
	}
	return n, nil
}
