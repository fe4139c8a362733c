package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/redis/go-redis/v9"
)

// scriptTimerAdd (lua/timer_add.lua) schedules an envelope.
var scriptTimerAdd = loadScript("timer_add")

// ScheduleAfter queues a frame (cmd, body) for the workers after d. It
// returns the timer's id, for CancelTimer. The timer lives in Redis: it
// fires once, on some live worker, whatever happens to the worker that
// scheduled it.
func (q *Broker) ScheduleAfter(ctx context.Context, parts int, d time.Duration, cmd int32, body []byte) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	rnd := hex.EncodeToString(b[:])
	p := PartitionOf(rnd, parts)
	id := strconv.Itoa(p) + "." + rnd
	env := Envelope{Kind: KindSystem, Frame: box.Append(nil, cmd, 0, 0, body)}
	due := time.Now().Add(d).UnixMilli()
	err := scriptTimerAdd.Run(ctx, q.rdb, []string{q.Keys.Timers(p), q.Keys.TimerData(p)},
		id, due, AppendEnvelope(nil, &env)).Err()
	if err != nil {
		return "", fmt.Errorf("store: schedule timer: %w", err)
	}
	return id, nil
}

// scriptTimerCancel (lua/timer_cancel.lua) drops a pending timer.
var scriptTimerCancel = loadScript("timer_cancel")

// CancelTimer drops a timer that has not fired. It reports whether the
// timer was still pending.
func (q *Broker) CancelTimer(ctx context.Context, id string) (bool, error) {
	ps, _, ok := strings.Cut(id, ".")
	p, err := strconv.Atoi(ps)
	if !ok || err != nil {
		return false, fmt.Errorf("store: bad timer id %q", id)
	}
	n, err := scriptTimerCancel.Run(ctx, q.rdb, []string{q.Keys.Timers(p), q.Keys.TimerData(p)}, id).Int()
	if err != nil {
		return false, fmt.Errorf("store: cancel timer %s: %w", id, err)
	}
	return n == 1, nil
}

// MoveDueTimers puts up to max timers of partition p that fell due into the
// partition's stream. It returns how many moved.
func (q *Broker) MoveDueTimers(ctx context.Context, p int, now time.Time, max int) (int, error) {
	n, err := q.MoveDueTimersOf(ctx, []int{p}, now, max)
	if err != nil {
		return 0, err
	}
	return n[0], nil
}

// scriptTimerDue (lua/timer_due.lua) moves due timers into the stream.
var scriptTimerDue = loadScript("timer_due")

// MoveDueTimersOf is MoveDueTimers for each of parts, in one pipeline; it
// returns how many moved per partition, in the order of parts.
func (q *Broker) MoveDueTimersOf(ctx context.Context, parts []int, now time.Time, max int) ([]int, error) {
	// Most polls find nothing due: a plain ZRANGEBYSCORE per partition
	// tells, at a fraction of a script's cost to Redis (the timer poll is
	// most of an idle farm's Redis load), and the script runs only where
	// a timer is due.
	due, err := q.dueTimers(ctx, parts, now)
	if err != nil {
		return make([]int, len(parts)), err
	}
	return q.moveTimers(ctx, parts, due, now, max)
}

// MoveTimersOf is MoveDueTimersOf for partitions known to have timers due
// (TimerProbe): it runs the script on each of parts without asking first.
func (q *Broker) MoveTimersOf(ctx context.Context, parts []int, now time.Time, max int) ([]int, error) {
	all := make([]int, len(parts))
	for i := range all {
		all[i] = i
	}
	return q.moveTimers(ctx, parts, all, now, max)
}

// moveTimers runs timer_due.lua on parts[i] for each i of due, in one
// pipeline; it returns how many moved per partition of parts.
func (q *Broker) moveTimers(ctx context.Context, parts, due []int, now time.Time, max int) ([]int, error) {
	n := make([]int, len(parts))
	if len(due) == 0 {
		return n, nil
	}
	cmds := make([]*redis.Cmd, len(parts))
	_ = execScripts(ctx, q.rdb, func(pipe redis.Pipeliner) {
		for _, i := range due {
			p := parts[i]
			cmds[i] = scriptTimerDue.EvalSha(ctx, pipe, []string{q.Keys.Timers(p), q.Keys.TimerData(p), q.Keys.Inbound(p)},
				now.UnixMilli(), max)
		}
	})
	for i, c := range cmds {
		if c == nil {
			continue
		}
		v, err := c.Int()
		if err != nil {
			return nil, fmt.Errorf("store: due timers of partition %d: %w", parts[i], err)
		}
		n[i] = v
	}
	return n, nil
}

// TimerProbe asks which of Parts have a timer due at Now in the round trip
// of another call (LiveRound), so that an idle worker's timer poll costs
// Redis no round trip of its own: at idle, a round trip costs Redis far
// more than the commands in it.
type TimerProbe struct {
	Parts []int
	Now   time.Time
	cmds  []*redis.StringSliceCmd
}

// add queues the probe's commands on pipe.
func (tp *TimerProbe) add(ctx context.Context, q *Broker, pipe redis.Pipeliner) {
	tp.cmds = make([]*redis.StringSliceCmd, len(tp.Parts))
	max := strconv.FormatInt(tp.Now.UnixMilli(), 10)
	for i, p := range tp.Parts {
		tp.cmds[i] = pipe.ZRangeByScore(ctx, q.Keys.Timers(p), &redis.ZRangeBy{Min: "-inf", Max: max, Count: 1})
	}
}

// Due returns the partitions of Parts with a timer due, for MoveTimersOf,
// once the call that carried the probe returned.
func (tp *TimerProbe) Due() ([]int, error) {
	idx, err := tp.dueIndexes()
	for i, j := range idx {
		idx[i] = tp.Parts[j]
	}
	return idx, err
}

// dueIndexes returns the indexes in Parts of the partitions with a timer
// due.
func (tp *TimerProbe) dueIndexes() ([]int, error) {
	var due []int
	for i, c := range tp.cmds {
		if err := c.Err(); err != nil {
			return nil, fmt.Errorf("store: due timers: %w", err)
		}
		if len(c.Val()) > 0 {
			due = append(due, i)
		}
	}
	return due, nil
}

// dueTimers returns the indexes of parts with a timer due at now: a
// probe in a round trip of its own.
func (q *Broker) dueTimers(ctx context.Context, parts []int, now time.Time) ([]int, error) {
	tp := &TimerProbe{Parts: parts, Now: now}
	pipe := q.rdb.Pipeline()
	tp.add(ctx, q, pipe)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("store: due timers: %w", err)
	}
	return tp.dueIndexes()
}
