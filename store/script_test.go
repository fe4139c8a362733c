package store

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestKey(t *testing.T) {
	s := New(nil, "t1")
	tests := []struct {
		kind, id, part string
		want           string
		err            error // nil: no error
	}{
		{"match", "m1", "board", "t1:{match:m1}:board", nil},
		{"u", "ann", "data", "t1:{u:ann}:data", nil},
		{"deck", "", "cards", "t1:{deck:}:cards", nil},
		{"a:b", "c d", "x:{y}", "t1:{a:b:c d}:x:{y}", nil},
		{"match", "x}{evil", "board", "", ErrNameBraces},
		{"ma{tch", "m1", "board", "", ErrNameBraces},
		{"match", strings.Repeat("i", MaxNameLen+1), "board", "", ErrNameTooLong},
		{"", "m1", "board", "", errors.New("")},
		{"gw", "g1", "out", "", errors.New("")},
	}
	for _, tt := range tests {
		got, err := s.Key(tt.kind, tt.id, tt.part)
		switch {
		case tt.err == nil && (err != nil || got != tt.want):
			t.Errorf("Key(%q, %q, %q) = %q, %v; want %q", tt.kind, tt.id, tt.part, got, err, tt.want)
		case tt.err != nil && err == nil:
			t.Errorf("Key(%q, %q, %q) = %q, want an error", tt.kind, tt.id, tt.part, got)
		case tt.err != nil && tt.err.Error() != "" && !errors.Is(err, tt.err):
			t.Errorf("Key(%q, %q, %q) error %v, want %v", tt.kind, tt.id, tt.part, err, tt.err)
		}
	}
	// The farm's own names are Keys of kinds u, g and c.
	k := s.keys
	for _, c := range []struct{ kind, id, part, farm string }{
		{"u", "ann", "data", k.User("ann")},
		{"u", "ann", "session", k.Session("ann")},
		{"g", "lobby", "members", k.Group("lobby")},
		{"c", "n", "counter", k.Counter("n")},
	} {
		if got, _ := s.Key(c.kind, c.id, c.part); got != c.farm {
			t.Errorf("Key(%q, %q, %q) = %q, the farm's key is %q", c.kind, c.id, c.part, got, c.farm)
		}
	}
}

// TestRun runs a game's script on real Redis and miniredis, and refuses
// keys of two slots or of no farm on both, before anything is sent.
func TestRun(t *testing.T) {
	incr := NewScript(`
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if KEYS[2] then redis.call('SET', KEYS[2], n) end
return n`)
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		a, _ := s.Key("score", "ann", "total")
		a2, _ := s.Key("score", "ann", "last")
		b, _ := s.Key("score", "bob", "total")
		for i, want := range []int64{5, 10} {
			if n, err := s.Run(ctx, incr, []string{a, a2}, 5).Int64(); err != nil || n != want {
				t.Errorf("run %d = %d, %v; want %d", i, n, err, want)
			}
		}
		if v, _ := s.rdb.Get(ctx, a2).Result(); v != "10" {
			t.Errorf("%s = %q, want 10", a2, v)
		}
		// No keys at all is fine.
		if v, err := s.Run(ctx, NewScript(`return ARGV[1]`), nil, "hi").Text(); err != nil || v != "hi" {
			t.Errorf("a script without keys = %q, %v", v, err)
		}
		// A Lua false is redis.Nil.
		if err := s.Run(ctx, NewScript(`return false`), []string{a}).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("false = %v, want redis.Nil", err)
		}
		user, _ := s.Key("u", "ann", "data")
		refused := []struct {
			name string
			keys []string
		}{
			{"two ids", []string{a, b}},
			{"two kinds", []string{a, user}},
			{"no prefix", []string{a, "score:{score:ann}:x"}},
			{"another farm's", []string{strings.Replace(a, s.keys.Prefix, s.keys.Prefix+"x", 1)}},
			{"no tag", []string{s.keys.Prefix + ":score"}},
			{"a partition's", []string{s.keys.Inbound(3)}},
			{"a gateway's", []string{s.keys.Outbound("g1")}},
			{"a tag cut short", []string{s.keys.Prefix + ":{a:b}c}:x"}},
		}
		for _, tt := range refused {
			err := s.Run(ctx, incr, tt.keys, 1).Err()
			if !errors.Is(err, ErrScriptKeys) {
				t.Errorf("%s: %q: %v, want ErrScriptKeys", tt.name, tt.keys, err)
			}
		}
		if n, _ := s.rdb.Get(ctx, b).Int64(); n != 0 {
			t.Errorf("a refused call wrote %s = %d", b, n)
		}
	})
}
