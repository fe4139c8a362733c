package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// A game's own state lives in keys the farm names (Key) and changes
// through the game's own Lua scripts (NewScript, Run), so that whatever
// runs on one Redis also runs on a Redis Cluster: a script's keys must
// all hash to one slot there, and Key gives every key of one kind and id
// the same hash tag.

// ErrScriptKeys is (wrapped by) the error of Run when its keys are not
// all keys of this farm with one hash tag (from Key, with the same kind
// and id): on a Redis Cluster such a call fails, or touches another
// farm's data.
var ErrScriptKeys = errors.New("store: script keys not of one kind and id")

// Key returns the name of a game's key: <prefix>:{<kind>:<id>}:<part>.
// Keys of the same kind and id share a hash tag, so one script may use
// them together on a Redis Cluster; part tells them apart. For example a
// match of a card game could keep Key("match", id, "state") and
// Key("match", id, "hands").
//
// kind and id follow the rules of names (CheckName: at most MaxNameLen
// bytes, no brace); kind is not empty. Kinds u, g and c are the farm's
// user, group and counter tags: Key("u", uid, part) shares the slot of the
// user's hash (UserGet reads Key("u", uid, "data")), session and groups,
// so that a script may change them together; the parts session, groups,
// data (u), members (g) and counter (c) hold the farm's own data. Kind gw
// belongs to the gateways' queues and is refused.
func (s *Store) Key(kind, id, part string) (string, error) {
	if kind == "" {
		return "", errors.New("store: key with an empty kind")
	}
	if kind == "gw" {
		return "", errors.New("store: key kind gw is the gateways'")
	}
	if err := CheckName("key kind", kind); err != nil {
		return "", err
	}
	if err := CheckName("key id", id); err != nil {
		return "", err
	}
	return s.keys.Tagged(kind, id, part), nil
}

// Script is a game's Lua script, for Run.
type Script struct {
	s *redis.Script
}

// NewScript returns the script of Lua source src. Redis caches it by its
// SHA1 on first use: Run sends EVALSHA, and the source (EVAL) only when
// the server lacks it, as after a restart.
//
// A script reaches the keys it is given (KEYS) and no others: on a Redis
// Cluster it runs on the node of its keys' slot, which holds nothing else
// of the farm.
func NewScript(src string) *Script { return &Script{s: redis.NewScript(src)} }

// Run runs script with keys (Key) and args (ARGV). It refuses keys that
// are not all of this farm's with one hash tag, on every Redis alike
// (ErrScriptKeys in the Cmd's error), so that a game that passes its tests
// on one server also runs on a Cluster. The reply's conversions are
// go-redis's (Cmd.Int64, Cmd.StringSlice, ...); a Lua false or a missing
// reply is redis.Nil.
func (s *Store) Run(ctx context.Context, script *Script, keys []string, args ...any) *redis.Cmd {
	if err := s.checkScriptKeys(keys); err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	return script.s.Run(ctx, s.rdb, keys, args...)
}

// checkScriptKeys returns an error unless every key has the form
// <prefix>:{<tag>}:<part>, with one tag for all.
func (s *Store) checkScriptKeys(keys []string) error {
	var first string
	for i, key := range keys {
		tag, ok := s.tagOf(key)
		if !ok {
			return fmt.Errorf("%w: %q is not a key of this farm (make keys with Store.Key)", ErrScriptKeys, key)
		}
		if i == 0 {
			first = tag
		} else if tag != first {
			return fmt.Errorf("%w: %q and %q have hash tags {%s} and {%s}, and a Redis Cluster refuses a script on two slots",
				ErrScriptKeys, keys[0], key, first, tag)
		}
	}
	return nil
}

// tagOf returns the hash tag <kind>:<id> of a key Key could have made,
// and whether it is one.
func (s *Store) tagOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.keys.Prefix+":{")
	if !ok {
		return "", false
	}
	tag, _, ok := strings.Cut(rest, "}:")
	kind, _, colon := strings.Cut(tag, ":")
	if !ok || !colon || kind == "" || kind == "gw" || strings.ContainsAny(tag, "{}") {
		return "", false
	}
	return tag, true
}
