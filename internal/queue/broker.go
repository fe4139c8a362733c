package queue

import (
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
)

// Broker is the farm's queue machinery on one Redis client: what gateways
// and workers do to Redis besides a game's own state. Its methods are
// grouped by duty, one file each.
type Broker struct {
	rdb  redis.UniversalClient
	Keys keys.Keys
}

// New returns a Broker on rdb for the farm with the given key prefix (""
// is keys.DefaultPrefix).
func New(rdb redis.UniversalClient, prefix string) *Broker {
	return &Broker{rdb: rdb, Keys: keys.New(prefix)}
}

// Client returns the underlying client, for pipelines of the Broker's
// queued commands (Ack, MarkHandled, PushOut...) and for tests.
func (q *Broker) Client() redis.UniversalClient { return q.rdb }

// ErrNotFound stands for a missing entry: Requeue of a dead letter that
// is not there.
var ErrNotFound = errors.New("store: not found")
