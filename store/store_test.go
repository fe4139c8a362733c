package store

import (
	"context"
	"errors"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store/storetest"
)

// backend is one Redis the store tests run against.
type backend struct {
	name string
	rdb  redis.UniversalClient
}

// backends starts a real redis-server and a miniredis (TTLs on the wall
// clock) for t, with one client each; both stop when t ends.
func backends(t *testing.T) []backend {
	t.Helper()
	srv := storetest.Start(t, storetest.Options{})
	m := storetest.Mini(t)
	bs := []backend{
		{"redis", redis.NewClient(&redis.Options{Addr: srv.Addr})},
		{"miniredis", redis.NewClient(&redis.Options{Addr: m.Addr()})},
	}
	for _, b := range bs {
		t.Cleanup(func() { _ = b.rdb.Close() })
	}
	return bs
}

// eachBackend runs f as a subtest on every backend, with a Store under a
// key prefix of its own.
func eachBackend(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Helper()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			f(t, New(b.rdb, storetest.Prefix(t)))
		})
	}
}

// testCtx is the test's context, bounded so that a hung server fails the
// test instead of the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestIncrCounter(t *testing.T) {
	tests := []struct {
		name  string
		delta int64
		want  int64
	}{
		{"a", 1, 1},
		{"a", 5, 6},
		{"a", -10, -4},
		{"a", 0, -4},
		{"b", 0, 0},
		{"b", 1 << 40, 1 << 40},
		{"with space and: colon", 3, 3},
	}
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		if n, err := s.Counter(ctx, "never"); err != nil || n != 0 {
			t.Errorf("Counter(never) = %d, %v; want 0, nil", n, err)
		}
		for _, tt := range tests {
			got, err := s.IncrCounter(ctx, tt.name, tt.delta)
			if err != nil || got != tt.want {
				t.Errorf("IncrCounter(%q, %d) = %d, %v; want %d", tt.name, tt.delta, got, err, tt.want)
			}
			if n, err := s.Counter(ctx, tt.name); err != nil || n != tt.want {
				t.Errorf("Counter(%q) = %d, %v; want %d", tt.name, n, err, tt.want)
			}
		}
		// A brace would move the counter into another name's slot
		// (TestLongNamesRefused has the rest).
		if _, err := s.IncrCounter(ctx, "with {brace}", 1); !errors.Is(err, ErrNameBraces) {
			t.Errorf("IncrCounter with a brace: %v, want ErrNameBraces", err)
		}
	})
}

// gatewayUsers returns the sorted members of a gateway's user set.
func gatewayUsers(t *testing.T, ctx context.Context, s *Store, gw string) []string {
	t.Helper()
	m, err := s.rdb.SMembers(ctx, s.keys.GatewayUsers(gw)).Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func TestBindUser(t *testing.T) {
	a1 := Session{Gateway: "gwA", Conn: "c1"}
	b2 := Session{Gateway: "gwB", Conn: "c2"}
	b3 := Session{Gateway: "gwB", Conn: "c3"}
	tests := []struct {
		name    string
		to      Session
		mode    LoginMode
		wantOld Session
		wantErr error
		wantNow Session             // the session afterwards
		wantGW  map[string][]string // gateway user sets afterwards
	}{
		{"first login", a1, Kick, Session{}, nil, a1, map[string][]string{"gwA": {"u1"}, "gwB": nil}},
		{"same conn again", a1, Kick, Session{}, nil, a1, map[string][]string{"gwA": {"u1"}}},
		{"same conn, refuse mode", a1, Refuse, Session{}, nil, a1, map[string][]string{"gwA": {"u1"}}},
		{"refused elsewhere", b2, Refuse, a1, ErrLoggedInElsewhere, a1, map[string][]string{"gwA": {"u1"}, "gwB": nil}},
		{"kick to other gateway", b2, Kick, a1, nil, b2, map[string][]string{"gwA": nil, "gwB": {"u1"}}},
		{"default mode kicks, same gateway", b3, "", b2, nil, b3, map[string][]string{"gwA": nil, "gwB": {"u1"}}},
	}
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		if _, err := s.SessionOf(ctx, "u1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("SessionOf before login = %v, want ErrNotFound", err)
		}
		for _, tt := range tests {
			old, err := s.BindUser(ctx, "u1", tt.to, tt.mode)
			if !errors.Is(err, tt.wantErr) || (err != nil && tt.wantErr == nil) {
				t.Errorf("%s: BindUser(%+v, %q) error = %v, want %v", tt.name, tt.to, tt.mode, err, tt.wantErr)
			}
			if old != tt.wantOld {
				t.Errorf("%s: BindUser(%+v, %q) old = %+v, want %+v", tt.name, tt.to, tt.mode, old, tt.wantOld)
			}
			now, err := s.SessionOf(ctx, "u1")
			if err != nil || now != tt.wantNow {
				t.Errorf("%s: SessionOf = %+v, %v; want %+v", tt.name, now, err, tt.wantNow)
			}
			for gw, want := range tt.wantGW {
				if got := gatewayUsers(t, ctx, s, gw); !slices.Equal(got, want) {
					t.Errorf("%s: users of %s = %v, want %v", tt.name, gw, got, want)
				}
			}
		}
		// Another user is independent.
		if old, err := s.BindUser(ctx, "u2", a1, Refuse); err != nil || old != (Session{}) {
			t.Errorf("BindUser(u2) = %+v, %v; want zero, nil", old, err)
		}
		got, err := s.Sessions(ctx, []string{"u1", "u2", "nobody"})
		want := map[string]Session{"u1": b3, "u2": a1}
		if err != nil || len(got) != len(want) || got["u1"] != want["u1"] || got["u2"] != want["u2"] {
			t.Errorf("Sessions = %v, %v; want %v", got, err, want)
		}
	})
}

func TestUnbindUser(t *testing.T) {
	a1 := Session{Gateway: "gwA", Conn: "c1"}
	b2 := Session{Gateway: "gwB", Conn: "c2"}
	tests := []struct {
		name    string
		at      Session
		want    bool
		wantNow Session // zero: logged out
	}{
		{"old connection leaves newer login alone", a1, false, b2},
		{"unknown connection", Session{Gateway: "gwB", Conn: "c9"}, false, b2},
		{"current connection", b2, true, Session{}},
		{"twice", b2, false, Session{}},
	}
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		if _, err := s.BindUser(ctx, "u1", a1, Kick); err != nil {
			t.Fatal(err)
		}
		if _, err := s.BindUser(ctx, "u1", b2, Kick); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			got, err := s.UnbindUser(ctx, "u1", tt.at)
			if err != nil || got != tt.want {
				t.Errorf("%s: UnbindUser(%+v) = %v, %v; want %v", tt.name, tt.at, got, err, tt.want)
			}
			now, err := s.SessionOf(ctx, "u1")
			if tt.wantNow == (Session{}) {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("%s: SessionOf = %+v, %v; want ErrNotFound", tt.name, now, err)
				}
			} else if err != nil || now != tt.wantNow {
				t.Errorf("%s: SessionOf = %+v, %v; want %+v", tt.name, now, err, tt.wantNow)
			}
		}
		if got := gatewayUsers(t, ctx, s, "gwB"); len(got) != 0 {
			t.Errorf("users of gwB after unbind = %v, want none", got)
		}
	})
}

// TestDefaultPrefix: store's default prefix is the farm's.
func TestDefaultPrefix(t *testing.T) {
	if DefaultPrefix != keys.DefaultPrefix {
		t.Errorf("DefaultPrefix %q, the farm's is %q", DefaultPrefix, keys.DefaultPrefix)
	}
	if got := New(nil, "").keys.Prefix; got != DefaultPrefix {
		t.Errorf("New(nil, \"\") has prefix %q, want %q", got, DefaultPrefix)
	}
}

func TestGroups(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		for _, j := range [][2]string{{"lobby", "ann"}, {"lobby", "bob"}, {"table", "ann"}, {"lobby", "ann"}} {
			if err := s.JoinGroup(ctx, j[0], j[1]); err != nil {
				t.Fatal(err)
			}
		}
		sorted := func(v []string, err error) []string {
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(v)
			return v
		}
		if got := sorted(s.Members(ctx, "lobby")); !slices.Equal(got, []string{"ann", "bob"}) {
			t.Errorf("Members(lobby) = %v", got)
		}
		if got := sorted(s.GroupsOf(ctx, "ann")); !slices.Equal(got, []string{"lobby", "table"}) {
			t.Errorf("GroupsOf(ann) = %v", got)
		}
		if err := s.LeaveGroup(ctx, "lobby", "ann"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			group, uid string
			want       bool
		}{{"lobby", "ann", false}, {"lobby", "bob", true}, {"table", "ann", true}, {"none", "ann", false}} {
			if in, err := s.IsMember(ctx, c.group, c.uid); err != nil || in != c.want {
				t.Errorf("IsMember(%s, %s) = %v, %v; want %v", c.group, c.uid, in, err, c.want)
			}
		}
		if got := sorted(s.GroupsOf(ctx, "ann")); !slices.Equal(got, []string{"table"}) {
			t.Errorf("GroupsOf(ann) after leaving = %v", got)
		}
	})
}

// TestTimers: a game's tool schedules and cancels timers through its
// Store, which learns the farm's partition count from Redis once.
func TestTimers(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		s.rdb.Set(ctx, s.keys.PartitionCount(), 4, 0)
		ids := map[string]bool{}
		for range 20 {
			id, err := s.ScheduleAfter(ctx, time.Hour, 7, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			ids[id] = true
		}
		if s.parts.Load() != 4 {
			t.Errorf("partitions %d, want the farm's 4", s.parts.Load())
		}
		n := 0
		for p := range 4 {
			c, _ := s.rdb.ZCard(ctx, s.keys.Timers(p)).Result()
			n += int(c)
		}
		if n != 20 {
			t.Errorf("%d timers in the farm's 4 partitions, want 20", n)
		}
		for id := range ids {
			if ok, err := s.CancelTimer(ctx, id); err != nil || !ok {
				t.Errorf("CancelTimer(%s) = %v, %v; want true", id, ok, err)
			}
			if ok, err := s.CancelTimer(ctx, id); err != nil || ok {
				t.Errorf("second CancelTimer(%s) = %v, %v; want false", id, ok, err)
			}
		}
	})
}
