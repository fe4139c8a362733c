package store

import (
	"context"
	"fmt"
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
	pipe.SAdd(ctx, s.keys.Group(group), uid)
	pipe.SAdd(ctx, s.keys.UserGroups(uid), group)
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
	pipe.SRem(ctx, s.keys.Group(group), uid)
	pipe.SRem(ctx, s.keys.UserGroups(uid), group)
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
	m, err := s.rdb.SMembers(ctx, s.keys.Group(group)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: members of %q: %w", group, err)
	}
	return m, nil
}

// IsMember reports whether uid is in a group.
func (s *Store) IsMember(ctx context.Context, group, uid string) (bool, error) {
	if err := checkGroupUser(group, uid); err != nil {
		return false, err
	}
	in, err := s.rdb.SIsMember(ctx, s.keys.Group(group), uid).Result()
	if err != nil {
		return false, fmt.Errorf("store: members of %q: %w", group, err)
	}
	return in, nil
}

// GroupsOf returns the groups uid is in.
func (s *Store) GroupsOf(ctx context.Context, uid string) ([]string, error) {
	if err := CheckName("user id", uid); err != nil {
		return nil, err
	}
	g, err := s.rdb.SMembers(ctx, s.keys.UserGroups(uid)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: groups of %q: %w", uid, err)
	}
	return g, nil
}
