package stat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/redis/go-redis/v9"
)

// Report is one process's stat hash, as a Reporter wrote it.
type Report struct {
	Kind    string
	ID      string
	Host    string
	PID     int
	Version string
	Started time.Time
	Uptime  time.Duration
	Time    time.Time // when the report was written (the process's clock)
	// Queues holds what waits in each partition stream, partition 0
	// first, read at QueuesAt; nil when the process reports none.
	Queues   []Queue
	QueuesAt time.Time
	// Fields holds every field of the hash, including the above.
	Fields map[string]string
}

// Int returns a numeric field; 0 when it is missing or not a number.
func (r Report) Int(name string) int64 {
	n, _ := strconv.ParseInt(r.Fields[name], 10, 64)
	return n
}

// Float returns a numeric field; ok is false when it is missing or empty
// (an empty histogram has no quantiles).
func (r Report) Float(name string) (v float64, ok bool) {
	v, err := strconv.ParseFloat(r.Fields[name], 64)
	return v, err == nil
}

// ParseReport reads a stat hash. It fails only when kind or id is missing:
// other fields may be absent, written by an older or newer version.
func ParseReport(fields map[string]string) (Report, error) {
	r := Report{
		Kind:    fields[FieldKind],
		ID:      fields[FieldID],
		Host:    fields[FieldHost],
		Version: fields[FieldVersion],
		Fields:  fields,
	}
	if r.Kind == "" || r.ID == "" {
		return Report{}, fmt.Errorf("stat: report without %s or %s", FieldKind, FieldID)
	}
	r.PID = int(r.Int(FieldPID))
	if s := r.Int(FieldStarted); s > 0 {
		r.Started = time.Unix(s, 0)
	}
	r.Uptime = time.Duration(r.Int(FieldUptime)) * time.Second
	if ms := r.Int(FieldTime); ms > 0 {
		r.Time = time.UnixMilli(ms)
	}
	if r.Queues = parseQueues(fields[FieldQueueWaiting], fields[FieldQueuePending]); r.Queues != nil {
		r.QueuesAt = time.UnixMilli(r.Int(FieldQueuesAt))
	}
	return r, nil
}

// Dist returns the histogram a process reported as <name>_buckets (name
// like "request_duration_seconds"); ok is false when it reported none.
func (r Report) Dist(name string) (s Snapshot, ok bool) {
	return ParseBuckets(r.Fields[name+"_buckets"])
}

// Read returns the reports of every live process of the farm with the
// given prefix: gateways first, then workers, each sorted by id. It takes
// two round trips plus one per 1000 keys (SCAN, then HGETALL of all
// of them in one pipeline). A hash that is not a report is skipped.
//
// On Redis Cluster it scans every master, since SCAN sees one node only.
func Read(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]Report, error) {
	keys := keys.New(prefix)
	var names []string
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			found, err := scanKeys(ctx, c, keys.StatPattern())
			mu.Lock()
			names = append(names, found...)
			mu.Unlock()
			return err
		})
	} else {
		names, err = scanKeys(ctx, rdb, keys.StatPattern())
	}
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(names))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range names {
			cmds[i] = p.HGetAll(ctx, k)
		}
		return nil
	})
	if err != nil && !onlyReplyErrors(cmds) {
		return nil, fmt.Errorf("stat: read reports: %w", err)
	}
	reports := make([]Report, 0, len(cmds))
	for _, c := range cmds {
		if c.Err() != nil || len(c.Val()) == 0 { // expired since SCAN
			continue
		}
		r, err := ParseReport(c.Val())
		if err != nil {
			continue
		}
		reports = append(reports, r)
	}
	SortReports(reports)
	return reports, nil
}

// scanKeys returns the keys of one server that match pattern, once each.
func scanKeys(ctx context.Context, rdb redis.Cmdable, pattern string) ([]string, error) {
	seen := make(map[string]bool)
	var names []string
	var cursor uint64
	for {
		batch, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return names, fmt.Errorf("stat: scan %s: %w", pattern, err)
		}
		for _, k := range batch {
			if !seen[k] { // SCAN may return a key twice
				seen[k] = true
				names = append(names, k)
			}
		}
		if cursor = next; cursor == 0 {
			return names, nil
		}
	}
}

// SortReports orders reports as Read returns them: gateways first, then
// workers, then any other kind, each by id.
func SortReports(rs []Report) {
	rank := func(kind string) int {
		switch kind {
		case KindGateway:
			return 0
		case KindWorker:
			return 1
		}
		return 2
	}
	slices.SortFunc(rs, func(a, b Report) int {
		return cmp.Or(cmp.Compare(rank(a.Kind), rank(b.Kind)), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
}

// onlyReplyErrors reports whether every failed command got an error reply
// from the server (a key that matches the pattern but is not a hash: not
// ours, skipped) rather than failing to reach it.
func onlyReplyErrors(cmds []*redis.MapStringStringCmd) bool {
	for _, c := range cmds {
		var re redis.Error
		if err := c.Err(); err != nil && !errors.As(err, &re) {
			return false
		}
	}
	return true
}
