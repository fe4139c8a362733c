package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/redis/go-redis/v9"
)

// ParseURL turns a --redis setting into client options for go-redis's
// universal client:
//
//	redis://[user:pass@]host:port[/db]         one server
//	unix:///path/to/redis.sock
//	redis-sentinel://[user:pass@]host:port,host:port/master[/db]
//	                                           a master found through Sentinel
//	redis-cluster://[user:pass@]host:port,host:port
//	                                           a Cluster, from seed nodes
//	redis://host:port,host:port                also a Cluster
//	host:port                                  redis://host:port
//
// Each TCP form has a TLS twin: rediss://, rediss-sentinel://,
// rediss-cluster:// (and rediss://host:port,host:port for a Cluster). A TLS
// URL uses TLS on every connection (every Cluster node; the Sentinels and
// the master) or fails; it never falls back to plaintext. ParseURL verifies
// TLS servers against the system's certificate pool; ParseURLTLS takes a CA,
// a client certificate and more.
//
// For Sentinel, ?sentinel_password=... sets the sentinels' own password.
func ParseURL(raw string) (*redis.UniversalOptions, error) {
	return ParseURLTLS(raw, TLSOptions{})
}

// ErrPlainURLWithTLS is the error of ParseURLTLS (wrapped) for TLS options
// given with a URL that does not ask for TLS: the URL alone says whether a
// connection is encrypted, so options meant for TLS never encrypt, nor
// fail to, behind its back.
var ErrPlainURLWithTLS = errors.New("TLS options are set, but the redis url asks for no TLS")

// schemes are the URL schemes ParseURL knows: the form each names (""
// one server, or a Cluster for a comma list) and whether it means TLS.
var schemes = map[string]struct {
	form string
	tls  bool
	twin string // the scheme of the same form with (or without) TLS
}{
	"redis":           {"", false, "rediss"},
	"rediss":          {"", true, "redis"},
	"unix":            {"unix", false, ""},
	"redis-sentinel":  {"sentinel", false, "rediss-sentinel"},
	"rediss-sentinel": {"sentinel", true, "redis-sentinel"},
	"redis-cluster":   {"cluster", false, "rediss-cluster"},
	"rediss-cluster":  {"cluster", true, "redis-cluster"},
}

// ParseURLTLS is ParseURL with TLS settings. A TLS URL gets one
// *tls.Config built from t, shared by every connection the client makes
// (UniversalOptions.TLSConfig: go-redis gives it to every Cluster node,
// and to the Sentinels and the master alike). t set with a URL that asks
// for no TLS is an error (ErrPlainURLWithTLS), as is a file of t that
// cannot be read.
func ParseURLTLS(raw string, t TLSOptions) (*redis.UniversalOptions, error) {
	if raw == "" {
		return nil, errors.New("store: empty redis url")
	}
	if !strings.Contains(raw, "://") {
		raw = "redis://" + raw
	}
	scheme, rest, _ := strings.Cut(raw, "://")
	sc, ok := schemes[scheme]
	if !ok {
		return nil, fmt.Errorf("store: redis url %q: unknown scheme %q; want redis://, rediss://, unix://, "+
			"redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://", redactURL(raw), scheme)
	}
	if !sc.tls && !t.IsZero() {
		if sc.twin == "" {
			return nil, fmt.Errorf("store: redis url %q: %w: a unix socket takes no TLS", redactURL(raw), ErrPlainURLWithTLS)
		}
		return nil, fmt.Errorf("store: redis url %q: %w: use %s://%s", redactURL(raw), ErrPlainURLWithTLS,
			sc.twin, strings.TrimPrefix(redactURL(raw), scheme+"://"))
	}
	o, err := parseForm(raw, scheme, rest, sc.form)
	if err != nil {
		return nil, err
	}
	if !sc.tls {
		o.TLSConfig = nil
		return o, nil
	}
	// go-redis reads skip_verify=true in a single server's rediss:// URL;
	// it stays what it was, the same as TLSOptions.Insecure.
	if o.TLSConfig != nil && o.TLSConfig.InsecureSkipVerify {
		t.Insecure = true
	}
	if o.TLSConfig, err = t.Config(); err != nil {
		return nil, err
	}
	if o.TLSConfig == nil {
		return nil, errTLSDropped
	}
	return o, nil
}

// parseForm parses the URL of one form (see ParseURL), without TLS.
func parseForm(raw, scheme, rest, form string) (*redis.UniversalOptions, error) {
	hostEnd := strings.IndexAny(rest, "/?")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	if form == "" && strings.Contains(rest[:hostEnd], ",") {
		form = "cluster"
	}
	switch form {
	case "", "unix":
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("store: redis url %q: %w", redactURL(raw), err)
		}
		return &redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout,
			WriteTimeout: o.WriteTimeout, PoolSize: o.PoolSize, Protocol: o.Protocol, ClientName: o.ClientName,
		}, nil
	}
	u, err := url.Parse("redis://" + rest)
	if err != nil {
		return nil, fmt.Errorf("store: redis url %q: %w", redactURL(raw), err)
	}
	o := &redis.UniversalOptions{Addrs: strings.Split(u.Host, ",")}
	for _, a := range o.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("store: redis url %q: address %q: %w", redactURL(raw), a, err)
		}
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	path := strings.Trim(u.Path, "/")
	if form == "cluster" {
		o.IsClusterMode = true
		if path != "" {
			return nil, fmt.Errorf("store: redis url %q: a cluster has no database number", redactURL(raw))
		}
		return o, nil
	}
	master, db, _ := strings.Cut(path, "/")
	if master == "" {
		return nil, fmt.Errorf("store: redis url %q: name the master: %s://host:port/<master>", redactURL(raw), scheme)
	}
	o.MasterName = master
	if db != "" {
		if o.DB, err = strconv.Atoi(db); err != nil {
			return nil, fmt.Errorf("store: redis url %q: database %q", redactURL(raw), db)
		}
	}
	o.SentinelPassword = u.Query().Get("sentinel_password")
	return o, nil
}

// redactURL hides the passwords of a URL meant for a log line: the
// user's, and a Sentinel's (?sentinel_password=).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	if u.User == nil && !q.Has("sentinel_password") {
		return raw
	}
	if q.Has("sentinel_password") {
		q.Set("sentinel_password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Connect opens a client and checks that the server answers, so a wrong or
// unreachable URL fails at once with a one-line error naming it.
func Connect(ctx context.Context, raw string, tune func(*redis.UniversalOptions)) (redis.UniversalClient, error) {
	return ConnectTLS(ctx, raw, TLSOptions{}, tune)
}

// ConnectTLS is Connect with TLS settings (ParseURLTLS). A TLS failure says
// what to check: the CA, the server name, a client certificate, or a
// server that does not speak TLS on that port.
func ConnectTLS(ctx context.Context, raw string, t TLSOptions, tune func(*redis.UniversalOptions)) (redis.UniversalClient, error) {
	o, err := ParseURLTLS(raw, t)
	if err != nil {
		return nil, err
	}
	if tune != nil {
		tune(o)
	}
	return ConnectOptions(ctx, raw, o)
}

// ConnectOptions is Connect for options already parsed from raw (raw only
// names the server in the error): a client on a copy of o (its TLSConfig
// shared, not built again) that answered a PING.
func ConnectOptions(ctx context.Context, raw string, o *redis.UniversalOptions) (redis.UniversalClient, error) {
	oc := *o
	rdb := queue.NewClient(&oc)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		// One line, even for go-redis's errors.Join of every Sentinel's
		// failure; the causes stay reachable through errors.Is and As.
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		return nil, &connectError{
			msg: fmt.Sprintf("store: redis %s unreachable: %s%s", redactURL(raw), msg, tlsHint(err, o.TLSConfig != nil)),
			err: err,
		}
	}
	return rdb, nil
}

// connectError is Connect's one-line error, wrapping the client's.
type connectError struct {
	msg string
	err error
}

func (e *connectError) Error() string { return e.msg }

func (e *connectError) Unwrap() error { return e.err }
