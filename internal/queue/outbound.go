package queue

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// PushOut queues on pipe messages for gateway gw, first one first out.
func (q *Broker) PushOut(ctx context.Context, pipe redis.Pipeliner, gw string, msgs ...any) {
	pipe.LPush(ctx, q.Keys.Outbound(gw), msgs...)
}

// scriptOutTake (lua/out_take.lua) hands out a batch of outbound messages until it is acknowledged.
var scriptOutTake = loadScript("out_take")

// TakeOut takes up to n messages for gateway gw. acked is the number of
// the last batch the gateway received (0 at start); until a batch is
// acknowledged that way, the same batch is returned again, so a batch whose
// reply was lost is not. It returns the batch number and the messages.
func (q *Broker) TakeOut(ctx context.Context, gw string, acked int64, n int) (int64, []string, error) {
	keys := []string{q.Keys.Outbound(gw), q.Keys.OutboundTransit(gw), q.Keys.OutboundBatch(gw)}
	seed := mrand.Int64N(1 << 50)
	res, err := scriptOutTake.Run(ctx, q.rdb, keys, acked, n, seed).Slice()
	if err != nil {
		return acked, nil, err
	}
	if len(res) == 0 {
		return acked, nil, fmt.Errorf("store: take out: empty reply")
	}
	batch, _ := res[0].(int64)
	msgs := make([]string, 0, len(res)-1)
	for _, m := range res[1:] {
		if str, ok := m.(string); ok {
			msgs = append(msgs, str)
		}
	}
	return batch, msgs, nil
}

// WaitOut waits up to timeout (whole seconds, at least one) for a message
// for gateway gw and takes it, moving it to the batch in transit, which the
// gateway's next TakeOut acknowledges. If the call fails, the gateway must
// pass acked -1 to TakeOut, which then hands out the transit batch again
// (it may hold the message whose reply was lost). It uses its own client
// rdb, since a blocked command holds a connection.
func (q *Broker) WaitOut(ctx context.Context, rdb redis.UniversalClient, gw string, timeout time.Duration) (string, bool, error) {
	v, err := rdb.BLMove(ctx, q.Keys.Outbound(gw), q.Keys.OutboundTransit(gw), "RIGHT", "RIGHT", timeout).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return v, true, nil
}
