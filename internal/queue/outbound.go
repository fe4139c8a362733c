package queue

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// PushOut queues on pipe messages for gateway gw, first one first out.
func (q *Broker) PushOut(ctx context.Context, pipe redis.Pipeliner, gw string, msgs ...any) {
	pipe.LPush(ctx, q.Keys.Outbound(gw), msgs...)
}

// OutPos is where a gateway stands in its outbound list: the number of
// its last trim and how many messages it has handed out since, which are
// still at the list's tail (workers push at the head) until a trim drops
// them. The zero value is a gateway's start.
type OutPos struct {
	Take  int64
	Taken int
}

// scriptOutTrim (lua/out_trim.lua) drops the outbound messages a gateway
// handed out, once, and numbers its next take.
var scriptOutTrim = loadScript("out_trim")

// TakeOut returns up to n messages for gateway gw that it has not handed
// out yet, oldest first, in one round trip, and counts them in pos. With
// trim (and always at start) it first drops the ones pos counts
// (out_trim.lua); without, it is one LRANGE past them, which Redis serves
// without a script. If it fails, pos is unchanged and the same call may be
// made again: what a lost reply held is returned again, and nothing is
// dropped twice. Trim before blocking in WaitOut, which waits for the
// list's tail.
func (q *Broker) TakeOut(ctx context.Context, gw string, pos *OutPos, n int, trim bool) ([]string, error) {
	out := q.Keys.Outbound(gw)
	if !trim && pos.Take != 0 {
		msgs, err := q.rdb.LRange(ctx, out, -int64(pos.Taken+n), -int64(pos.Taken+1)).Result()
		if err != nil {
			return nil, fmt.Errorf("store: take out: %w", err)
		}
		slices.Reverse(msgs) // LRANGE gives the tail newest first
		pos.Taken += len(msgs)
		return msgs, nil
	}
	seed := mrand.Int64N(1 << 50)
	var take *redis.Cmd
	var rng *redis.StringSliceCmd
	for try := 0; ; try++ {
		pipe := q.rdb.Pipeline()
		take = scriptOutTrim.EvalSha(ctx, pipe, []string{out, q.Keys.OutboundBatch(gw)}, pos.Take, pos.Taken, seed)
		rng = pipe.LRange(ctx, out, -int64(n), -1)
		_, err := pipe.Exec(ctx)
		if err == nil {
			break
		}
		// Not in the script cache (a restarted Redis): nothing was
		// dropped, and the LRANGE's reply is not used. Load and again.
		if try == 0 && IsNoScript(err) {
			if err = scriptOutTrim.Load(ctx, q.rdb).Err(); err == nil {
				continue
			}
		}
		return nil, fmt.Errorf("store: take out: %w", err)
	}
	num, err := take.Int64()
	if err != nil {
		return nil, fmt.Errorf("store: take out: %w", err)
	}
	msgs := rng.Val()
	slices.Reverse(msgs)
	pos.Take, pos.Taken = num, len(msgs)
	return msgs, nil
}

// WaitOut waits up to timeout (whole seconds, at least one) for a message
// for gateway gw and returns it, leaving it in the list (BLMOVE of the
// tail onto the tail), so call it only once TakeOut returned nothing. The
// caller counts it in pos.Taken once handed out; the next TakeOut drops
// it. If the call fails, the message is still in the list and the next
// TakeOut returns it. It uses its own client rdb, since a blocked command
// holds a connection.
func (q *Broker) WaitOut(ctx context.Context, rdb redis.UniversalClient, gw string, timeout time.Duration) (string, bool, error) {
	out := q.Keys.Outbound(gw)
	v, err := rdb.BLMove(ctx, out, out, "RIGHT", "RIGHT", timeout).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return v, true, nil
}
