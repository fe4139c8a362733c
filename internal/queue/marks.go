package queue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// MarkHandled queues on pipe the sequence numbers of the last envelopes
// finished for connections of gateway gw (connSeq: conn id, seq, conn id,
// seq...). A worker that takes over an entry skips them.
func (q *Broker) MarkHandled(ctx context.Context, pipe redis.Pipeliner, gw string, connSeq ...any) {
	pipe.HSet(ctx, q.Keys.Handled(gw), connSeq...)
}

// ForgetHandled queues on pipe the removal of closed connections' marks.
func (q *Broker) ForgetHandled(ctx context.Context, pipe redis.Pipeliner, gw string, conns ...string) {
	pipe.HDel(ctx, q.Keys.Handled(gw), conns...)
}

// HandledQuery asks for the handled marks of connections of one gateway;
// HandledSeqs fills Seqs (0: none).
type HandledQuery struct {
	Gateway string
	Conns   []string
	Seqs    []uint64
}

// HandledSeqs answers every query, in one pipeline.
func (q *Broker) HandledSeqs(ctx context.Context, qs []HandledQuery) error {
	pipe := q.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(qs))
	for i, hq := range qs {
		if len(hq.Conns) > 0 { // HMGET needs a field
			cmds[i] = pipe.HMGet(ctx, q.Keys.Handled(hq.Gateway), hq.Conns...)
		}
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("store: handled marks: %w", err)
	}
	for i := range qs {
		hq := &qs[i]
		hq.Seqs = make([]uint64, len(hq.Conns))
		if cmds[i] == nil {
			continue
		}
		for j, v := range cmds[i].Val() {
			if str, ok := v.(string); ok && j < len(hq.Seqs) {
				hq.Seqs[j], _ = strconv.ParseUint(str, 10, 64)
			}
		}
	}
	return nil
}

// triesTTL bounds how long the start counts of a redelivered entry are
// kept if no worker finishes it.
const triesTTL = 24 * time.Hour

// StartTry counts a start of envelope index of redelivered entry id of
// partition p and returns how many starts there were, this one included.
func (q *Broker) StartTry(ctx context.Context, p int, id string, index int) (int64, error) {
	key := q.Keys.Tries(p, id)
	pipe := q.rdb.TxPipeline()
	n := pipe.HIncrBy(ctx, key, strconv.Itoa(index), 1)
	pipe.PExpire(ctx, key, triesTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("store: count try of %s: %w", id, err)
	}
	return n.Val(), nil
}

// ClearTries queues on pipe the removal of entry id's start counts.
func (q *Broker) ClearTries(ctx context.Context, pipe redis.Pipeliner, p int, id string) {
	pipe.Del(ctx, q.Keys.Tries(p, id))
}
