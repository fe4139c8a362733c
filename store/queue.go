package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
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
func (s *Store) Enqueue(ctx context.Context, gw string, batches []PartBatch, bound int) error {
	return s.EnqueueCached(ctx, gw, batches, bound, nil)
}

// EnqueueCached is Enqueue with the frame count known from the caller's
// previous call (*queued), updated from the same round trip, so the bound
// costs no extra round trip. With queued nil the count is read first.
func (s *Store) EnqueueCached(ctx context.Context, gw string, batches []PartBatch, bound int, queued *int64) error {
	var n int64
	if queued != nil {
		n = *queued
	} else if bound > 0 {
		var err error
		if n, err = s.Queued(ctx, gw); err != nil {
			return fmt.Errorf("store: enqueue: %w", err)
		}
	}
	// Plain XADDs and one INCRBY rather than a script: pipelined, they cost
	// Redis a fraction of a script call, and the bound need not be exact.
	pipe := s.rdb.Pipeline()
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
			adds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Inbound(b.Part), Values: []any{fieldBundle, b.Bundle}})
			total += int64(len(accepted))
		}
	}
	// After the XADDs: a pipeline cut short can then leave the count too
	// low (a looser bound), never too high.
	count := pipe.IncrBy(ctx, s.Keys.Queued(gw), total)
	_, err := pipe.Exec(ctx)
	if err != nil {
		// Sort the failures: a refusal of an entry's content is that
		// entry's; anything else (the network) makes the call fail.
		err = nil
		for i, c := range adds {
			if c == nil {
				continue
			}
			if e := c.Err(); e != nil && IsRefused(e) {
				batches[i].Refused = e
			} else if e != nil && err == nil {
				err = e
			}
		}
		if e := count.Err(); e != nil && err == nil && !IsRefused(e) {
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
		_ = s.rdb.IncrBy(ctx, s.Keys.Queued(gw), -v).Err()
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
func (s *Store) EnsureGroups(ctx context.Context, parts int) error {
	for p := 0; p < parts; p++ {
		err := s.rdb.XGroupCreateMkStream(ctx, s.Keys.Inbound(p), ConsumerGroup, "0").Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return fmt.Errorf("store: create group on partition %d: %w", p, err)
		}
	}
	return nil
}

// ReadInbound takes up to count new entries from each of parts for
// consumer, waiting up to block when there are none. On Redis Cluster the
// partitions must share a slot, so call it with one partition at a time.
func (s *Store) ReadInbound(ctx context.Context, consumer string, parts []int, count int64, block time.Duration) ([]Delivery, error) {
	streams := make([]string, 0, 2*len(parts))
	for _, p := range parts {
		streams = append(streams, s.Keys.Inbound(p))
	}
	for range parts {
		streams = append(streams, ">")
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: ConsumerGroup, Consumer: consumer, Streams: streams, Count: count, Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if redis.HasErrorPrefix(err, "NOGROUP") {
			// The stream was deleted (FLUSHALL, or an operator): recreate.
			for _, p := range parts {
				_ = s.rdb.XGroupCreateMkStream(ctx, s.Keys.Inbound(p), ConsumerGroup, "0").Err()
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
		p := s.partOf(st.Stream)
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
func (s *Store) ReadOwnPending(ctx context.Context, consumer string, parts []int) ([]Delivery, error) {
	var out []Delivery
	for _, p := range parts {
		res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: ConsumerGroup, Consumer: consumer, Streams: []string{s.Keys.Inbound(p), "0"}, Count: 10000,
		}).Result()
		if redis.HasErrorPrefix(err, "NOGROUP") {
			// The stream is gone (Redis lost its data): nothing is pending;
			// recreate the group so reading can go on.
			_ = s.rdb.XGroupCreateMkStream(ctx, s.Keys.Inbound(p), ConsumerGroup, "0").Err()
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
func (s *Store) partOf(key string) int {
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
func (s *Store) ClaimPending(ctx context.Context, p int, consumer string) ([]Delivery, error) {
	key := s.Keys.Inbound(p)
	var out []Delivery
	start := "-"
	for {
		pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: key, Group: ConsumerGroup, Start: start, End: "+", Count: 1000,
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
			msgs, err := s.rdb.XClaim(ctx, &redis.XClaimArgs{
				Stream: key, Group: ConsumerGroup, Consumer: consumer, MinIdle: 0, Messages: ids,
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
						s.rdb.XAck(ctx, key, ConsumerGroup, id)
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
func (s *Store) Ack(ctx context.Context, pipe redis.Pipeliner, p int, ids ...string) {
	pipe.XAck(ctx, s.Keys.Inbound(p), ConsumerGroup, ids...)
}

// Finished queues on pipe that n envelopes of gateway gw's bundles are
// done (they leave its frame count). Queue it before the entries' Ack: a
// pipeline cut short then leaves the count too low (a looser bound), never
// too high.
func (s *Store) Finished(ctx context.Context, pipe redis.Pipeliner, gw string, n int64) {
	pipe.DecrBy(ctx, s.Keys.Queued(gw), n)
}

// Queued returns the envelopes gateway gw queued that workers have not
// finished.
func (s *Store) Queued(ctx context.Context, gw string) (int64, error) {
	n, err := s.rdb.Get(ctx, s.Keys.Queued(gw)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return max(n, 0), err
}

// Trim queues on pipe the deletion of partition p's entries that every
// worker is done with (trim.lua), so the stream's length is its backlog.
func (s *Store) Trim(ctx context.Context, pipe redis.Pipeliner, p int) {
	scriptTrim.EvalSha(ctx, pipe, []string{s.Keys.Inbound(p)}, ConsumerGroup)
}

// MarkHandled queues on pipe the sequence numbers of the last envelopes
// finished for connections of gateway gw (connSeq: conn id, seq, conn id,
// seq...). A worker that takes over an entry skips them.
func (s *Store) MarkHandled(ctx context.Context, pipe redis.Pipeliner, gw string, connSeq ...any) {
	pipe.HSet(ctx, s.Keys.Handled(gw), connSeq...)
}

// ForgetHandled queues on pipe the removal of closed connections' marks.
func (s *Store) ForgetHandled(ctx context.Context, pipe redis.Pipeliner, gw string, conns ...string) {
	pipe.HDel(ctx, s.Keys.Handled(gw), conns...)
}

// HandledQuery asks for the handled marks of connections of one gateway;
// HandledSeqs fills Seqs (0: none).
type HandledQuery struct {
	Gateway string
	Conns   []string
	Seqs    []uint64
}

// HandledSeqs answers every query, in one pipeline.
func (s *Store) HandledSeqs(ctx context.Context, qs []HandledQuery) error {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(qs))
	for i, q := range qs {
		if len(q.Conns) > 0 { // HMGET needs a field
			cmds[i] = pipe.HMGet(ctx, s.Keys.Handled(q.Gateway), q.Conns...)
		}
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("store: handled marks: %w", err)
	}
	for i := range qs {
		q := &qs[i]
		q.Seqs = make([]uint64, len(q.Conns))
		if cmds[i] == nil {
			continue
		}
		for j, v := range cmds[i].Val() {
			if str, ok := v.(string); ok && j < len(q.Seqs) {
				q.Seqs[j], _ = strconv.ParseUint(str, 10, 64)
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
func (s *Store) StartTry(ctx context.Context, p int, id string, index int) (int64, error) {
	key := s.Keys.Tries(p, id)
	pipe := s.rdb.TxPipeline()
	n := pipe.HIncrBy(ctx, key, strconv.Itoa(index), 1)
	pipe.PExpire(ctx, key, triesTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("store: count try of %s: %w", id, err)
	}
	return n.Val(), nil
}

// ClearTries queues on pipe the removal of entry id's start counts.
func (s *Store) ClearTries(ctx context.Context, pipe redis.Pipeliner, p int, id string) {
	pipe.Del(ctx, s.Keys.Tries(p, id))
}

// DeadLetter copies d's envelope to its partition's dead-letter stream.
// The caller still finishes its envelope (its handled mark) and
// acknowledges its entry as usual.
func (s *Store) DeadLetter(ctx context.Context, d Delivery, reason string) error {
	err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Dead(d.Part), Values: []any{
		fieldEnvelope, StandaloneEnvelope(d.Raw, &d.Env), "from", d.ID, "index", d.Index, "deliveries", d.Deliveries, "reason", reason,
	}}).Err()
	if err != nil {
		return fmt.Errorf("store: dead letter %s: %w", d.ID, err)
	}
	return nil
}

// DeadLetters lists the dead letters of partition p (up to count).
func (s *Store) DeadLetters(ctx context.Context, p int, count int64) ([]DeadLetter, error) {
	msgs, err := s.rdb.XRangeN(ctx, s.Keys.Dead(p), "-", "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("store: dead letters of partition %d: %w", p, err)
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		dl := DeadLetter{Part: p, ID: m.ID}
		dl.From, _ = m.Values["from"].(string)
		dl.Reason, _ = m.Values["reason"].(string)
		idx, _ := m.Values["index"].(string)
		dl.Index, _ = strconv.Atoi(idx)
		n, _ := m.Values["deliveries"].(string)
		dl.Deliveries, _ = strconv.ParseInt(n, 10, 64)
		dl.Env, dl.Raw, dl.Unreadable = readDeadEnvelope(m.Values[fieldEnvelope])
		out = append(out, dl)
	}
	return out, nil
}

// readDeadEnvelope decodes the envelope field of a dead letter. why says
// why it cannot be read ("" when it can); env is then empty.
func readDeadEnvelope(v any) (env Envelope, raw []byte, why string) {
	e, ok := v.(string)
	if !ok {
		return Envelope{}, nil, "no envelope"
	}
	raw = []byte(e)
	env, err := DecodeEnvelope(raw)
	switch {
	case err != nil:
		return Envelope{}, raw, strings.TrimPrefix(err.Error(), "store: ")
	case env.Kind < KindFrame || env.Kind > KindJob:
		// A worker that could not read an envelope of a bundle stores an
		// empty one (kind 0) in its place.
		return Envelope{}, raw, fmt.Sprintf("bad envelope: kind %d", env.Kind)
	}
	return env, raw, ""
}

// DeadLetter is an entry that failed too often, kept for an operator.
type DeadLetter struct {
	Part       int
	ID         string // id in the dead-letter stream
	From       string // the id of its entry in the inbound stream
	Index      int    // its position in that entry
	Deliveries int64
	Reason     string
	Env        Envelope
	// Raw is the stored envelope, as is.
	Raw []byte
	// Unreadable says why the envelope cannot be read ("" when it can):
	// an entry a worker could not decode was dead-lettered as "unreadable
	// entry". Env is then empty, and Requeue refuses it.
	Unreadable string
}

// ErrUnreadable is (wrapped by) the error of Requeue for a dead letter
// whose envelope cannot be read (DeadLetter.Unreadable): back on its
// queue, it would only be dead-lettered again.
var ErrUnreadable = errors.New("store: unreadable dead letter")

// requeueError is an error of Requeue that matches its sentinel errors
// (errors.Is) without repeating their text.
type requeueError struct {
	msg string
	is  []error
}

func (e *requeueError) Error() string        { return e.msg }
func (e *requeueError) Is(target error) bool { return slices.Contains(e.is, target) }

// Requeue puts dead letter id of partition p back on the partition's
// inbound stream. It fails with ErrNotFound when there is no such dead
// letter, and with ErrUnreadable when its envelope cannot be read.
func (s *Store) Requeue(ctx context.Context, p int, id string) error {
	name := strconv.Itoa(p) + "/" + id
	msgs, err := s.rdb.XRangeN(ctx, s.Keys.Dead(p), id, id, 1).Result()
	if err != nil {
		return fmt.Errorf("store: requeue %s: %w", name, err)
	}
	if len(msgs) == 0 {
		return &requeueError{"store: requeue " + name + ": no such dead letter", []error{ErrNotFound}}
	}
	switch _, _, why := readDeadEnvelope(msgs[0].Values[fieldEnvelope]); why {
	case "":
	case "no envelope":
		return &requeueError{"store: requeue " + name + ": the dead letter holds no envelope", []error{ErrNotFound, ErrUnreadable}}
	default:
		return &requeueError{"store: requeue " + name + ": unreadable envelope (" + why + "); back on its queue it would only be dead-lettered again",
			[]error{ErrUnreadable}}
	}
	err = scriptDeadRequeue.Run(ctx, s.rdb, []string{s.Keys.Dead(p), s.Keys.Inbound(p)}, id).Err()
	if errors.Is(err, redis.Nil) { // deleted meanwhile
		return &requeueError{"store: requeue " + name + ": no such dead letter", []error{ErrNotFound}}
	}
	if err != nil {
		return fmt.Errorf("store: requeue %s: %w", name, err)
	}
	return nil
}

// AcquireLease takes or renews the lease on partition p for worker id.
func (s *Store) AcquireLease(ctx context.Context, p int, id string, ttl time.Duration) (bool, error) {
	n, err := scriptLeaseAcquire.Run(ctx, s.rdb, []string{s.Keys.Owner(p)}, id, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("store: lease partition %d: %w", p, err)
	}
	return n == 1, nil
}

// ReleaseLease gives up the lease on partition p if id holds it.
func (s *Store) ReleaseLease(ctx context.Context, p int, id string) error {
	if err := scriptLeaseRelease.Run(ctx, s.rdb, []string{s.Keys.Owner(p)}, id).Err(); err != nil {
		return fmt.Errorf("store: release partition %d: %w", p, err)
	}
	return nil
}

// PushOut queues on pipe messages for gateway gw, first one first out.
func (s *Store) PushOut(ctx context.Context, pipe redis.Pipeliner, gw string, msgs ...any) {
	pipe.LPush(ctx, s.Keys.Outbound(gw), msgs...)
}

// TakeOut takes up to n messages for gateway gw. acked is the number of
// the last batch the gateway received (0 at start); until a batch is
// acknowledged that way, the same batch is returned again, so a batch whose
// reply was lost is not. It returns the batch number and the messages.
func (s *Store) TakeOut(ctx context.Context, gw string, acked int64, n int) (int64, []string, error) {
	keys := []string{s.Keys.Outbound(gw), s.Keys.OutboundTransit(gw), s.Keys.OutboundBatch(gw)}
	seed := mrand.Int64N(1 << 50)
	res, err := scriptOutTake.Run(ctx, s.rdb, keys, acked, n, seed).Slice()
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
func (s *Store) WaitOut(ctx context.Context, rdb redis.UniversalClient, gw string, timeout time.Duration) (string, bool, error) {
	v, err := rdb.BLMove(ctx, s.Keys.Outbound(gw), s.Keys.OutboundTransit(gw), "RIGHT", "RIGHT", timeout).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return v, true, nil
}

// NextID returns the smallest stream id greater than id, for trimming
// everything up to and including id.
func NextID(id string) string {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return id
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return id
	}
	if n == ^uint64(0) { // the sequence is full: the next id is the next millisecond's first
		m, err := strconv.ParseUint(ms, 10, 64)
		if err != nil || m == ^uint64(0) {
			return id
		}
		return strconv.FormatUint(m+1, 10) + "-0"
	}
	return ms + "-" + strconv.FormatUint(n+1, 10)
}

// CompareIDs orders two stream ids: -1, 0 or 1.
func CompareIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	x, _ := strconv.ParseUint(am, 10, 64)
	y, _ := strconv.ParseUint(bm, 10, 64)
	if x != y {
		if x < y {
			return -1
		}
		return 1
	}
	x, _ = strconv.ParseUint(as, 10, 64)
	y, _ = strconv.ParseUint(bs, 10, 64)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// ForgetConsumers deletes the consumers of partition p's group that hold
// no pending entry and are not alive (alive reports the live workers'
// instance ids), and returns how many it deleted. Each worker process
// reads under its own name; without this a group would keep every name
// ever used. A dead consumer with entries pending keeps them until the
// partition's next owner claims them; it goes at a later call.
func (s *Store) ForgetConsumers(ctx context.Context, p int, alive func(name string) bool) (int, error) {
	key := s.Keys.Inbound(p)
	cs, err := s.rdb.XInfoConsumers(ctx, key, ConsumerGroup).Result()
	if err != nil {
		return 0, fmt.Errorf("store: consumers of partition %d: %w", p, err)
	}
	n := 0
	for _, c := range cs {
		if c.Pending > 0 || alive(c.Name) {
			continue
		}
		if err := s.rdb.XGroupDelConsumer(ctx, key, ConsumerGroup, c.Name).Err(); err != nil {
			return n, fmt.Errorf("store: forget consumer %s of partition %d: %w", c.Name, p, err)
		}
		n++
	}
	return n, nil
}
