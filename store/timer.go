package store

import (
	"context"
	"time"
)

// ScheduleAfter queues a frame (cmd, body) for the game's workers after d:
// its route runs then as a System request (worker.Request.Kind). It
// returns the timer's id, for CancelTimer. The timer lives in Redis: it
// fires once, on some live worker, whatever happens to the process that
// scheduled it. A handler calls worker.Request.ScheduleAfter, the same.
func (s *Store) ScheduleAfter(ctx context.Context, d time.Duration, cmd int32, body []byte) (string, error) {
	parts := int(s.parts.Load())
	if parts == 0 {
		n, err := s.q.Partitions(ctx, 0)
		if err != nil {
			return "", err
		}
		parts = n
		s.parts.Store(int64(n))
	}
	return s.q.ScheduleAfter(ctx, parts, d, cmd, body)
}

// CancelTimer drops a timer that has not fired. It reports whether the
// timer was still pending.
func (s *Store) CancelTimer(ctx context.Context, id string) (bool, error) {
	return s.q.CancelTimer(ctx, id)
}
