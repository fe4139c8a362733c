package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
)

// ScheduleAfter queues a frame (cmd, body) for the workers after d. It
// returns the timer's id, for CancelTimer. The timer lives in Redis: it
// fires once, on some live worker, whatever happens to the worker that
// scheduled it.
func (s *Store) ScheduleAfter(ctx context.Context, parts int, d time.Duration, cmd int32, body []byte) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	rnd := hex.EncodeToString(b[:])
	p := PartitionOf(rnd, parts)
	id := strconv.Itoa(p) + "." + rnd
	env := Envelope{Kind: KindSystem, Frame: box.Append(nil, cmd, 0, 0, body)}
	due := time.Now().Add(d).UnixMilli()
	err := scriptTimerAdd.Run(ctx, s.rdb, []string{s.Keys.Timers(p), s.Keys.TimerData(p)},
		id, due, AppendEnvelope(nil, &env)).Err()
	if err != nil {
		return "", fmt.Errorf("store: schedule timer: %w", err)
	}
	return id, nil
}

// CancelTimer drops a timer that has not fired. It reports whether the
// timer was still pending.
func (s *Store) CancelTimer(ctx context.Context, id string) (bool, error) {
	ps, _, ok := strings.Cut(id, ".")
	p, err := strconv.Atoi(ps)
	if !ok || err != nil {
		return false, fmt.Errorf("store: bad timer id %q", id)
	}
	n, err := scriptTimerCancel.Run(ctx, s.rdb, []string{s.Keys.Timers(p), s.Keys.TimerData(p)}, id).Int()
	if err != nil {
		return false, fmt.Errorf("store: cancel timer %s: %w", id, err)
	}
	return n == 1, nil
}

// MoveDueTimers puts up to max timers of partition p that fell due into the
// partition's stream. It returns how many moved.
func (s *Store) MoveDueTimers(ctx context.Context, p int, now time.Time, max int) (int, error) {
	n, err := s.MoveDueTimersOf(ctx, []int{p}, now, max)
	if err != nil {
		return 0, err
	}
	return n[0], nil
}

// MoveDueTimersOf is MoveDueTimers for each of parts, in one pipeline; it
// returns how many moved per partition, in the order of parts.
func (s *Store) MoveDueTimersOf(ctx context.Context, parts []int, now time.Time, max int) ([]int, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(parts))
		for i, p := range parts {
			cmds[i] = scriptTimerDue.EvalSha(ctx, pipe, []string{s.Keys.Timers(p), s.Keys.TimerData(p), s.Keys.Inbound(p)},
				now.UnixMilli(), max)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && IsNoScript(err) && attempt == 0 {
			// Redis restarted with an empty script cache.
			if err := LoadScripts(ctx, s.rdb); err != nil {
				return nil, fmt.Errorf("store: due timers: %w", err)
			}
			continue
		}
		n := make([]int, len(parts))
		for i, c := range cmds {
			v, err := c.Int()
			if err != nil {
				return nil, fmt.Errorf("store: due timers of partition %d: %w", parts[i], err)
			}
			n[i] = v
		}
		return n, nil
	}
}

// ClaimPeriod lets exactly one caller start period n of a periodic job:
// that caller's job envelope enters the stream in the same step. It reports
// whether this caller won.
func (s *Store) ClaimPeriod(ctx context.Context, parts int, job string, n int64, period time.Duration) (bool, error) {
	p := PartitionOf(job, parts)
	env := Envelope{Kind: KindJob, Frame: box.Append(nil, 0, 0, 0, []byte(job))}
	ttl := max(2*period, time.Minute).Milliseconds()
	won, err := scriptCronClaim.Run(ctx, s.rdb, []string{s.Keys.Cron(p, job), s.Keys.Inbound(p)},
		n, AppendEnvelope(nil, &env), ttl).Int()
	if err != nil {
		return false, fmt.Errorf("store: claim period of %q: %w", job, err)
	}
	return won == 1, nil
}

// QueueSystem queues a frame for the workers at once, as if from a system
// client (write_to_worker).
func (s *Store) QueueSystem(ctx context.Context, parts int, cmd int32, body []byte) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := PartitionOf(hex.EncodeToString(b[:]), parts)
	env := Envelope{Kind: KindSystem, Frame: box.Append(nil, cmd, 0, 0, body)}
	if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Inbound(p), Values: []any{"e", AppendEnvelope(nil, &env)}}).Err(); err != nil {
		return fmt.Errorf("store: queue system frame: %w", err)
	}
	return nil
}
