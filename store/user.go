package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// UserGet returns one field of a user's hash, or ErrNotFound.
func (s *Store) UserGet(ctx context.Context, uid, field string) (string, error) {
	if err := CheckName("user id", uid); err != nil {
		return "", err
	}
	v, err := s.rdb.HGet(ctx, s.keys.User(uid), field).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("store: user %q field %q: %w", uid, field, err)
	}
	return v, nil
}

// UserGetAll returns a user's whole hash.
func (s *Store) UserGetAll(ctx context.Context, uid string) (map[string]string, error) {
	if err := CheckName("user id", uid); err != nil {
		return nil, err
	}
	m, err := s.rdb.HGetAll(ctx, s.keys.User(uid)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: user %q: %w", uid, err)
	}
	return m, nil
}

// UserSet sets fields of a user's hash.
func (s *Store) UserSet(ctx context.Context, uid string, fields map[string]any) error {
	if err := CheckName("user id", uid); err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.keys.User(uid), fields).Err(); err != nil {
		return fmt.Errorf("store: set user %q: %w", uid, err)
	}
	return nil
}

// UserIncr adds delta to a numeric field of a user's hash.
func (s *Store) UserIncr(ctx context.Context, uid, field string, delta int64) (int64, error) {
	if err := CheckName("user id", uid); err != nil {
		return 0, err
	}
	n, err := s.rdb.HIncrBy(ctx, s.keys.User(uid), field, delta).Result()
	if err != nil {
		return 0, fmt.Errorf("store: incr user %q field %q: %w", uid, field, err)
	}
	return n, nil
}
