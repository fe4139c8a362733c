package stat

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store/storetest"
)

// servers runs f against a real redis-server and against miniredis, each
// with a prefix of its own.
func servers(t *testing.T, f func(t *testing.T, rdb redis.UniversalClient, prefix string)) {
	t.Run("redis", func(t *testing.T) {
		s := storetest.Start(t, storetest.Options{})
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{s.Addr}})
		t.Cleanup(func() { rdb.Close() })
		f(t, rdb, storetest.Prefix(t))
	})
	t.Run("miniredis", func(t *testing.T) {
		m := storetest.Mini(t)
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{m.Addr()}})
		t.Cleanup(func() { rdb.Close() })
		f(t, rdb, storetest.Prefix(t))
	})
}

// fakeSample is a process with two counters, a gauge and a histogram.
func fakeSample(h *Histogram, in int64) SampleFunc {
	return func() Sample {
		return Sample{
			Values: []Value{
				{Name: "connections", Type: Gauge, Value: 3},
				{Name: "frames_in_total", Value: in},
				{Name: "busy_total", Value: 0},
			},
			Dists: []Dist{{Name: "request_duration_seconds", Snapshot: h.Snapshot()}},
		}
	}
}

func newTestReporter(t *testing.T, rdb redis.UniversalClient, o ReporterOptions) *Reporter {
	t.Helper()
	o.Redis = rdb
	o.Logger = slog.New(slog.DiscardHandler)
	if o.Sample == nil {
		o.Sample = fakeSample(new(Histogram), 0)
	}
	r, err := NewReporter(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReporterWritesAndExpires(t *testing.T) {
	servers(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		var h Histogram
		for range 98 {
			h.Observe(200 * time.Microsecond) // bucket 0.00025
		}
		h.Observe(3 * time.Millisecond) // bucket 0.005
		h.Observe(3 * time.Millisecond)
		started := time.Now().Add(-90 * time.Second)
		r := newTestReporter(t, rdb, ReporterOptions{
			Prefix: prefix, Kind: KindGateway, ID: "gw1", Version: "v1.2.3", Started: started,
			Sample: fakeSample(&h, 42), Interval: 100 * time.Millisecond, TTL: 400 * time.Millisecond,
		})
		if want := keys.New(prefix).Stat(KindGateway, "gw1"); r.Key() != want {
			t.Fatalf("Key() = %q, want %q", r.Key(), want)
		}
		ctx := t.Context()
		now := time.Now()
		if err := r.report(ctx, now); err != nil {
			t.Fatal(err)
		}
		got, err := rdb.HGetAll(ctx, r.Key()).Result()
		if err != nil {
			t.Fatal(err)
		}
		host, _ := os.Hostname()
		want := map[string]string{
			"kind": "gateway", "id": "gw1", "host": host, "pid": strconv.Itoa(os.Getpid()),
			"version": "v1.2.3", "started": strconv.FormatInt(started.Unix(), 10), "uptime": "90",
			"time":        strconv.FormatInt(now.UnixMilli(), 10),
			"connections": "3", "frames_in_total": "42", "busy_total": "0",
			// Estimates since start, interpolated: rank 50 of the 98 in
			// (0.1ms, 0.25ms], rank 99 half way into (2.5ms, 5ms].
			"request_duration_seconds_p50": "0.0001765", "request_duration_seconds_p99": "0.00375",
			"request_duration_seconds_buckets": "0,0,98,98,98,98,100,100,100,100,100,100,100,100,100,100,100,100",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("field %s = %q, want %q", k, got[k], v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("hash has %d fields, want %d: %v", len(got), len(want), got)
		}
		ttl, err := rdb.PTTL(ctx, r.Key()).Result()
		if err != nil || ttl <= 0 || ttl > 400*time.Millisecond {
			t.Fatalf("PTTL = %v, %v; want in (0, 400ms]", ttl, err)
		}
		// A process that stops reporting disappears on its own.
		deadline := time.Now().Add(3 * time.Second)
		for {
			n, err := rdb.Exists(ctx, r.Key()).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("stat hash still there 3s after its last report (TTL 400ms)")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestReporterEmptyHistogram(t *testing.T) {
	servers(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		r := newTestReporter(t, rdb, ReporterOptions{Prefix: prefix, Kind: KindWorker, ID: "w1"})
		if err := r.report(t.Context(), time.Now()); err != nil {
			t.Fatal(err)
		}
		rs, err := Read(t.Context(), rdb, prefix)
		if err != nil || len(rs) != 1 {
			t.Fatalf("Read = %v, %v; want 1 report", rs, err)
		}
		if v, ok := rs[0].Float("request_duration_seconds_p99"); ok {
			t.Errorf("p99 of an empty histogram = %v, want none", v)
		}
	})
}

func TestReporterRunKeepsReportingAndDeletesOnStop(t *testing.T) {
	servers(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		var n int64
		sample := func() Sample {
			n++ // only the reporter's goroutine calls it
			return Sample{Values: []Value{{Name: "handled_total", Value: n}}}
		}
		r := newTestReporter(t, rdb, ReporterOptions{
			Prefix: prefix, Kind: KindWorker, ID: "w1", Sample: sample, Interval: 50 * time.Millisecond,
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		deadline := time.Now().Add(5 * time.Second)
		for {
			v, _ := rdb.HGet(t.Context(), r.Key(), "handled_total").Int64()
			if v >= 3 {
				break // reported three times
			}
			if time.Now().After(deadline) {
				t.Fatalf("handled_total = %d after 5s of 50ms reports", v)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its ctx ended")
		}
		if n, _ := rdb.Exists(t.Context(), r.Key()).Result(); n != 0 {
			t.Error("stat hash still there after a clean stop")
		}
	})
}

// TestReporterQueues: the queues are the entries no worker has read yet,
// not the streams' lengths, which also count entries read and
// acknowledged but not yet trimmed (an idle farm showed 1,376 "queued").
func TestReporterQueues(t *testing.T) {
	servers(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := t.Context()
		ks := keys.New(prefix)
		add := func(p, n int) {
			t.Helper()
			for range n {
				if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: ks.Inbound(p), Values: []string{"e", "x"}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		// read makes a worker read n entries of p and acknowledge acked
		// of them.
		read := func(p int, n int64, acked int) {
			t.Helper()
			if err := rdb.XGroupCreateMkStream(ctx, ks.Inbound(p), keys.ConsumerGroup, "0").Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
				t.Fatal(err)
			}
			got, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.ConsumerGroup, Consumer: "w",
				Streams: []string{ks.Inbound(p), ">"}, Count: n, Block: -1}).Result()
			if err != nil || len(got) != 1 || int64(len(got[0].Messages)) != n {
				t.Fatalf("XREADGROUP: %v, %v", got, err)
			}
			for _, m := range got[0].Messages[:acked] {
				if err := rdb.XAck(ctx, ks.Inbound(p), keys.ConsumerGroup, m.ID).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		add(2, 3) // no worker ever read: all 3 wait
		add(5, 1)
		rdb.Set(ctx, ks.PartitionCount(), 8, 0)
		add(6, 6)
		read(6, 4, 3) // 2 wait, 1 is being handled, 3 are done but untrimmed
		add(7, 2)
		read(7, 2, 2) // idle: all done, none trimmed yet
		if err := queue.New(rdb, prefix).EnsureGroups(ctx, 8); err != nil {
			t.Fatal(err)
		}
		add(3, 1) // a group, nothing read yet
		r := newTestReporter(t, rdb, ReporterOptions{Prefix: prefix, Kind: KindWorker, ID: "w1", Queues: true, Partitions: 8})
		now := time.Now()
		if err := r.report(ctx, now); err != nil {
			t.Fatal(err)
		}
		rs, err := Read(ctx, rdb, prefix)
		if err != nil || len(rs) != 1 {
			t.Fatalf("Read = %v, %v; want 1 report", rs, err)
		}
		want := []Queue{{}, {}, {Waiting: 3}, {Waiting: 1}, {}, {Waiting: 1}, {Waiting: 2, Pending: 1}, {}}
		if got := rs[0].Queues; !slices.Equal(got, want) {
			t.Errorf("Queues = %+v, want %+v", got, want)
		}
		if got := rs[0].QueuesAt.UnixMilli(); got != now.UnixMilli() {
			t.Errorf("QueuesAt = %d, want %d", got, now.UnixMilli())
		}
		// The farm already has a partition count: the reporter reads it,
		// it does not impose its own.
		r2 := newTestReporter(t, rdb, ReporterOptions{Prefix: prefix, Kind: KindWorker, ID: "w2", Queues: true, Partitions: 32})
		if err := r2.report(ctx, now); err != nil {
			t.Fatal(err)
		}
		got, _ := rdb.HMGet(ctx, r2.Key(), FieldQueueWaiting, FieldQueuePending).Result()
		if len(got) != 2 || got[0] != "0,0,3,1,0,1,2,0" || got[1] != "0,0,0,0,0,0,1,0" {
			t.Errorf("queues of the second reporter = %q, want the farm's 8 partitions", got)
		}
	})
}

// TestReporterQueuesCounted: on a server without consumer-group lag
// (miniredis here, Redis before 7.0) the waiting entries are counted, up
// to QueueCountCap; a count that reaches it is marked a lower bound.
func TestReporterQueuesCounted(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{m.Addr()}})
	defer rdb.Close()
	ctx := t.Context()
	st := queue.New(rdb, "t")
	if _, err := st.Partitions(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureGroups(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for p, n := range []int{3, QueueCountCap + 5} {
		for range n {
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: st.Keys.Inbound(p), Values: []string{"e", "x"}})
		}
		// One read and acknowledged: the group's last delivered entry
		// moves, and Redis's lag (miniredis: the stream's length) is no
		// longer the answer.
		got, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.ConsumerGroup, Consumer: "w",
			Streams: []string{st.Keys.Inbound(p), ">"}, Count: 1, Block: -1}).Result()
		if err != nil {
			t.Fatal(err)
		}
		rdb.XAck(ctx, st.Keys.Inbound(p), keys.ConsumerGroup, got[0].Messages[0].ID)
	}
	r := newTestReporter(t, rdb, ReporterOptions{Prefix: "t", Kind: KindWorker, ID: "w1", Queues: true})
	if err := r.report(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, _ := rdb.HGet(ctx, r.Key(), FieldQueueWaiting).Result()
	if want := "2," + strconv.Itoa(QueueCountCap) + "+"; got != want {
		t.Errorf("%s = %q, want %q", FieldQueueWaiting, got, want)
	}
	rs, err := Read(ctx, rdb, "t")
	if err != nil || len(rs) != 1 {
		t.Fatalf("Read = %v, %v", rs, err)
	}
	if want := []Queue{{Waiting: 2}, {Waiting: QueueCountCap, AtLeast: true}}; !slices.Equal(rs[0].Queues, want) {
		t.Errorf("Queues = %+v, want %+v", rs[0].Queues, want)
	}
}

func TestRead(t *testing.T) {
	servers(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := t.Context()
		for _, o := range []ReporterOptions{
			{Kind: KindWorker, ID: "b"},
			{Kind: KindGateway, ID: "z"},
			{Kind: KindWorker, ID: "a"},
			{Kind: KindGateway, ID: "y"},
		} {
			o.Prefix = prefix
			if err := newTestReporter(t, rdb, o).report(ctx, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		keys := keys.New(prefix)
		// Keys that match the pattern but are no report are skipped.
		rdb.Set(ctx, keys.Stat("junk", "string"), "x", time.Minute)
		rdb.HSet(ctx, keys.Stat("junk", "hash"), "no", "kind")
		// Another farm's reports are not read.
		if err := newTestReporter(t, rdb, ReporterOptions{Prefix: prefix + "x", Kind: KindGateway, ID: "other"}).report(ctx, time.Now()); err != nil {
			t.Fatal(err)
		}
		rs, err := Read(ctx, rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.Kind+"/"+r.ID)
			if r.PID != os.Getpid() || r.Time.IsZero() || r.Started.IsZero() {
				t.Errorf("%s/%s: pid %d, time %v, started %v", r.Kind, r.ID, r.PID, r.Time, r.Started)
			}
		}
		want := []string{"gateway/y", "gateway/z", "worker/a", "worker/b"}
		if len(got) != len(want) {
			t.Fatalf("Read = %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("Read = %v, want %v", got, want)
			}
		}
	})
}

func TestReadEmpty(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{m.Addr()}})
	defer rdb.Close()
	rs, err := Read(t.Context(), rdb, "nobody")
	if err != nil || len(rs) != 0 {
		t.Fatalf("Read = %v, %v; want nothing", rs, err)
	}
}

func TestReporterRedisDown(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{m.Addr()}, MaxRetries: -1})
	defer rdb.Close()
	r := newTestReporter(t, rdb, ReporterOptions{Kind: KindGateway, ID: "g", Queues: true})
	m.Close()
	if err := r.report(t.Context(), time.Now()); err == nil {
		t.Fatal("report with Redis down: no error")
	}
}

func TestNewReporterRequires(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{m.Addr()}})
	defer rdb.Close()
	s := fakeSample(new(Histogram), 0)
	for _, o := range []ReporterOptions{
		{Kind: KindGateway, ID: "g", Sample: s},
		{Redis: rdb, ID: "g", Sample: s},
		{Redis: rdb, Kind: KindGateway, Sample: s},
		{Redis: rdb, Kind: KindGateway, ID: "g"},
	} {
		if _, err := NewReporter(o); err == nil {
			t.Errorf("NewReporter(%+v): no error", o)
		}
	}
	r, err := NewReporter(ReporterOptions{Redis: rdb, Kind: KindGateway, ID: "g", Sample: s, Interval: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.opts.TTL != 6*time.Second {
		t.Errorf("TTL with a 3s interval = %v, want 6s (twice the interval)", r.opts.TTL)
	}
}
