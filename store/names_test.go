package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store/storetest"
)

// TestLongNamesRefused: a user id, group name or counter name over
// MaxNameLen is refused before anything reaches Redis, so a client cannot
// make the farm store (or copy into every envelope) a name of its choice
// of any length. A name of exactly MaxNameLen is taken.
func TestLongNamesRefused(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	s := New(rdb, storetest.Prefix(t))
	ctx := context.Background()
	long := strings.Repeat("x", MaxNameLen+1)
	ok := strings.Repeat("y", MaxNameLen)

	calls := map[string]func(name string) error{
		"BindUser": func(n string) error {
			_, err := s.BindUser(ctx, n, Session{Gateway: "gw", Conn: "gw-1"}, Kick)
			return err
		},
		"JoinGroup(group)":  func(n string) error { return s.JoinGroup(ctx, n, "u") },
		"JoinGroup(uid)":    func(n string) error { return s.JoinGroup(ctx, "g", n) },
		"LeaveGroup(group)": func(n string) error { return s.LeaveGroup(ctx, n, "u") },
		"LeaveGroup(uid)":   func(n string) error { return s.LeaveGroup(ctx, "g", n) },
		"Members":           func(n string) error { _, err := s.Members(ctx, n); return err },
		"GroupsOf":          func(n string) error { _, err := s.GroupsOf(ctx, n); return err },
		"IsMember(group)":   func(n string) error { _, err := s.IsMember(ctx, n, "u"); return err },
		"IsMember(uid)":     func(n string) error { _, err := s.IsMember(ctx, "g", n); return err },
		"Key(kind)":         func(n string) error { _, err := s.Key(n, "i", "p"); return err },
		"Key(id)":           func(n string) error { _, err := s.Key("k", n, "p"); return err },
		"IncrCounter":       func(n string) error { _, err := s.IncrCounter(ctx, n, 1); return err },
		"Counter":           func(n string) error { _, err := s.Counter(ctx, n); return err },
		"UserSet":           func(n string) error { return s.UserSet(ctx, n, map[string]any{"f": 1}) },
		"UserIncr":          func(n string) error { _, err := s.UserIncr(ctx, n, "f", 1); return err },
		"UserGetAll":        func(n string) error { _, err := s.UserGetAll(ctx, n); return err },
		"UserGet": func(n string) error {
			_, err := s.UserGet(ctx, n, "f")
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		},
	}
	for name, call := range calls {
		err := call(long)
		if !errors.Is(err, ErrNameTooLong) {
			t.Errorf("%s with a name of %d bytes: err %v, want ErrNameTooLong", name, len(long), err)
		} else if !strings.Contains(err.Error(), "129 bytes") {
			t.Errorf("%s: error %q does not say how long the name was", name, err)
		}
	}
	// A brace would end the key's hash tag early and move the key to
	// another name's slot: "x}{evil" would land in user x's.
	for _, bad := range []string{"x}{evil", "{a}", "a}"} {
		for name, call := range calls {
			if err := call(bad); !errors.Is(err, ErrNameBraces) || !strings.Contains(err.Error(), bad) {
				t.Errorf("%s(%q): err %v, want ErrNameBraces naming it", name, bad, err)
			}
		}
	}
	if keys := m.Keys(); len(keys) != 0 {
		t.Errorf("refused calls wrote keys %q", keys)
	}
	for name, call := range calls {
		if err := call(ok); err != nil {
			t.Errorf("%s with a name of %d bytes: %v", name, len(ok), err)
		}
	}
}
