package queue

import (
	"context"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPartitions is the number of inbound queues of a new farm. The
// number is fixed the first time any process of a farm starts (see
// Partitions); afterwards every process reads it from Redis.
const DefaultPartitions = 16

// Partitions returns the farm's partition count. The first process of a
// farm sets it to want (0 means DefaultPartitions); later ones read it, so
// gateways and workers always agree on where a connection's frames go.
func (q *Broker) Partitions(ctx context.Context, want int) (int, error) {
	if want <= 0 {
		want = DefaultPartitions
	}
	key := q.Keys.PartitionCount()
	if err := q.rdb.SetNX(ctx, key, want, 0).Err(); err != nil {
		return 0, fmt.Errorf("store: partitions: %w", err)
	}
	v, err := q.rdb.Get(ctx, key).Result()
	if err != nil {
		return 0, fmt.Errorf("store: partitions: %w", err)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("store: partitions: bad value %q in %s", v, key)
	}
	return n, nil
}

// PartitionOf maps a connection id to its partition. All events of one
// connection go to one partition, which is what keeps them in order.
func PartitionOf(connID string, partitions int) int {
	return int(crc32.ChecksumIEEE([]byte(connID)) % uint32(partitions))
}

// Heartbeat records that a gateway or worker is alive.
func (q *Broker) Heartbeat(ctx context.Context, registry, id string, now time.Time) error {
	return q.rdb.ZAdd(ctx, registry, redis.Z{Score: float64(now.UnixMilli()), Member: id}).Err()
}

// Alive returns the ids in a registry whose last heartbeat is newer than
// now-ttl.
func (q *Broker) Alive(ctx context.Context, registry string, now time.Time, ttl time.Duration) ([]string, error) {
	min := strconv.FormatInt(now.Add(-ttl).UnixMilli(), 10)
	return q.rdb.ZRangeByScore(ctx, registry, &redis.ZRangeBy{Min: min, Max: "+inf"}).Result()
}

// Deregister removes id from a registry.
func (q *Broker) Deregister(ctx context.Context, registry, id string) error {
	return q.rdb.ZRem(ctx, registry, id).Err()
}

// Stale returns the ids in a registry whose last heartbeat is older than
// now-ttl: processes that died without saying so.
func (q *Broker) Stale(ctx context.Context, registry string, now time.Time, ttl time.Duration) ([]string, error) {
	max := fmt.Sprintf("(%d", now.Add(-ttl).UnixMilli())
	return q.rdb.ZRangeByScore(ctx, registry, &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
}
