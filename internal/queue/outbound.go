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
// dropped twice. TakeOutWait is the take of a gateway that found nothing.
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
	return q.takeTrimmed(ctx, q.rdb, gw, pos, n, 0)
}

// TakeOutWait is TakeOut with trim that, when nothing is waiting, blocks
// up to timeout (whole seconds, at least one) for the next message, all
// in one round trip on rdb (its own client: a blocked command holds a
// connection): out_trim.lua, the LRANGE, then a BLMOVE of the list's tail
// onto its tail, which takes nothing. A quiet gateway so pays one round
// trip per message, where a take and then a wait paid two. When the
// LRANGE found messages the BLMOVE returned at once with the first of
// them, and is ignored; otherwise its message, if one came, is the one
// returned. Like TakeOut, a failed call leaves pos unchanged and may be
// made again.
func (q *Broker) TakeOutWait(ctx context.Context, rdb redis.UniversalClient, gw string, pos *OutPos, n int, timeout time.Duration) ([]string, error) {
	return q.takeTrimmed(ctx, rdb, gw, pos, n, timeout)
}

// takeTrimmed drops what pos counts (out_trim.lua) and reads up to n
// messages past it, on rdb; with wait > 0 it then blocks that long for
// one if there were none.
func (q *Broker) takeTrimmed(ctx context.Context, rdb redis.UniversalClient, gw string, pos *OutPos, n int, wait time.Duration) ([]string, error) {
	out := q.Keys.Outbound(gw)
	seed := mrand.Int64N(1 << 50)
	var take *redis.Cmd
	var rng *redis.StringSliceCmd
	var next *redis.StringCmd
	// A NOSCRIPT (a restarted Redis) dropped nothing, and the LRANGE's and
	// BLMOVE's replies are not used: execScripts runs them all again.
	err := execScripts(ctx, rdb, func(pipe redis.Pipeliner) {
		take = scriptOutTrim.EvalSha(ctx, pipe, []string{out, q.Keys.OutboundBatch(gw)}, pos.Take, pos.Taken, seed)
		rng = pipe.LRange(ctx, out, -int64(n), -1)
		if wait > 0 {
			next = pipe.BLMove(ctx, out, out, "RIGHT", "RIGHT", wait)
		}
	})
	if err != nil && !(errors.Is(err, redis.Nil) && take.Err() == nil && rng.Err() == nil) { // redis.Nil: the BLMOVE timed out
		return nil, fmt.Errorf("store: take out: %w", err)
	}
	num, err := take.Int64()
	if err != nil {
		return nil, fmt.Errorf("store: take out: %w", err)
	}
	msgs := rng.Val()
	slices.Reverse(msgs)
	if len(msgs) == 0 && next != nil && next.Err() == nil {
		msgs = append(msgs, next.Val())
	}
	pos.Take, pos.Taken = num, len(msgs)
	return msgs, nil
}
