package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Group names and user ids are at most MaxNameLen bytes: the functions
// below refuse longer ones (an error wrapping ErrNameTooLong).

// JoinGroup adds uid to a group. The group's member set and the user's
// group set live in different slots, so this is two idempotent writes in
// one round trip, not one atomic step; repeating it repairs a half done
// join.
func (s *Store) JoinGroup(ctx context.Context, group, uid string) error {
	if err := checkGroupUser(group, uid); err != nil {
		return err
	}
	pipe := s.rdb.Pipeline()
	pipe.SAdd(ctx, s.Keys.Group(group), uid)
	pipe.SAdd(ctx, s.Keys.UserGroups(uid), group)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("store: join group %q: %w", group, err)
	}
	return nil
}

// LeaveGroup removes uid from a group.
func (s *Store) LeaveGroup(ctx context.Context, group, uid string) error {
	if err := checkGroupUser(group, uid); err != nil {
		return err
	}
	pipe := s.rdb.Pipeline()
	pipe.SRem(ctx, s.Keys.Group(group), uid)
	pipe.SRem(ctx, s.Keys.UserGroups(uid), group)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("store: leave group %q: %w", group, err)
	}
	return nil
}

// checkGroupUser bounds the names a group write stores (CheckName).
func checkGroupUser(group, uid string) error {
	if err := CheckName("group name", group); err != nil {
		return err
	}
	return CheckName("user id", uid)
}

// Members returns the user ids in a group.
func (s *Store) Members(ctx context.Context, group string) ([]string, error) {
	if err := CheckName("group name", group); err != nil {
		return nil, err
	}
	m, err := s.rdb.SMembers(ctx, s.Keys.Group(group)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: members of %q: %w", group, err)
	}
	return m, nil
}

// GroupsOf returns the groups uid is in.
func (s *Store) GroupsOf(ctx context.Context, uid string) ([]string, error) {
	if err := CheckName("user id", uid); err != nil {
		return nil, err
	}
	g, err := s.rdb.SMembers(ctx, s.Keys.UserGroups(uid)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: groups of %q: %w", uid, err)
	}
	return g, nil
}

// UserGet returns one field of a user's hash, or ErrNotFound.
func (s *Store) UserGet(ctx context.Context, uid, field string) (string, error) {
	if err := CheckName("user id", uid); err != nil {
		return "", err
	}
	v, err := s.rdb.HGet(ctx, s.Keys.User(uid), field).Result()
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
	m, err := s.rdb.HGetAll(ctx, s.Keys.User(uid)).Result()
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
	if err := s.rdb.HSet(ctx, s.Keys.User(uid), fields).Err(); err != nil {
		return fmt.Errorf("store: set user %q: %w", uid, err)
	}
	return nil
}

// UserIncr adds delta to a numeric field of a user's hash.
func (s *Store) UserIncr(ctx context.Context, uid, field string, delta int64) (int64, error) {
	if err := CheckName("user id", uid); err != nil {
		return 0, err
	}
	n, err := s.rdb.HIncrBy(ctx, s.Keys.User(uid), field, delta).Result()
	if err != nil {
		return 0, fmt.Errorf("store: incr user %q field %q: %w", uid, field, err)
	}
	return n, nil
}

// Eval runs a game's own Lua script (EVALSHA, falling back to EVAL). On
// Redis Cluster all keys must share a hash tag; Keys.User and friends give
// tags per user, group and counter.
func (s *Store) Eval(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return script.Run(ctx, s.rdb, keys, args...)
}
