package stat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
)

// Kinds of process that report.
const (
	KindGateway = "gateway"
	KindWorker  = "worker"
)

// Defaults of ReporterOptions.
const (
	DefaultInterval = time.Second
	DefaultTTL      = 5 * time.Second
)

// Fields every stat hash has, besides the process's Values and Dists.
const (
	FieldKind    = "kind"
	FieldID      = "id"
	FieldHost    = "host"
	FieldPID     = "pid"
	FieldVersion = "version"
	FieldStarted = "started" // unix seconds
	FieldUptime  = "uptime"  // whole seconds
	FieldTime    = "time"    // unix milliseconds of the report
	// FieldQueueWaiting holds the entries of each partition stream that no
	// worker has read yet, comma separated, partition 0 first; a count
	// that is only a lower bound ends in "+" (Queue.AtLeast).
	FieldQueueWaiting = "queue_waiting"
	// FieldQueuePending holds the entries of each partition stream that a
	// worker read and has not acknowledged, as FieldQueueWaiting.
	FieldQueuePending = "queue_pending"
	FieldQueuesAt     = "queues_at" // unix milliseconds when the queues were read
	// FieldQueues is what releases before FieldQueueWaiting wrote: each
	// stream's length, which also counts entries read and acknowledged but
	// not yet trimmed. It is no longer written or read.
	FieldQueues = "queues"
)

// QueueCountCap bounds the counting of a partition's waiting entries when
// Redis does not keep the consumer group's lag (Redis before 7.0,
// miniredis): the entries after the group's last delivered one are read,
// at most this many, and a count that reaches it is a lower bound.
const QueueCountCap = 1000

// Queue is what one partition's stream holds for the workers.
type Queue struct {
	// Waiting counts the entries no worker has read yet: the consumer
	// group's lag. An entry is what one gateway round trip queued on the
	// partition (a bundle of frames and events), or one timer, periodic
	// job or operator frame; entries read and acknowledged but not yet
	// trimmed are not counted.
	Waiting int64
	// AtLeast says Waiting is a lower bound (see QueueCountCap).
	AtLeast bool
	// Pending counts the entries a worker read and has not acknowledged:
	// being handled, or held by a worker that died until another takes
	// them over.
	Pending int64
}

// ReporterOptions configure a Reporter. Zero values mean the defaults.
type ReporterOptions struct {
	// Redis is the farm's Redis (required). The reporter does not close it.
	Redis redis.UniversalClient
	// Prefix starts every key name; "" means store.DefaultPrefix.
	Prefix string
	// Kind is KindGateway or KindWorker; ID the process's gateway or
	// worker id. Both are required: the hash is <prefix>:stat:<Kind>:<ID>.
	Kind string
	ID   string
	// Sample reads the counters (required).
	Sample SampleFunc
	// Version is the build's version, shown by `maple stat`.
	Version string
	// Started is when the process started; zero means when NewReporter ran.
	Started time.Time
	// Queues adds what waits in every partition stream (Queue) to each
	// report, so that `maple stat` can show a backlog and a hot partition.
	// One process of the farm is enough; workers do it.
	Queues bool
	// Partitions is the count a new farm gets if this process's report is
	// the first thing to touch it, as gateways and workers set it; 0
	// means the default, 16. Pass the value the process itself uses.
	Partitions int
	// Interval is the time between reports; 0 means DefaultInterval.
	Interval time.Duration
	// TTL is how long a report outlives its process; 0 means DefaultTTL.
	// It is raised to twice Interval if shorter.
	TTL time.Duration
	// Logger receives failures to report; nil means slog.Default().
	Logger *slog.Logger
}

// Reporter writes a process's counters to Redis every Interval, as the hash
// <prefix>:stat:<kind>:<id>, for `maple stat`. The hash expires TTL after
// the last report, so a process that died disappears on its own; one that
// stops cleanly deletes it.
//
// Each report is one round trip (HSET and PEXPIRE in MULTI, so no reader
// ever sees a hash without a TTL), plus one pipelined round trip for the
// queues when Queues is set (two on a Redis that keeps no consumer-group
// lag). A report that fails is logged and
// skipped: reporting never stops or slows the process.
type Reporter struct {
	opts  ReporterOptions
	log   *slog.Logger
	st    *queue.Broker
	key   string
	host  string
	pid   string
	parts int // partition count once known (Queues)
}

// NewReporter checks opts and returns a reporter; Run starts it.
func NewReporter(opts ReporterOptions) (*Reporter, error) {
	o := opts
	switch {
	case o.Redis == nil:
		return nil, errors.New("stat: ReporterOptions.Redis is required")
	case o.Kind == "" || o.ID == "":
		return nil, errors.New("stat: ReporterOptions.Kind and ID are required")
	case o.Sample == nil:
		return nil, errors.New("stat: ReporterOptions.Sample is required")
	}
	if o.Started.IsZero() {
		o.Started = time.Now()
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	o.TTL = max(o.TTL, 2*o.Interval)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	host, err := os.Hostname()
	if err != nil {
		host = "?"
	}
	st := queue.New(o.Redis, o.Prefix)
	idKey := "id" // log keys of the style note: gw, worker
	switch o.Kind {
	case KindGateway:
		idKey = "gw"
	case KindWorker:
		idKey = "worker"
	}
	return &Reporter{
		opts: o,
		log:  o.Logger.With(idKey, o.ID, "duty", "stat"),
		st:   st,
		key:  st.Keys.Stat(o.Kind, o.ID),
		host: host,
		pid:  strconv.Itoa(os.Getpid()),
	}, nil
}

// Key returns the name of the hash the reporter writes.
func (r *Reporter) Key() string { return r.key }

// Run reports at once and then every Interval until ctx ends; it then
// deletes its hash and returns nil.
func (r *Reporter) Run(ctx context.Context) error {
	tick := time.NewTicker(r.opts.Interval)
	defer tick.Stop()
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, r.opts.Interval)
		err := r.report(rctx, time.Now())
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			r.log.Warn("stat report failed; retrying every interval", "err", err)
		case err != nil && ctx.Err() == nil:
			r.log.Debug("stat report failed", "err", err)
		case err == nil && failing:
			failing = false
			r.log.Info("stat reports resumed")
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.opts.Redis.Del(dctx, r.key).Err()
			cancel()
			return nil
		case <-tick.C:
		}
	}
}

// report writes one report.
func (r *Reporter) report(ctx context.Context, now time.Time) error {
	fields := r.fields(now)
	var qerr error
	if r.opts.Queues {
		var qs []Queue
		qs, qerr = r.queues(ctx)
		if qerr == nil {
			waiting, pending := formatQueues(qs)
			fields = append(fields, FieldQueueWaiting, waiting, FieldQueuePending, pending,
				FieldQueuesAt, strconv.FormatInt(now.UnixMilli(), 10))
		}
	}
	_, err := r.opts.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, r.key, fields...)
		p.PExpire(ctx, r.key, r.opts.TTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("stat: write %s: %w", r.key, err)
	}
	return qerr
}

// fields returns the report's hash fields, as HSET's field/value list.
func (r *Reporter) fields(now time.Time) []any {
	s := r.opts.Sample()
	f := make([]any, 0, 2*(10+len(s.Values)+2*len(s.Dists)))
	f = append(f,
		FieldKind, r.opts.Kind,
		FieldID, r.opts.ID,
		FieldHost, r.host,
		FieldPID, r.pid,
		FieldVersion, r.opts.Version,
		FieldStarted, strconv.FormatInt(r.opts.Started.Unix(), 10),
		FieldUptime, strconv.FormatInt(int64(now.Sub(r.opts.Started)/time.Second), 10),
		FieldTime, strconv.FormatInt(now.UnixMilli(), 10),
	)
	for _, v := range s.Values {
		f = append(f, v.Name, strconv.FormatInt(v.Value, 10))
	}
	for _, d := range s.Dists {
		f = append(f, d.Name+"_buckets", FormatBuckets(d.Snapshot),
			d.Name+"_p50", formatSeconds(d.Snapshot.Quantile(0.5)),
			d.Name+"_p99", formatSeconds(d.Snapshot.Quantile(0.99)))
	}
	return f
}

// queues reads what waits in every partition stream: one pipelined round
// trip of XLEN and XINFO GROUPS per partition, and one more to count the
// waiting entries of the partitions whose group has no lag (an older
// Redis, miniredis).
func (r *Reporter) queues(ctx context.Context) ([]Queue, error) {
	if r.parts == 0 {
		n, err := r.st.Partitions(ctx, r.opts.Partitions)
		if err != nil {
			return nil, err
		}
		r.parts = n
	}
	lens := make([]*redis.IntCmd, r.parts)
	groups := make([]*redis.XInfoGroupsCmd, r.parts)
	_, _ = r.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range lens {
			lens[i] = p.XLen(ctx, r.st.Keys.Inbound(i))
			groups[i] = p.XInfoGroups(ctx, r.st.Keys.Inbound(i))
		}
		return nil
	})
	qs := make([]Queue, r.parts)
	count := make(map[int]*redis.XMessageSliceCmd)
	var after []string
	for i := range qs {
		n, err := lens[i].Result()
		if err != nil {
			return nil, fmt.Errorf("stat: queues: %w", err)
		}
		if n == 0 {
			continue // no stream (XINFO fails), or an empty one
		}
		gs, err := groups[i].Result()
		if err != nil {
			return nil, fmt.Errorf("stat: queues: %w", err)
		}
		var g *redis.XInfoGroup
		for j := range gs {
			if gs[j].Name == keys.ConsumerGroup {
				g = &gs[j]
			}
		}
		switch {
		case g == nil || g.LastDeliveredID == "" || g.LastDeliveredID == "0-0":
			qs[i].Waiting = n // no worker has read anything yet
		case g.EntriesRead > 0 && g.Lag >= 0:
			// Redis 7 keeps the count of entries the group read (no
			// count means none, or it cannot say: counted below).
			qs[i].Waiting = g.Lag
		default:
			count[i] = nil
			after = append(after, queue.NextID(g.LastDeliveredID))
		}
		if g != nil {
			qs[i].Pending = g.Pending
		}
	}
	if len(count) == 0 {
		return qs, nil
	}
	_, err := r.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		j := 0
		for i := range qs {
			if _, ok := count[i]; ok {
				count[i] = p.XRangeN(ctx, r.st.Keys.Inbound(i), after[j], "+", QueueCountCap)
				j++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stat: queues: %w", err)
	}
	for i, c := range count {
		qs[i].Waiting = int64(len(c.Val()))
		qs[i].AtLeast = qs[i].Waiting >= QueueCountCap
	}
	return qs, nil
}

// formatQueues writes the hash fields FieldQueueWaiting and
// FieldQueuePending.
func formatQueues(qs []Queue) (waiting, pending string) {
	var w, p strings.Builder
	for i, q := range qs {
		if i > 0 {
			w.WriteByte(',')
			p.WriteByte(',')
		}
		w.WriteString(strconv.FormatInt(q.Waiting, 10))
		if q.AtLeast {
			w.WriteByte('+')
		}
		p.WriteString(strconv.FormatInt(q.Pending, 10))
	}
	return w.String(), p.String()
}

// parseQueues reads what formatQueues wrote; nil when waiting is empty.
// A count that cannot be read is 0.
func parseQueues(waiting, pending string) []Queue {
	if waiting == "" {
		return nil
	}
	ws := strings.Split(waiting, ",")
	ps := strings.Split(pending, ",")
	qs := make([]Queue, len(ws))
	for i, w := range ws {
		w, qs[i].AtLeast = strings.CutSuffix(w, "+")
		qs[i].Waiting, _ = strconv.ParseInt(w, 10, 64)
		if i < len(ps) {
			qs[i].Pending, _ = strconv.ParseInt(ps[i], 10, 64)
		}
	}
	return qs
}

// formatSeconds writes a quantile estimate to 4 significant digits: ""
// when the histogram is empty.
func formatSeconds(s float64) string {
	if math.IsNaN(s) {
		return ""
	}
	return strconv.FormatFloat(s, 'g', 4, 64)
}
