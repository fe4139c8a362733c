package queue

import (
	"context"
	"fmt"
	"time"
)

// Session is where a logged-in user is connected.
type Session struct {
	Gateway string
	Conn    string
}

// scriptSessionBind (lua/session_bind.lua) binds a user to a connection: kick or refuse.
var scriptSessionBind = loadScript("session_bind")

// BindUser binds uid to a connection atomically (session_bind.lua) and
// keeps the gateways' user sets (Keys.GatewayUsers), by which a gateway's
// sessions are removed when it is forgotten (ForgetGateway). Another
// connection bound to uid is replaced and returned in old, or with refuse
// kept: bound is then false and old names it. The caller checks uid
// (store.CheckName).
func (q *Broker) BindUser(ctx context.Context, uid string, to Session, refuse bool) (old Session, bound bool, err error) {
	mode := "kick"
	if refuse {
		mode = "refuse"
	}
	res, err := scriptSessionBind.Run(ctx, q.rdb, []string{q.Keys.Session(uid)},
		to.Gateway, to.Conn, mode, time.Now().UnixMilli()).Slice()
	if err != nil {
		return old, false, fmt.Errorf("store: bind user %q: %w", uid, err)
	}
	if len(res) != 3 {
		return old, false, fmt.Errorf("store: bind user %q: unexpected reply %v", uid, res)
	}
	old.Gateway, _ = res[1].(string)
	old.Conn, _ = res[2].(string)
	if n, _ := res[0].(int64); n == 0 {
		return old, false, nil
	}
	if to.Gateway != "" {
		q.rdb.SAdd(ctx, q.Keys.GatewayUsers(to.Gateway), uid)
	}
	if old.Gateway != "" && old.Gateway != to.Gateway {
		q.rdb.SRem(ctx, q.Keys.GatewayUsers(old.Gateway), uid)
	}
	return old, true, nil
}

// scriptSessionUnbind (lua/session_unbind.lua) unbinds a user if still bound to this connection (or this gateway).
var scriptSessionUnbind = loadScript("session_unbind")

// UnbindUser removes uid's binding if it still names connection at.Conn
// (session_unbind.lua). It reports whether it did.
func (q *Broker) UnbindUser(ctx context.Context, uid string, at Session) (bool, error) {
	n, err := scriptSessionUnbind.Run(ctx, q.rdb, []string{q.Keys.Session(uid)}, at.Conn, at.Gateway).Int()
	if err != nil {
		return false, fmt.Errorf("store: unbind user %q: %w", uid, err)
	}
	if n == 1 && at.Gateway != "" {
		q.rdb.SRem(ctx, q.Keys.GatewayUsers(at.Gateway), uid)
	}
	return n == 1, nil
}
