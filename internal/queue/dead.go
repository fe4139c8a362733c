package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DeadLetter copies d's envelope to its partition's dead-letter stream.
// The caller still finishes its envelope (its handled mark) and
// acknowledges its entry as usual.
func (q *Broker) DeadLetter(ctx context.Context, d Delivery, reason string) error {
	err := q.rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Keys.Dead(d.Part), Values: []any{
		fieldEnvelope, StandaloneEnvelope(d.Raw, &d.Env), "from", d.ID, "index", d.Index, "deliveries", d.Deliveries, "reason", reason,
	}}).Err()
	if err != nil {
		return fmt.Errorf("store: dead letter %s: %w", d.ID, err)
	}
	return nil
}

// DeadLetters lists the dead letters of partition p (up to count).
func (q *Broker) DeadLetters(ctx context.Context, p int, count int64) ([]DeadLetter, error) {
	msgs, err := q.rdb.XRangeN(ctx, q.Keys.Dead(p), "-", "+", count).Result()
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

func (e *requeueError) Error() string { return e.msg }

func (e *requeueError) Is(target error) bool { return slices.Contains(e.is, target) }

// scriptDeadRequeue (lua/dead_requeue.lua) puts a dead letter back on its partition's stream, marked requeued.
var scriptDeadRequeue = loadScript("dead_requeue")

// Requeue puts dead letter id of partition p back on the partition's
// inbound stream. It fails with ErrNotFound when there is no such dead
// letter, and with ErrUnreadable when its envelope cannot be read.
func (q *Broker) Requeue(ctx context.Context, p int, id string) error {
	name := strconv.Itoa(p) + "/" + id
	msgs, err := q.rdb.XRangeN(ctx, q.Keys.Dead(p), id, id, 1).Result()
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
	err = scriptDeadRequeue.Run(ctx, q.rdb, []string{q.Keys.Dead(p), q.Keys.Inbound(p)}, id).Err()
	if errors.Is(err, redis.Nil) { // deleted meanwhile
		return &requeueError{"store: requeue " + name + ": no such dead letter", []error{ErrNotFound}}
	}
	if err != nil {
		return fmt.Errorf("store: requeue %s: %w", name, err)
	}
	return nil
}
