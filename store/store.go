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

	"github.com/redis/go-redis/v9"
)

// ErrNotFound stands for a missing key or entry, so callers need not import
// go-redis to check for redis.Nil.
var ErrNotFound = errors.New("store: not found")

// ParseURL turns a --redis setting into client options for go-redis's
// universal client:
//
//	redis://[user:pass@]host:port[/db]         one server (rediss:// for TLS)
//	unix:///path/to/redis.sock
//	redis-sentinel://[user:pass@]host:port,host:port/master[/db]
//	                                           a master found through Sentinel
//	redis-cluster://[user:pass@]host:port,host:port
//	                                           a Cluster, from seed nodes
//	redis://host:port,host:port                also a Cluster
//
// For Sentinel, ?sentinel_password=... sets the sentinels' own password.
func ParseURL(raw string) (*redis.UniversalOptions, error) {
	if raw == "" {
		return nil, errors.New("store: empty redis url")
	}
	if !strings.Contains(raw, "://") {
		raw = "redis://" + raw
	}
	scheme, rest, _ := strings.Cut(raw, "://")
	cluster := scheme == "redis-cluster"
	sentinel := scheme == "redis-sentinel"
	hostEnd := strings.IndexAny(rest, "/?")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	if strings.Contains(rest[:hostEnd], ",") && scheme != "redis-sentinel" {
		cluster = true
	}
	if !cluster && !sentinel {
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
	if cluster {
		o.IsClusterMode = true
		if path != "" {
			return nil, fmt.Errorf("store: redis url %q: a cluster has no database number", redactURL(raw))
		}
		return o, nil
	}
	master, db, _ := strings.Cut(path, "/")
	if master == "" {
		return nil, fmt.Errorf("store: redis url %q: name the master: redis-sentinel://host:port/<master>", redactURL(raw))
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

// redactURL hides a password in a URL meant for a log line.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// Connect opens a client and checks that the server answers, so a wrong or
// unreachable URL fails at once with a one-line error naming it.
func Connect(ctx context.Context, raw string, tune func(*redis.UniversalOptions)) (redis.UniversalClient, error) {
	o, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	if tune != nil {
		tune(o)
	}
	rdb := NewClient(o)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("store: redis %s unreachable: %w", redactURL(raw), err)
	}
	return rdb, nil
}

// Store is the farm's view of Redis: key names, scripts and the operations
// the gateway and the workers run.
type Store struct {
	rdb  redis.UniversalClient
	Keys Keys
}

// New returns a Store on rdb for the farm with the given key prefix ("" is
// DefaultPrefix).
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, Keys: NewKeys(prefix)}
}

// Client returns the underlying client, for a game's own commands.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Partitions returns the farm's partition count. The first process of a
// farm sets it to want (0 means DefaultPartitions); later ones read it, so
// gateways and workers always agree on where a connection's frames go.
func (s *Store) Partitions(ctx context.Context, want int) (int, error) {
	if want <= 0 {
		want = DefaultPartitions
	}
	key := s.Keys.PartitionCount()
	if err := s.rdb.SetNX(ctx, key, want, 0).Err(); err != nil {
		return 0, fmt.Errorf("store: partitions: %w", err)
	}
	v, err := s.rdb.Get(ctx, key).Result()
	if err != nil {
		return 0, fmt.Errorf("store: partitions: %w", err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("store: partitions: bad value %q in %s", v, key)
	}
	return n, nil
}

// Heartbeat records that a gateway or worker is alive.
func (s *Store) Heartbeat(ctx context.Context, registry, id string, now time.Time) error {
	return s.rdb.ZAdd(ctx, registry, redis.Z{Score: float64(now.UnixMilli()), Member: id}).Err()
}

// Alive returns the ids in a registry whose last heartbeat is newer than
// now-ttl.
func (s *Store) Alive(ctx context.Context, registry string, now time.Time, ttl time.Duration) ([]string, error) {
	min := strconv.FormatInt(now.Add(-ttl).UnixMilli(), 10)
	return s.rdb.ZRangeByScore(ctx, registry, &redis.ZRangeBy{Min: min, Max: "+inf"}).Result()
}

// Deregister removes id from a registry.
func (s *Store) Deregister(ctx context.Context, registry, id string) error {
	return s.rdb.ZRem(ctx, registry, id).Err()
}

// IncrCounter atomically adds delta to a named counter and returns the new
// value. A name over MaxNameLen is refused (ErrNameTooLong).
func (s *Store) IncrCounter(ctx context.Context, name string, delta int64) (int64, error) {
	if err := CheckName("counter name", name); err != nil {
		return 0, err
	}
	n, err := scriptCounterIncr.Run(ctx, s.rdb, []string{s.Keys.Counter(name)}, delta).Int64()
	if err != nil {
		return 0, fmt.Errorf("store: counter %q: %w", name, err)
	}
	return n, nil
}

// Counter returns a counter's value (0 if it was never incremented).
func (s *Store) Counter(ctx context.Context, name string) (int64, error) {
	if err := CheckName("counter name", name); err != nil {
		return 0, err
	}
	n, err := s.rdb.Get(ctx, s.Keys.Counter(name)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}
