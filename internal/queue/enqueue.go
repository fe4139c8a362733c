package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/maple-farm/maple/internal/retry"
	"github.com/redis/go-redis/v9"
)

// PartBatch is the envelopes a gateway queues on one partition in one
// round trip. The accepted ones go into one stream entry (a bundle), so
// Redis and the workers pay per round trip rather than per frame. Enqueue
// fills Accepted and Refused.
type PartBatch struct {
	Part      int
	Envelopes [][]byte // encoded envelopes, in order
	// Always, if set, marks envelopes the bound does not apply to (beside
	// open and close events, which it never applies to).
	Always   []bool
	Accepted []bool
	// Refused is set when Redis refused the entry for its content (out of
	// memory, a wrong type, too big): sending it again would be refused
	// again, so the caller answers or drops its envelopes instead.
	Refused error
	// Bundle is where the entry is encoded: a caller that keeps it from
	// call to call saves an allocation per partition and round trip.
	Bundle []byte
}

// Enqueue appends every batch of gateway gw to its partition's inbound
// stream, all in one pipeline, and adds them to the gateway's frame count
// (Keys.Queued). bound is the count past which client frames are refused
// (Accepted false); open and close events are always taken, so a worker
// always learns that a connection ended. 0 means no bound.
//
// A batch Redis refused for its content gets Refused; the others were
// applied. The error is for the rest: a network error, after which the
// caller cannot know which batches were applied and should send the ones
// not Refused again (workers drop the copies by their per-connection
// sequence number). The caller keeps a pipeline within its byte budget
// (DefaultWriteBudget).
func (q *Broker) Enqueue(ctx context.Context, gw string, batches []PartBatch, bound int) error {
	return q.EnqueueCached(ctx, gw, batches, bound, nil)
}

// EnqueueCached is Enqueue with the frame count known from the caller's
// previous call (*queued), updated from the same round trip, so the bound
// costs no extra round trip. With queued nil the count is read first.
func (q *Broker) EnqueueCached(ctx context.Context, gw string, batches []PartBatch, bound int, queued *int64) error {
	var n int64
	if queued != nil {
		n = *queued
	} else if bound > 0 {
		var err error
		if n, err = q.Queued(ctx, gw); err != nil {
			return fmt.Errorf("store: enqueue: %w", err)
		}
	}
	// Plain XADDs and one INCRBY rather than a script: pipelined, they cost
	// Redis a fraction of a script call, and the bound need not be exact.
	pipe := q.rdb.Pipeline()
	var accepted [][]byte
	var total int64
	adds := make([]*redis.StringCmd, len(batches))
	for i := range batches {
		b := &batches[i]
		b.Accepted, b.Refused = b.Accepted[:0], nil
		accepted = accepted[:0]
		for k, e := range b.Envelopes {
			if bound > 0 && n >= int64(bound) && isClientFrame(e) && (k >= len(b.Always) || !b.Always[k]) {
				b.Accepted = append(b.Accepted, false)
				continue
			}
			accepted = append(accepted, e)
			n++
			b.Accepted = append(b.Accepted, true)
		}
		if len(accepted) > 0 {
			b.Bundle = AppendEnvelopeBundle(slices.Grow(b.Bundle[:0], BundleSize(accepted)), accepted)
			adds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: q.Keys.Inbound(b.Part), Values: []any{fieldBundle, b.Bundle}})
			total += int64(len(accepted))
		}
	}
	// After the XADDs: a pipeline cut short can then leave the count too
	// low (a looser bound), never too high.
	count := pipe.IncrBy(ctx, q.Keys.Queued(gw), total)
	_, err := pipe.Exec(ctx)
	if err != nil {
		// Sort the failures: a refusal of an entry's content is that
		// entry's; anything else (the network) makes the call fail.
		err = nil
		for i, c := range adds {
			if c == nil {
				continue
			}
			if e := c.Err(); e != nil && retry.IsRefused(e) {
				batches[i].Refused = e
			} else if e != nil && err == nil {
				err = e
			}
		}
		if e := count.Err(); e != nil && err == nil && !retry.IsRefused(e) {
			err = e
		}
		if err != nil {
			return fmt.Errorf("store: enqueue: %w", err)
		}
	}
	if v := count.Val(); v < 0 {
		// Below zero (workers finished frames the count never had, after
		// Redis failures): start again from zero, so the bound is not
		// loosened for good.
		_ = q.rdb.IncrBy(ctx, q.Keys.Queued(gw), -v).Err()
	}
	if queued != nil && count.Err() == nil {
		*queued = max(count.Val(), 0)
	}
	return nil
}

// Stream entry fields: a gateway's bundle of envelopes, or one envelope
// (timers, periodic jobs, system frames, requeued dead letters).
const (
	fieldBundle   = "b"
	fieldEnvelope = "e"
	fieldRequeued = "requeued" // beside "e": put back from the dead letters (dead_requeue.lua)
)

// isClientFrame reports whether an encoded envelope holds a client frame
// (the refusable kind).
func isClientFrame(b []byte) bool {
	return len(b) > 1 && Kind(b[1]) == KindFrame
}

// Queued returns the envelopes gateway gw queued that workers have not
// finished.
func (q *Broker) Queued(ctx context.Context, gw string) (int64, error) {
	n, err := q.rdb.Get(ctx, q.Keys.Queued(gw)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return max(n, 0), err
}

// Finished queues on pipe that n envelopes of gateway gw's bundles are
// done (they leave its frame count). Queue it before the entries' Ack: a
// pipeline cut short then leaves the count too low (a looser bound), never
// too high.
func (q *Broker) Finished(ctx context.Context, pipe redis.Pipeliner, gw string, n int64) {
	pipe.DecrBy(ctx, q.Keys.Queued(gw), n)
}
