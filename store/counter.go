package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// IncrCounter atomically adds delta to a named counter and returns the new
// value. A name over MaxNameLen or with a brace is refused (CheckName).
func (s *Store) IncrCounter(ctx context.Context, name string, delta int64) (int64, error) {
	if err := CheckName("counter name", name); err != nil {
		return 0, err
	}
	n, err := s.rdb.IncrBy(ctx, s.keys.Counter(name), delta).Result()
	if err != nil {
		return 0, fmt.Errorf("store: counter %q: %w", name, err)
	}
	return n, nil
}

// Counter returns a counter's value (0 if it was never incremented).
func (s *Store) Counter(ctx context.Context, name string) (int64, error) {
	if err := CheckName("counter name", name); err != nil {
		return 0, err
	}
	n, err := s.rdb.Get(ctx, s.keys.Counter(name)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}
