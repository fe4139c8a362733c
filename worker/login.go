package worker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
)

// Logins. Login binds a connection to a user id farm-wide (session_bind.lua)
// and tells the connection's gateway, so that the uid travels with every
// later frame; Logout undoes it.
//
// Signed logins. A player's client gets a login token from the game's
// account service (which checked a password, a platform's ticket...) and
// sends it in its login frame; the worker checks the signature and the
// expiry before it binds the user id, so nobody logs in as somebody else.
//
// A token is text: "v1.<expiry, unix seconds>.<signature>.<user id>",
// the signature base64url (no padding) of HMAC-SHA256(secret,
// "maple-login-v1\n" + user id + "\n" + expiry). Any service that shares
// the secret signs with SignLogin, or with those few lines in its own
// language.

// Errors of VerifyLogin. Each wraps ErrBadLogin.
var (
	ErrBadLogin       = errors.New("worker: bad login token")
	errLoginFormat    = fmt.Errorf("%w: malformed", ErrBadLogin)
	errLoginSignature = fmt.Errorf("%w: signature does not match", ErrBadLogin)
	errLoginExpired   = fmt.Errorf("%w: expired", ErrBadLogin)
)

// DefaultLoginSkew is the clock difference VerifyLogin tolerates between
// the account service and the worker.
const DefaultLoginSkew = 30 * time.Second

const loginVersion = "v1"

// SignLogin returns a token for uid, valid until expires.
func SignLogin(secret []byte, uid string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return loginVersion + "." + exp + "." + loginSignature(secret, uid, exp) + "." + uid
}

// VerifyLogin checks token against secret at now, allowing skew of clock
// difference, and returns its user id. The signature is compared in
// constant time; errors wrap ErrBadLogin and never echo the token.
func VerifyLogin(secret []byte, token string, now time.Time, skew time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("worker: no login secret")
	}
	parts := strings.SplitN(token, ".", 4)
	if len(parts) != 4 || parts[0] != loginVersion || parts[3] == "" {
		return "", errLoginFormat
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", errLoginFormat
	}
	want := loginSignature(secret, parts[3], parts[1])
	if !hmac.Equal([]byte(parts[2]), []byte(want)) {
		return "", errLoginSignature
	}
	if now.After(time.Unix(exp, 0).Add(skew)) {
		return "", errLoginExpired
	}
	return parts[3], nil
}

func loginSignature(secret []byte, uid, exp string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("maple-login-" + loginVersion + "\n" + uid + "\n" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// LoginWithToken verifies token (VerifyLogin, DefaultLoginSkew) and logs
// the connection in as its user id. A bad token returns an error wrapping
// ErrBadLogin and binds nothing.
func (r *Request) LoginWithToken(ctx context.Context, secret []byte, token string) error {
	uid, err := VerifyLogin(secret, token, time.Now(), DefaultLoginSkew)
	if err != nil {
		return err
	}
	return r.Login(ctx, uid)
}

// Login binds the request's connection to uid, farm-wide and atomically.
// With LoginMode Kick (the default) an older connection of the same user,
// on any gateway, is closed; with Refuse the login fails with
// store.ErrLoggedInElsewhere. From now on the uid travels with every frame
// of this connection (Request.Conn.UID).
func (r *Request) Login(ctx context.Context, uid string) error {
	if r.Kind != Frame {
		return fmt.Errorf("worker: login from a %s event", r.Kind)
	}
	if uid == "" {
		return errors.New("worker: login with an empty user id")
	}
	// A uid travels with every frame of the connection: bounded.
	if err := store.CheckName("user id", uid); err != nil {
		return fmt.Errorf("worker: login: %w", err)
	}
	if r.Conn.UID != "" && r.Conn.UID != uid {
		if err := r.Logout(ctx); err != nil {
			return err
		}
	}
	here := store.Session{Gateway: r.Conn.Gateway, Conn: r.Conn.ID}
	old, err := r.Store.BindUser(ctx, uid, here, r.svc.loginMode)
	if err != nil {
		return err
	}
	if old.Conn != "" && old.Conn != r.Conn.ID {
		r.svc.log.Debug("login kicks older connection", "uid", uid, "conn", old.Conn, "gw", old.Gateway)
		r.svc.out.send(old.Gateway, &queue.Out{Kind: queue.OutUnbind, Conn: old.Conn})
		r.svc.out.send(old.Gateway, &queue.Out{Kind: queue.OutClose, Conn: old.Conn})
	}
	r.svc.out.send(r.Conn.Gateway, &queue.Out{Kind: queue.OutBind, Conn: r.Conn.ID, UID: uid})
	r.svc.users.setUID(r.Conn.ID, uid)
	r.Conn.UID = uid
	return nil
}

// Logout removes the connection's binding.
func (r *Request) Logout(ctx context.Context) error {
	if r.Conn.UID == "" {
		return nil
	}
	if _, err := r.Store.UnbindUser(ctx, r.Conn.UID, store.Session{Gateway: r.Conn.Gateway, Conn: r.Conn.ID}); err != nil {
		return err
	}
	r.svc.out.send(r.Conn.Gateway, &queue.Out{Kind: queue.OutUnbind, Conn: r.Conn.ID})
	r.svc.users.setUID(r.Conn.ID, "")
	r.Conn.UID = ""
	return nil
}
