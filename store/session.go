package store

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// BindUser binds uid to a connection atomically. In Kick mode it returns
// the session it replaced (zero if none, or if it was this connection). A
// uid over MaxNameLen is refused (ErrNameTooLong).
func (s *Store) BindUser(ctx context.Context, uid string, to Session, mode LoginMode) (old Session, err error) {
	// The uid is stored in the session and the gateway's user set, and
	// the gateway copies it into every envelope of the connection.
	if err := CheckName("user id", uid); err != nil {
		return old, err
	}
	if mode == "" {
		mode = Kick
	}
	res, err := scriptSessionBind.Run(ctx, s.rdb, []string{s.Keys.Session(uid)},
		to.Gateway, to.Conn, string(mode), time.Now().UnixMilli()).Slice()
	if err != nil {
		return old, fmt.Errorf("store: bind user %q: %w", uid, err)
	}
	if len(res) != 3 {
		return old, fmt.Errorf("store: bind user %q: unexpected reply %v", uid, res)
	}
	old.Gateway, _ = res[1].(string)
	old.Conn, _ = res[2].(string)
	if n, _ := res[0].(int64); n == 0 {
		return old, ErrLoggedInElsewhere
	}
	if to.Gateway != "" {
		s.rdb.SAdd(ctx, s.Keys.GatewayUsers(to.Gateway), uid)
	}
	if old.Gateway != "" && old.Gateway != to.Gateway {
		s.rdb.SRem(ctx, s.Keys.GatewayUsers(old.Gateway), uid)
	}
	return old, nil
}

// UnbindUser removes uid's binding if it still names conn. It reports
// whether it did.
func (s *Store) UnbindUser(ctx context.Context, uid string, at Session) (bool, error) {
	n, err := scriptSessionUnbnd.Run(ctx, s.rdb, []string{s.Keys.Session(uid)}, at.Conn, at.Gateway).Int()
	if err != nil {
		return false, fmt.Errorf("store: unbind user %q: %w", uid, err)
	}
	if n == 1 && at.Gateway != "" {
		s.rdb.SRem(ctx, s.Keys.GatewayUsers(at.Gateway), uid)
	}
	return n == 1, nil
}

// SessionOf returns where uid is connected, or ErrNotFound.
func (s *Store) SessionOf(ctx context.Context, uid string) (Session, error) {
	m, err := s.rdb.HMGet(ctx, s.Keys.Session(uid), "gw", "conn").Result()
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
		cmds[i] = pipe.HMGet(ctx, s.Keys.Session(uid), "gw", "conn")
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

// ReapGateway removes what a dead gateway left: its users' sessions (where
// they still point at it), its user set, its outbound list, its frame
// count and its connections' handled marks, and its registry entry. It
// returns the number of sessions removed.
func (s *Store) ReapGateway(ctx context.Context, gw string) (int, error) {
	uids, err := s.rdb.SMembers(ctx, s.Keys.GatewayUsers(gw)).Result()
	if err != nil {
		return 0, fmt.Errorf("store: reap gateway %s: %w", gw, err)
	}
	n := 0
	for _, uid := range uids {
		ok, err := scriptSessionUnbnd.Run(ctx, s.rdb, []string{s.Keys.Session(uid)}, "", gw).Int()
		if err != nil {
			return n, fmt.Errorf("store: reap gateway %s: %w", gw, err)
		}
		n += ok
	}
	pipe := s.rdb.Pipeline()
	pipe.Del(ctx, s.Keys.GatewayUsers(gw))
	// UNLINK: the handled marks and the outbound list of a big gateway
	// hold a field or element per connection; Redis frees them in the
	// background instead of blocking on them.
	pipe.Unlink(ctx, s.Keys.Outbound(gw), s.Keys.OutboundTransit(gw), s.Keys.OutboundBatch(gw),
		s.Keys.Queued(gw), s.Keys.Handled(gw))
	pipe.ZRem(ctx, s.Keys.Gateways(), gw)
	if _, err := pipe.Exec(ctx); err != nil {
		return n, fmt.Errorf("store: reap gateway %s: %w", gw, err)
	}
	return n, nil
}

// Stale returns the ids in a registry whose last heartbeat is older than
// now-ttl: processes that died without saying so.
func (s *Store) Stale(ctx context.Context, registry string, now time.Time, ttl time.Duration) ([]string, error) {
	max := fmt.Sprintf("(%d", now.Add(-ttl).UnixMilli())
	return s.rdb.ZRangeByScore(ctx, registry, &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
}
