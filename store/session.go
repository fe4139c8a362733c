package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/redis/go-redis/v9"
)

// Session is where a logged-in user is connected.
type Session struct {
	Gateway string
	Conn    string
}

// LoginMode says what a login does when the user is logged in elsewhere.
type LoginMode string

// Login modes.
const (
	// Kick binds the new connection and reports the old one, which the
	// caller closes (the player is "kicked"). The default.
	Kick LoginMode = "kick"
	// Refuse keeps the old binding and fails the new login.
	Refuse LoginMode = "refuse"
)

// ErrLoggedInElsewhere is returned by BindUser in Refuse mode.
var ErrLoggedInElsewhere = errors.New("store: user is logged in on another connection")

// BindUser binds uid to a connection, farm-wide and atomically. In Kick
// mode (the default) it returns the session it replaced (zero if none, or
// if it was this connection), which the caller closes; in Refuse mode an
// existing session of another connection is kept and the call fails with
// ErrLoggedInElsewhere. A uid over MaxNameLen or with a brace is refused
// (CheckName). worker.Request.Login calls it and tells the gateways.
func (s *Store) BindUser(ctx context.Context, uid string, to Session, mode LoginMode) (old Session, err error) {
	// The uid is stored in the session and the gateway's user set, and
	// the gateway copies it into every envelope of the connection.
	if err := CheckName("user id", uid); err != nil {
		return old, err
	}
	o, bound, err := s.q.BindUser(ctx, uid, queue.Session(to), mode == Refuse)
	old = Session(o)
	if err == nil && !bound {
		err = ErrLoggedInElsewhere
	}
	return old, err
}

// UnbindUser removes uid's binding if it still names connection at.Conn
// (a newer login elsewhere is left alone). It reports whether it did.
func (s *Store) UnbindUser(ctx context.Context, uid string, at Session) (bool, error) {
	return s.q.UnbindUser(ctx, uid, queue.Session(at))
}

// SessionOf returns where uid is connected, or ErrNotFound.
func (s *Store) SessionOf(ctx context.Context, uid string) (Session, error) {
	m, err := s.rdb.HMGet(ctx, s.keys.Session(uid), "gw", "conn").Result()
	if err != nil {
		return Session{}, fmt.Errorf("store: session of %q: %w", uid, err)
	}
	gw, _ := m[0].(string)
	conn, _ := m[1].(string)
	if gw == "" {
		return Session{}, ErrNotFound
	}
	return Session{Gateway: gw, Conn: conn}, nil
}

// Sessions looks up many users in one round trip; users not logged in are
// missing from the result.
func (s *Store) Sessions(ctx context.Context, uids []string) (map[string]Session, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(uids))
	for i, uid := range uids {
		cmds[i] = pipe.HMGet(ctx, s.keys.Session(uid), "gw", "conn")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("store: sessions: %w", err)
	}
	out := make(map[string]Session, len(uids))
	for i, c := range cmds {
		v := c.Val()
		if len(v) != 2 {
			continue
		}
		gw, _ := v[0].(string)
		conn, _ := v[1].(string)
		if gw != "" {
			out[uids[i]] = Session{Gateway: gw, Conn: conn}
		}
	}
	return out, nil
}
