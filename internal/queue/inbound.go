package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/redis/go-redis/v9"
)

// Delivery is one envelope handed to a worker. The entry it came in (ID)
// may bundle several; the entry is done, and acknowledged, once all of
// them are.
type Delivery struct {
	Part       int
	ID         string // stream entry id
	Index      int    // the envelope's position in its entry
	Count      int    // envelopes in the entry
	Bundled    bool   // the entry is a gateway's bundle, counted in its Queued
	Requeued   bool   // an operator put it back from the dead letters: run it even if its connection is past it
	Deliveries int64  // 1 on first delivery; more after a worker died with it
	Env        Envelope
	Raw        []byte // the encoded envelope, for dead letters
}

// EnsureGroups creates the consumer group of each partition's stream,
// reading from the start so that frames queued before any worker ran are
// served.
func (q *Broker) EnsureGroups(ctx context.Context, parts int) error {
	for p := 0; p < parts; p++ {
		err := q.rdb.XGroupCreateMkStream(ctx, q.Keys.Inbound(p), keys.ConsumerGroup, "0").Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return fmt.Errorf("store: create group on partition %d: %w", p, err)
		}
	}
	return nil
}

// ReadInbound takes up to count new entries from each of parts for
// consumer, waiting up to block when there are none. On Redis Cluster the
// partitions must share a slot, so call it with one partition at a time.
func (q *Broker) ReadInbound(ctx context.Context, consumer string, parts []int, count int64, block time.Duration) ([]Delivery, error) {
	streams := make([]string, 0, 2*len(parts))
	for _, p := range parts {
		streams = append(streams, q.Keys.Inbound(p))
	}
	for range parts {
		streams = append(streams, ">")
	}
	cmd := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: keys.ConsumerGroup, Consumer: consumer, Streams: streams, Count: count, Block: block,
	})
	return q.inbound(ctx, cmd, parts)
}

// InboundReads is ReadInbound for one reader that reads the same
// partitions again and again (the worker's main read): the command's
// arguments are built once per set of partitions, not at every read. At
// one request in flight a worker reads once per request, and building
// the arguments (a key and two boxed strings per partition) was a third
// of what it allocated (scripts/allocs.sh).
//
// Its reads carry no deadline of their own, unlike ReadInbound's: they
// take the client's read timeout, which must outlast the block
// (NewBlockingClient with pipelineBlock >= block). One goroutine at a
// time may use it.
type InboundReads struct {
	q        *Broker
	consumer string
	parts    []int
	args     []any // xreadgroup group G C count N block B streams keys... >...
}

// The positions of the arguments that change between reads.
const (
	inboundArgCount   = 5
	inboundArgBlock   = 7
	inboundArgStreams = 9 // the first key
)

// InboundReads returns reads of partition streams for consumer.
func (q *Broker) InboundReads(consumer string) *InboundReads {
	return &InboundReads{q: q, consumer: consumer}
}

// Read takes up to count new entries from each of parts, waiting up to
// block (>= 0) when there are none, as ReadInbound.
func (r *InboundReads) Read(ctx context.Context, parts []int, count int64, block time.Duration) ([]Delivery, error) {
	if r.args == nil || !slices.Equal(parts, r.parts) {
		r.parts = append(r.parts[:0], parts...)
		r.args = append(r.args[:0], "xreadgroup", "group", keys.ConsumerGroup, r.consumer, "count", 0, "block", 0, "streams")
		for _, p := range parts {
			r.args = append(r.args, r.q.Keys.Inbound(p))
		}
		for range parts {
			r.args = append(r.args, ">")
		}
	}
	r.args[inboundArgCount] = count
	r.args[inboundArgBlock] = block.Milliseconds()
	cmd := redis.NewXStreamSliceCmd(ctx, r.args...)
	cmd.SetFirstKeyPos(inboundArgStreams) // a cluster routes by it
	_ = r.q.rdb.Process(ctx, cmd)
	return r.q.inbound(ctx, cmd, parts)
}

// inbound returns the deliveries of a read of parts.
func (q *Broker) inbound(ctx context.Context, cmd *redis.XStreamSliceCmd, parts []int) ([]Delivery, error) {
	res, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if redis.HasErrorPrefix(err, "NOGROUP") {
			// The stream was deleted (FLUSHALL, or an operator): recreate.
			for _, p := range parts {
				_ = q.rdb.XGroupCreateMkStream(ctx, q.Keys.Inbound(p), keys.ConsumerGroup, "0").Err()
			}
		}
		return nil, fmt.Errorf("store: read inbound: %w", err)
	}
	n := 0
	for _, st := range res {
		for _, m := range st.Messages {
			n += envelopeCount(m)
		}
	}
	out := make([]Delivery, 0, n)
	for _, st := range res {
		p := q.partOf(st.Stream)
		for _, m := range st.Messages {
			out = toDeliveries(out, p, m, 1)
		}
	}
	return out, nil
}

// envelopeCount counts the envelopes of a stream entry without decoding
// them (at least 1), to size the deliveries in one allocation.
func envelopeCount(m redis.XMessage) int {
	b, ok := m.Values[fieldBundle].(string)
	if !ok {
		return 1
	}
	n := 0
	for len(b) > 0 {
		l, k := binary.Uvarint([]byte(b[:min(len(b), binary.MaxVarintLen64)]))
		if k <= 0 || uint64(len(b)-k) < l {
			break
		}
		b = b[k+int(l):]
		n++
	}
	return max(n, 1)
}

// ReadOwnPending returns the entries of parts that were delivered to
// consumer and not acknowledged: after a read whose reply was lost (Redis
// or the connection died mid-call), they are pending under this consumer
// but never reached it.
func (q *Broker) ReadOwnPending(ctx context.Context, consumer string, parts []int) ([]Delivery, error) {
	var out []Delivery
	for _, p := range parts {
		res, err := q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: keys.ConsumerGroup, Consumer: consumer, Streams: []string{q.Keys.Inbound(p), "0"}, Count: 10000,
		}).Result()
		if redis.HasErrorPrefix(err, "NOGROUP") {
			// The stream is gone (Redis lost its data): nothing is pending;
			// recreate the group so reading can go on.
			_ = q.rdb.XGroupCreateMkStream(ctx, q.Keys.Inbound(p), keys.ConsumerGroup, "0").Err()
			continue
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return out, fmt.Errorf("store: read own pending: %w", err)
		}
		for _, st := range res {
			for _, m := range st.Messages {
				if m.Values != nil {
					out = toDeliveries(out, p, m, 2)
				}
			}
		}
	}
	return out, nil
}

// partOf recovers the partition number from an inbound stream key.
func (q *Broker) partOf(key string) int {
	i := strings.Index(key, ":{p")
	j := strings.Index(key, "}:in")
	if i < 0 || j < i {
		return -1
	}
	n, _ := strconv.Atoi(key[i+3 : j])
	return n
}

// toDeliveries appends the envelopes of a stream entry to out. A bundle
// ("b") holds a gateway's envelopes; "e" holds one. An entry without either
// but with "cmd" (and "body") fields is an operator's frame for the
// workers, queued straight from redis-cli (docs/operations.md). What
// cannot be read comes out as one delivery of kind 0 (dead-lettered).
func toDeliveries(out []Delivery, p int, m redis.XMessage, deliveries int64) []Delivery {
	d := Delivery{Part: p, ID: m.ID, Count: 1, Deliveries: deliveries}
	if b, ok := m.Values[fieldBundle].(string); ok {
		raw := []byte(b)
		envs, err := SplitBundle(raw)
		if err != nil {
			d.Raw = raw
			return append(out, d)
		}
		d.Count, d.Bundled = len(envs), true
		var prev Envelope
		for i, e := range envs {
			d.Index, d.Raw = i, e
			d.Env, err = decodeEnvelopeAfter(e, &prev)
			if err != nil {
				d.Env = Envelope{}
			} else {
				prev = d.Env
			}
			out = append(out, d)
		}
		return out
	}
	if e, ok := m.Values[fieldEnvelope].(string); ok {
		_, d.Requeued = m.Values[fieldRequeued]
		d.Raw = []byte(e)
		env, err := DecodeEnvelope(d.Raw)
		if err == nil {
			d.Env = env
		}
		return append(out, d)
	}
	cmdStr, _ := m.Values["cmd"].(string)
	cmd, err := strconv.ParseInt(cmdStr, 10, 32)
	if err != nil {
		return append(out, d)
	}
	body, _ := m.Values["body"].(string)
	d.Env = Envelope{Kind: KindSystem, Frame: box.Append(nil, int32(cmd), 0, 0, []byte(body))}
	d.Raw = AppendEnvelope(nil, &d.Env)
	return append(out, d)
}

// ClaimPending takes over the entries of partition p that other consumers
// (workers that died or let the lease go) took but never acknowledged, in
// stream order. The delivery count of each grows by one.
func (q *Broker) ClaimPending(ctx context.Context, p int, consumer string) ([]Delivery, error) {
	key := q.Keys.Inbound(p)
	var out []Delivery
	start := "-"
	for {
		pend, err := q.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: key, Group: keys.ConsumerGroup, Start: start, End: "+", Count: 1000,
		}).Result()
		if err != nil {
			return out, fmt.Errorf("store: pending on partition %d: %w", p, err)
		}
		if len(pend) == 0 {
			return out, nil
		}
		var ids []string
		counts := make(map[string]int64, len(pend))
		for _, pe := range pend {
			if pe.Consumer != consumer {
				ids = append(ids, pe.ID)
				counts[pe.ID] = pe.RetryCount + 1
			}
		}
		if len(ids) > 0 {
			msgs, err := q.rdb.XClaim(ctx, &redis.XClaimArgs{
				Stream: key, Group: keys.ConsumerGroup, Consumer: consumer, MinIdle: 0, Messages: ids,
			}).Result()
			if err != nil {
				return out, fmt.Errorf("store: claim on partition %d: %w", p, err)
			}
			for _, m := range msgs {
				if m.Values == nil {
					continue // trimmed meanwhile
				}
				out = toDeliveries(out, p, m, counts[m.ID])
			}
			// Entries deleted from the stream stay pending with no data;
			// acknowledge them so they are not claimed forever.
			if len(msgs) < len(ids) {
				seen := make(map[string]bool, len(msgs))
				for _, m := range msgs {
					seen[m.ID] = true
				}
				for _, id := range ids {
					if !seen[id] {
						q.rdb.XAck(ctx, key, keys.ConsumerGroup, id)
					}
				}
			}
		}
		if len(pend) < 1000 {
			return out, nil
		}
		start = "(" + pend[len(pend)-1].ID
	}
}

// Ack queues on pipe the acknowledgement of entries of partition p.
func (q *Broker) Ack(ctx context.Context, pipe redis.Pipeliner, p int, ids ...string) {
	pipe.XAck(ctx, q.Keys.Inbound(p), keys.ConsumerGroup, ids...)
}

// scriptTrim (lua/trim.lua) deletes the entries every worker is done with.
var scriptTrim = loadScript("trim")

// Trim queues on pipe the deletion of partition p's entries that every
// worker is done with (trim.lua), so the stream's length is its backlog.
func (q *Broker) Trim(ctx context.Context, pipe redis.Pipeliner, p int) {
	scriptTrim.EvalSha(ctx, pipe, []string{q.Keys.Inbound(p)}, keys.ConsumerGroup)
}
