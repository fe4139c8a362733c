package statview

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/store/storetest"
)

func init() {
	// -update rewrites golden files; another test file may define it first.
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata/")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	v, _ := f.Value.(flag.Getter).Get().(bool)
	return v
}

var statT0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// fakeReport is a report written at t, its process started at statT0-uptime0.
func fakeReport(t *testing.T, kind, id string, at time.Time, fields map[string]string) stat.Report {
	t.Helper()
	started := statT0.Add(-2 * time.Hour)
	f := map[string]string{
		"kind": kind, "id": id, "host": "farm-" + kind[:1] + "1", "pid": "4242", "version": "v0.5.0",
		"started": strconv.FormatInt(started.Unix(), 10),
		"uptime":  strconv.FormatInt(int64(at.Sub(started)/time.Second), 10),
		"time":    strconv.FormatInt(at.UnixMilli(), 10),
	}
	maps.Copy(f, fields)
	r, err := stat.ParseReport(f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeBuckets is the _buckets field of a histogram with n[le]
// observations in the bucket of upper bound le (math.Inf(1): past the
// last).
func fakeBuckets(n map[float64]uint64) string {
	var s stat.Snapshot
	for _, le := range stat.Buckets {
		s.Count += n[le]
		s.Buckets = append(s.Buckets, s.Count)
	}
	s.Count += n[math.Inf(1)]
	return stat.FormatBuckets(s)
}

// farmReports returns two reads of a farm of two gateways and two workers,
// one second apart by the processes' clocks.
func farmReports(t *testing.T) (first, second []stat.Report) {
	t1, t2 := statT0.Add(time.Second), statT0.Add(2*time.Second)
	// The gateways were slow before (1,000,000 requests in (2.5ms, 5ms]:
	// a p99 of 5 ms since start); in the last second 12,000 took (0.5ms,
	// 1ms] and 345 (1ms, 2.5ms]: a p99 of about 1.96 ms.
	gwSlow := map[float64]uint64{0.005: 1_000_000}
	gwNow := map[float64]uint64{0.005: 1_000_000, 0.001: 12_000, 0.0025: 345}
	gw := func(id string, at time.Time, in, out, busy, redisErrs int64, lat map[float64]uint64) stat.Report {
		return fakeReport(t, stat.KindGateway, id, at, map[string]string{
			"connections": "15230", "frames_in_total": strconv.FormatInt(in, 10),
			"frames_out_total": strconv.FormatInt(out, 10), "bytes_in_total": strconv.FormatInt(in*40, 10),
			"bytes_out_total": strconv.FormatInt(out*60, 10), "busy_total": strconv.FormatInt(busy, 10),
			"redis_errors_total": strconv.FormatInt(redisErrs, 10), "bad_frames_total": "1",
			"pipelines_total":              strconv.FormatInt(in/50, 10),
			"request_duration_seconds_p50": "0.001", "request_duration_seconds_p99": "0.0025",
			"request_duration_seconds_buckets": fakeBuckets(lat),
		})
	}
	wk := func(id string, at time.Time, handled int64, lat map[float64]uint64, waiting, pending string) stat.Report {
		f := map[string]string{
			"handled_total": strconv.FormatInt(handled, 10), "failed_total": "3", "dead_letters_total": "0",
			"redis_errors_total": "0", "inflight": "12", "partitions": "8",
			"reads_total":                  strconv.FormatInt(handled/100, 10),
			"handler_duration_seconds_p50": "0.0001", "handler_duration_seconds_p99": "0.00025",
			"handler_duration_seconds_buckets": fakeBuckets(lat),
		}
		if waiting != "" {
			f["queue_waiting"], f["queue_pending"] = waiting, pending
			f["queues_at"] = strconv.FormatInt(at.Add(-300*time.Millisecond).UnixMilli(), 10)
		}
		return fakeReport(t, stat.KindWorker, id, at, f)
	}
	const none = "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"
	first = []stat.Report{
		gw("3f9a1c2b7d4e", t1, 1_000_000, 990_000, 10, 0, gwSlow),
		gw("gateway-with-a-long-name", t1, 500_000, 500_000, 0, 2, gwSlow),
		wk("a1b2c3d4e5f6", t1, 700_000, map[float64]uint64{0.00005: 700_000}, none, none),
		wk("b7c8d9e0f1a2", t1, 790_000, map[float64]uint64{0.00005: 790_000}, "0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0", none),
	}
	second = []stat.Report{
		gw("3f9a1c2b7d4e", t2, 1_012_345, 1_002_000, 10, 0, gwNow),
		// This one's histogram saw nothing in the last second.
		gw("gateway-with-a-long-name", t2, 506_000, 505_900, 7, 2, gwSlow),
		// This worker's second report has the older queues. Its handlers
		// all took at most 50 µs.
		wk("a1b2c3d4e5f6", t2, 709_000, map[float64]uint64{0.00005: 709_000}, none, none),
		// 9,300 handled: 9,000 under 50 µs, 300 in (100µs, 250µs].
		wk("b7c8d9e0f1a2", t2.Add(500*time.Millisecond), 799_300, map[float64]uint64{0.00005: 799_000, 0.00025: 300},
			"0,2,0,0,0,0,0,0,0,0,0,4211,0,0,0,1000+", "0,1,0,0,0,0,0,0,0,0,0,12,0,0,0,0"),
	}
	return first, second
}

func TestStatRates(t *testing.T) {
	first, second := farmReports(t)
	rt := newRateTracker()
	rt.update(first)
	if rt.complete(first) {
		t.Fatal("rates complete after one read")
	}
	rt.update(second)
	if !rt.complete(second) {
		t.Fatal("rates incomplete after two reads")
	}
	tests := []struct {
		r    stat.Report
		name string
		want float64
	}{
		{second[0], "frames_in_total", 12345},
		{second[0], "frames_out_total", 12000},
		{second[0], "bytes_in_total", 12345 * 40},
		{second[1], "busy_total", 7},
		{second[3], "handled_total", 9300 / 1.5}, // its reports are 1.5 s apart
	}
	for _, tt := range tests {
		if got := rt.of(tt.r)[tt.name]; got != tt.want {
			t.Errorf("%s %s rate = %v, want %v", tt.r.ID, tt.name, got, tt.want)
		}
	}
	if _, ok := rt.of(second[0])["connections"]; ok {
		t.Error("a gauge got a rate")
	}
	// A read with no newer report keeps the rates; a restart (same id,
	// another pid) drops them until two reports of the new process.
	rt.update(second)
	if rt.of(second[0])["frames_in_total"] != 12345 {
		t.Error("rates lost on a read without new reports")
	}
	restarted := fakeReport(t, stat.KindGateway, second[0].ID, statT0.Add(3*time.Second),
		map[string]string{"pid": "999", "frames_in_total": "5"})
	rt.update([]stat.Report{restarted})
	if rt.of(restarted) != nil {
		t.Error("rates across a restart")
	}
	if len(rt.last) != 1 {
		t.Errorf("tracker holds %d processes, want 1 (others are gone)", len(rt.last))
	}
}

func TestStatTable(t *testing.T) {
	first, second := farmReports(t)
	rt := newRateTracker()
	rt.update(first)
	rt.update(second)
	now := statT0.Add(3 * time.Second)
	var buf bytes.Buffer
	writeStatTable(&buf, buildStatView("maple", now, second, rt))
	checkGolden(t, "stat_table.golden", buf.Bytes())
	// What the golden file shows, checked apart: the table tells the truth.
	table := buf.String()
	for _, want := range []string{
		// p99 over the last second, interpolated (the client measures
		// about 2 ms), not the bucket bound since start (5 ms).
		"2h00m  15230      -   12345   12000     10      1   1.96ms\n",
		// A worker's in-flight envelopes are not connections.
		"     -     12    9000       -      -      3   <=50µs\n", "     -     12    6200       -      -      3    204µs\n",
		"KIND    ID           HOST:PID           UPTIME  CONNS   INFL    IN/S   OUT/S   BUSY ERRORS     P99~\n",
		// The queues: entries waiting, not stream lengths; the longest
		// marked and explained; a lower bound marked.
		"16 partitions: 5213+ entries waiting, longest p11 (4211); 13 read, not acked",
		" p11:4211* ", " p15:1000+\n",
		"* = the longest", "+ = at least", "INFL = frames and events read, not finished", "an estimate",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "5ms ") {
		t.Errorf("table shows a bucket bound since start as p99:\n%s", table)
	}

	// Before rates: dashes. No processes: a hint.
	buf.Reset()
	rt = newRateTracker()
	rt.update(first)
	writeStatTable(&buf, buildStatView("maple", now, first, rt))
	writeStatTable(&buf, buildStatView("other", now, nil, rt))
	checkGolden(t, "stat_table_first.golden", buf.Bytes())
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	for i, line := range strings.Split(string(got), "\n") {
		if n := utf8.RuneCountInString(line); n > statWidth {
			t.Errorf("line %d is %d columns wide (> %d): %q", i+1, n, statWidth, line)
		}
	}
	path := filepath.Join("testdata", name)
	if updateGolden() {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// statJSON is what a script reading `maple stat --json` relies on.
type statJSON struct {
	Prefix    string `json:"prefix"`
	Processes []struct {
		Kind      string             `json:"kind"`
		ID        string             `json:"id"`
		Host      string             `json:"host"`
		PID       int                `json:"pid"`
		Uptime    int64              `json:"uptime_seconds"`
		Values    map[string]int64   `json:"values"`
		Quantiles map[string]float64 `json:"quantiles"`
		Recent    map[string]float64 `json:"recent_quantiles"`
		Rates     map[string]float64 `json:"rates"`
	} `json:"processes"`
	Totals struct {
		Gateways    int     `json:"gateways"`
		Workers     int     `json:"workers"`
		Connections int64   `json:"connections"`
		FramesIn    float64 `json:"frames_in_per_second"`
		Handled     float64 `json:"handled_per_second"`
		Busy        int64   `json:"busy"`
		Errors      int64   `json:"errors"`
		RatesFrom   int     `json:"rates_from"`
		PerPipeline float64 `json:"frames_per_pipeline"`
	} `json:"totals"`
	Queues *struct {
		From         string  `json:"from"`
		Lengths      []int64 `json:"lengths"`
		AtLeast      []int   `json:"at_least"`
		Total        int64   `json:"total"`
		Max          int64   `json:"max"`
		MaxPart      int     `json:"max_partition"`
		Pending      []int64 `json:"pending"`
		PendingTotal int64   `json:"pending_total"`
	} `json:"queues"`
}

func TestStatJSON(t *testing.T) {
	first, second := farmReports(t)
	rt := newRateTracker()
	rt.update(first)
	rt.update(second)
	var buf bytes.Buffer
	if err := writeStatJSON(&buf, buildStatView("maple", statT0.Add(3*time.Second), second, rt)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("JSON output has %d lines, want 1", n)
	}
	var v statJSON
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Processes) != 4 || v.Processes[0].Kind != "gateway" || v.Processes[3].ID != "b7c8d9e0f1a2" {
		t.Fatalf("processes = %+v", v.Processes)
	}
	p := v.Processes[0]
	if p.Host != "farm-g1" || p.PID != 4242 || p.Uptime != 7202 || p.Values["connections"] != 15230 ||
		p.Quantiles["request_duration_seconds_p99"] != 0.0025 || p.Rates["frames_in_total"] != 12345 {
		t.Errorf("gateway = %+v", p)
	}
	if _, ok := p.Values["kind"]; ok {
		t.Error("identity fields among the values")
	}
	tt := v.Totals
	if tt.Gateways != 2 || tt.Workers != 2 || tt.Connections != 30460 || tt.FramesIn != 18345 ||
		tt.Handled != 9000+6200 || tt.Busy != 17 || tt.Errors != 2+2+3+3 || tt.RatesFrom != 4 {
		t.Errorf("totals = %+v", tt)
	}
	// 18345 frames in, 246+120 pipelines (in/50, rounded down per gateway).
	if got, want := v.Totals.PerPipeline, 18345.0/366; math.Abs(got-want) > 1e-9 {
		t.Errorf("frames per pipeline = %v, want %v", got, want)
	}
	if q := v.Queues; q == nil || q.From != "b7c8d9e0f1a2" || len(q.Lengths) != 16 || q.Max != 4211 || q.MaxPart != 11 {
		t.Errorf("queues = %+v, want the newest report's", v.Queues)
	} else if q.Total != 2+4211+1000 || !slices.Equal(q.AtLeast, []int{15}) || q.PendingTotal != 13 || len(q.Pending) != 16 || q.Pending[11] != 12 {
		t.Errorf("queues = %+v, want 5213 waiting (p15 at least 1000), 13 read and not acknowledged", q)
	}
	// Latency over the last second, interpolated: rank 12,221.55 of
	// 12,345, the 221.55th of the 345 in (1ms, 2.5ms]; the gateway that
	// measured nothing in that second has none.
	if got, want := v.Processes[0].Recent["request_duration_seconds_p99"], 0.001+0.0015*(0.99*12345-12000)/345; math.Abs(got-want) > 1e-12 {
		t.Errorf("gateway recent p99 = %v, want %v", got, want)
	}
	if r := v.Processes[1].Recent; len(r) != 0 {
		t.Errorf("recent quantiles of a gateway that measured nothing = %v, want none", r)
	}
	if got := v.Processes[3].Recent["handler_duration_seconds_p50"]; got <= 0 || got > 0.00005 {
		t.Errorf("worker recent p50 = %v, want in the first bucket", got)
	}
}

// TestStatOnceJSON runs the viewer of `maple stat --once --json` against reporters on
// miniredis.
func TestStatOnceJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a second or two")
	}
	m := storetest.Mini(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{m.Addr()}})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var handled stat.Histogram
	n := int64(0)
	for _, o := range []stat.ReporterOptions{
		{Kind: stat.KindGateway, ID: "g1", Sample: func() stat.Sample {
			return stat.Sample{Values: []stat.Value{{Name: "connections", Type: stat.Gauge, Value: 2}}}
		}},
		{Kind: stat.KindWorker, ID: "w1", Queues: true, Sample: func() stat.Sample {
			n += 100 // 100 per report, a report every 100 ms: 1000/s
			handled.Observe(time.Millisecond)
			return stat.Sample{
				Values: []stat.Value{{Name: "handled_total", Value: n}},
				Dists:  []stat.Dist{{Name: "handler_duration_seconds", Snapshot: handled.Snapshot()}},
			}
		}},
	} {
		o.Redis, o.Prefix, o.Interval = rdb, "t", 100*time.Millisecond
		r, err := stat.NewReporter(o)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	time.Sleep(150 * time.Millisecond)

	var out bytes.Buffer
	start := time.Now()
	if err := Run(t.Context(), rdb, Options{Prefix: "t", Out: &out, JSON: true, Once: true}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Second || d > 4*time.Second {
		t.Errorf("--once took %v, want about 1s (two reads 1s apart)", d)
	}
	var v statJSON
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	if len(v.Processes) != 2 || v.Processes[0].ID != "g1" || v.Processes[1].ID != "w1" {
		t.Fatalf("processes = %+v", v.Processes)
	}
	if r := v.Processes[1].Rates["handled_total"]; r < 900 || r > 1100 {
		t.Errorf("handled rate = %v, want about 1000/s", r)
	}
	if q := v.Queues; q == nil || len(q.Lengths) != 16 {
		t.Errorf("queues = %+v, want 16 partitions", v.Queues)
	}
	if v.Totals.Connections != 2 {
		t.Errorf("connections = %d, want 2", v.Totals.Connections)
	}
}

func TestStatFormats(t *testing.T) {
	tests := []struct{ got, want string }{
		{statCount(0), "0"},
		{statCount(99_999), "99999"},
		{statCount(123_456), "123k"},
		{statCount(1_234_567), "1.23M"},
		{statCount(999_999_999), "1.00G"},
		{statPerSec(0), "0"},
		{statPerSec(0.25), "0.2"},
		{statPerSec(12.4), "12"},
		{statPerSec(250_000), "250k"},
		{statBytes(512, true), "512 B/s"},
		{statBytes(12_345_678, true), "12.3MB/s"},
		{statBytes(1, false), "- B/s"},
		{statUptime(45), "45s"},
		{statUptime(123), "2m03s"},
		{statUptime(3*3600 + 4*60 + 5), "3h04m"},
		{statUptime(5*86400 + 3*3600), "5d03h"},
		{statSeconds(map[string]float64{"x": 0.00005}, "x"), "<=50µs"}, // the first bucket: no finer
		{statSeconds(map[string]float64{"x": 0.0000495}, "x"), "<=50µs"},
		{statSeconds(map[string]float64{"x": 0.0000501}, "x"), "50.1µs"},
		{statSeconds(map[string]float64{"x": 0.000123456}, "x"), "123µs"},
		{statSeconds(map[string]float64{"x": 0.0009996}, "x"), "1ms"},
		{statSeconds(map[string]float64{"x": 0.0019634}, "x"), "1.96ms"},
		{statSeconds(map[string]float64{"x": 0.0025}, "x"), "2.5ms"},
		{statSeconds(map[string]float64{"x": 0.0246}, "x"), "24.6ms"},
		{statSeconds(map[string]float64{"x": 0.2461}, "x"), "246ms"},
		{statSeconds(map[string]float64{"x": 1}, "x"), "1s"},
		{statSeconds(map[string]float64{"x": 9.876}, "x"), "9.88s"},
		{statSeconds(map[string]float64{"x": math.NaN()}, "x"), "-"},
		{statSeconds(map[string]float64{"x": math.Inf(1)}, "x"), ">10s"},
		{statSeconds(nil, "x"), "-"},
		{statClip("abcdef", 6), "abcdef"},
		{statClip("abcdefg", 6), "abcde…"},
		{statAge(400 * time.Millisecond), "0.4s"},
		{statAge(-time.Second), "0.0s"},
		{statAge(83 * time.Second), "1m23s"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}
