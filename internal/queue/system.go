package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/redis/go-redis/v9"
)

// scriptCronClaim (lua/cron_claim.lua) lets one caller per period queue a periodic job's run.
var scriptCronClaim = loadScript("cron_claim")

// ClaimPeriod lets exactly one caller start period n of a periodic job:
// that caller's job envelope enters the stream in the same step. It reports
// whether this caller won.
func (q *Broker) ClaimPeriod(ctx context.Context, parts int, job string, n int64, period time.Duration) (bool, error) {
	p := PartitionOf(job, parts)
	env := Envelope{Kind: KindJob, Frame: box.Append(nil, 0, 0, 0, []byte(job))}
	ttl := max(2*period, time.Minute).Milliseconds()
	won, err := scriptCronClaim.Run(ctx, q.rdb, []string{q.Keys.Cron(p, job), q.Keys.Inbound(p)},
		n, AppendEnvelope(nil, &env), ttl).Int()
	if err != nil {
		return false, fmt.Errorf("store: claim period of %q: %w", job, err)
	}
	return won == 1, nil
}

// QueueSystem queues a frame for the workers at once, as if from a system
// client (write_to_worker).
func (q *Broker) QueueSystem(ctx context.Context, parts int, cmd int32, body []byte) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := PartitionOf(hex.EncodeToString(b[:]), parts)
	env := Envelope{Kind: KindSystem, Frame: box.Append(nil, cmd, 0, 0, body)}
	if err := q.rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Keys.Inbound(p), Values: []any{"e", AppendEnvelope(nil, &env)}}).Err(); err != nil {
		return fmt.Errorf("store: queue system frame: %w", err)
	}
	return nil
}
