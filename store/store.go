package store

import (
	"errors"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
)

// DefaultPrefix starts every key and channel name of a farm: the prefix
// of New("").
const DefaultPrefix = "maple"

// ErrNotFound stands for a missing key or entry, so callers need not import
// go-redis to check for redis.Nil.
var ErrNotFound = errors.New("store: not found")

// Store is a game's view of the farm's Redis: sessions, groups, user
// hashes, counters, timers and the game's own Lua scripts. A handler finds
// one in worker.Request.Store; a tool of the game's makes one with New.
// It is safe for concurrent use.
type Store struct {
	rdb   redis.UniversalClient
	keys  keys.Keys
	q     *queue.Broker
	parts atomic.Int64 // the farm's partition count, once read (ScheduleAfter)
}

// New returns a Store on rdb for the farm with the given key prefix (""
// is DefaultPrefix). Connect opens rdb from a URL.
func New(rdb redis.UniversalClient, prefix string) *Store {
	q := queue.New(rdb, prefix)
	return &Store{rdb: rdb, keys: q.Keys, q: q}
}
