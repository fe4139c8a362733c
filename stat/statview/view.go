// Package statview is the viewer of `maple stat`: it reads the reports
// that every gateway and worker of a farm writes to Redis every second
// (package stat) and prints the whole farm as a table, live or once, or as
// JSON lines, with per-second rates and latency quantiles computed from
// successive reports.
package statview

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/stat"
)

// Options say what Run shows and where.
type Options struct {
	Prefix   string        // the farm's key prefix ("" means "maple")
	Out      io.Writer     // where the table or JSON goes
	JSON     bool          // one JSON object per snapshot and line instead of a table
	Once     bool          // one snapshot (two reads 1 s apart, for the rates), then return
	Interval time.Duration // time between snapshots when live (at least 100 ms)
}

// Run prints the farm's reports until ctx ends, or once (Options.Once). A
// live table on a terminal redraws in place.
func Run(ctx context.Context, rdb redis.UniversalClient, o Options) error {
	s := &statRunner{
		rdb: rdb, prefix: o.Prefix, out: o.Out, json: o.JSON,
		interval: max(o.Interval, 100*time.Millisecond), rates: newRateTracker(),
	}
	if o.Once {
		return s.once(ctx)
	}
	s.clear = statIsTTY(o.Out)
	return s.live(ctx)
}

// statRunner reads the farm's reports and prints them.
type statRunner struct {
	rdb      redis.UniversalClient
	prefix   string
	out      io.Writer
	json     bool
	clear    bool // clear the screen before each table: stdout is a terminal
	interval time.Duration
	rates    *rateTracker
}

// once prints one snapshot. Rates need two reports of each process: it
// reads again after a second, and a little longer for processes whose
// report had not changed yet (up to 3 s in all).
func (s *statRunner) once(ctx context.Context) error {
	rs, err := stat.Read(ctx, s.rdb, s.prefix)
	if err != nil {
		return err
	}
	s.rates.update(rs)
	if len(rs) > 0 {
		deadline := time.Now().Add(3 * time.Second)
		wait := time.Second
		for {
			if err := statSleep(ctx, wait); err != nil {
				return err
			}
			if rs, err = stat.Read(ctx, s.rdb, s.prefix); err != nil {
				return err
			}
			s.rates.update(rs)
			if s.rates.complete(rs) || time.Now().After(deadline) {
				break
			}
			wait = 200 * time.Millisecond
		}
	}
	return s.print(buildStatView(s.prefix, time.Now(), rs, s.rates))
}

// live prints a snapshot every interval until ctx ends.
func (s *statRunner) live(ctx context.Context) error {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		rs, err := stat.Read(ctx, s.rdb, s.prefix)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fmt.Fprintf(s.out, "maple stat: %v (retrying)\n", err)
		} else {
			s.rates.update(rs)
			if err := s.print(buildStatView(s.prefix, time.Now(), rs, s.rates)); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *statRunner) print(v farmView) error {
	if s.json {
		return writeStatJSON(s.out, v)
	}
	if s.clear {
		fmt.Fprint(s.out, "\x1b[H\x1b[2J") // cursor home, clear screen
	}
	writeStatTable(s.out, v)
	if !s.clear {
		fmt.Fprintln(s.out)
	}
	return nil
}

func statSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// statIsTTY reports whether w is a terminal (a character device).
func statIsTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// rateTracker turns successive reports into per-second rates of the
// counters (fields ending in "_total") and latency quantiles of the
// histograms (fields ending in "_buckets"). Both cover the window between
// a process's two last distinct reports (about a second: the reporters'
// interval), timed by the process's own clock, so when `maple stat` reads
// does not matter.
type rateTracker struct {
	last   map[string]stat.Report
	rates  map[string]map[string]float64
	quants map[string]map[string]float64
}

func newRateTracker() *rateTracker {
	return &rateTracker{last: make(map[string]stat.Report), rates: make(map[string]map[string]float64),
		quants: make(map[string]map[string]float64)}
}

func statKey(r stat.Report) string { return r.Kind + "/" + r.ID }

// update takes a new read of every report; processes gone are forgotten.
func (t *rateTracker) update(rs []stat.Report) {
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		k := statKey(r)
		seen[k] = true
		prev, ok := t.last[k]
		switch {
		case !ok || prev.PID != r.PID || prev.Host != r.Host || !prev.Started.Equal(r.Started):
			delete(t.rates, k) // new, or restarted under the same id: counters began again
			delete(t.quants, k)
		case r.Time.After(prev.Time):
			t.rates[k] = statCounterRates(prev, r)
			t.quants[k] = statWindowQuantiles(prev, r)
		default:
			continue // not reported again yet: keep the last rates
		}
		t.last[k] = r
	}
	for k := range t.last {
		if !seen[k] {
			delete(t.last, k)
			delete(t.rates, k)
			delete(t.quants, k)
		}
	}
}

// complete reports whether every process of rs has rates.
func (t *rateTracker) complete(rs []stat.Report) bool {
	for _, r := range rs {
		if t.rates[statKey(r)] == nil {
			return false
		}
	}
	return true
}

// of returns a process's rates; nil until two reports were seen.
func (t *rateTracker) of(r stat.Report) map[string]float64 { return t.rates[statKey(r)] }

// quantilesOf returns a process's quantile estimates over the window of
// its rates: <histogram>_p50 and _p99, in seconds, of each histogram that
// observed something in the window. nil until two reports were seen.
func (t *rateTracker) quantilesOf(r stat.Report) map[string]float64 { return t.quants[statKey(r)] }

// statWindowQuantiles estimates the median and 99th percentile of what
// each histogram of cur observed since prev.
func statWindowQuantiles(prev, cur stat.Report) map[string]float64 {
	out := make(map[string]float64)
	for f := range cur.Fields {
		name, ok := strings.CutSuffix(f, "_buckets")
		if !ok {
			continue
		}
		now, ok1 := cur.Dist(name)
		before, ok2 := prev.Dist(name)
		if !ok1 || !ok2 {
			continue
		}
		if w := now.Sub(before); w.Count > 0 {
			out[name+"_p50"] = w.Quantile(0.5)
			out[name+"_p99"] = w.Quantile(0.99)
		}
	}
	return out
}

func statCounterRates(prev, cur stat.Report) map[string]float64 {
	secs := cur.Time.Sub(prev.Time).Seconds()
	out := make(map[string]float64)
	for f := range cur.Fields {
		if !strings.HasSuffix(f, "_total") {
			continue
		}
		d := cur.Int(f) - prev.Int(f)
		out[f] = max(float64(d), 0) / secs
	}
	return out
}

// farmView is one snapshot of the farm, as printed; its JSON form is the
// output of --json.
type farmView struct {
	Prefix    string      `json:"prefix"`
	At        time.Time   `json:"at"`
	Processes []procView  `json:"processes"`
	Totals    totalsView  `json:"totals"`
	Queues    *queuesView `json:"queues,omitempty"`
}

// procView is one process.
type procView struct {
	Kind       string    `json:"kind"`
	ID         string    `json:"id"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	Started    int64     `json:"started"` // unix seconds
	Uptime     int64     `json:"uptime_seconds"`
	ReportedAt time.Time `json:"reported_at"`
	// Values are the counters and gauges ("frames_in_total", "connections").
	Values map[string]int64 `json:"values"`
	// Quantiles are latency quantiles in seconds
	// ("request_duration_seconds_p99") since the process started, as it
	// reported them: estimates, interpolated inside histogram buckets.
	Quantiles map[string]float64 `json:"quantiles,omitempty"`
	// RecentQuantiles are the same estimates over the window of Rates;
	// absent until two reports were seen, and for a histogram that
	// observed nothing in the window. The table's P99~ column.
	RecentQuantiles map[string]float64 `json:"recent_quantiles,omitempty"`
	// Rates are the counters per second; absent until two reports were seen.
	Rates map[string]float64 `json:"rates,omitempty"`
}

// totalsView adds the processes up. Rates cover the processes that have
// rates (RatesFrom of them).
type totalsView struct {
	Gateways    int   `json:"gateways"`
	Workers     int   `json:"workers"`
	Connections int64 `json:"connections"`
	InFlight    int64 `json:"inflight"`
	Busy        int64 `json:"busy"`   // frames answered -10002 since the gateways started
	Errors      int64 `json:"errors"` // see statErrors
	// Limits counts what clients ran into, by counter (statLimits), since
	// the processes started; only counters that are not zero.
	Limits map[string]int64 `json:"limits,omitempty"`
	// Per second.
	FramesIn  float64 `json:"frames_in_per_second"`
	FramesOut float64 `json:"frames_out_per_second"`
	BytesIn   float64 `json:"bytes_in_per_second"`
	BytesOut  float64 `json:"bytes_out_per_second"`
	BusyRate  float64 `json:"busy_per_second"`
	ErrorRate float64 `json:"errors_per_second"`
	Handled   float64 `json:"handled_per_second"`
	Failed    float64 `json:"failed_per_second"`
	RatesFrom int     `json:"rates_from"` // processes whose rates are known
	// Batching, over the last second: frames queued per gateway pipeline
	// and entries handled per worker read (0: no round trip).
	FramesPerPipeline float64 `json:"frames_per_pipeline"`
	HandledPerRead    float64 `json:"handled_per_read"`
	pipelines, reads  float64 // round trips per second
}

// queuesView is the newest report of the partition queues.
type queuesView struct {
	From string    `json:"from"` // worker id
	At   time.Time `json:"at"`
	// Lengths are the entries waiting in each partition's stream,
	// partition 0 first: not yet read by any worker (the consumer
	// group's lag). Entries read and acknowledged but not yet trimmed are
	// not counted; an entry is one gateway round trip's frames for the
	// partition, or one timer, job or operator frame.
	Lengths []int64 `json:"lengths"`
	// AtLeast lists the partitions whose length is a lower bound (a Redis
	// without consumer-group lag: counted up to stat.QueueCountCap).
	AtLeast []int `json:"at_least,omitempty"`
	Total   int64 `json:"total"`
	Max     int64 `json:"max"`
	MaxPart int   `json:"max_partition"`
	// Pending are the entries read by a worker and not acknowledged yet,
	// per partition, and their sum.
	Pending      []int64 `json:"pending"`
	PendingTotal int64   `json:"pending_total"`
}

// identity fields of a report, shown apart from its values.
var statIdentity = map[string]bool{
	stat.FieldKind: true, stat.FieldID: true, stat.FieldHost: true, stat.FieldPID: true,
	stat.FieldVersion: true, stat.FieldStarted: true, stat.FieldUptime: true, stat.FieldTime: true,
	stat.FieldQueues: true, stat.FieldQueueWaiting: true, stat.FieldQueuePending: true, stat.FieldQueuesAt: true,
}

// statErrors is the ERRORS column: what went wrong for the farm, not for a
// client or an operator.
var statErrors = map[string][]string{
	stat.KindGateway: {"redis_errors_total", "bad_frames_total"},
	stat.KindWorker:  {"failed_total", "dead_letters_total", "redis_errors_total"},
}

// statLimits are the counters of limits that clients hit
// (docs/operations.md, "Limits and abuse"), shown on the "limits" line
// under short names.
var statLimits = map[string][][2]string{
	stat.KindGateway: {
		{"over_inflight_total", "over-inflight"}, {"queue_bound_busy_total", "queue-bound"},
		{"redis_refused_total", "redis-refused"}, {"refused_total", "max-conns"},
		{"per_ip_refused_total", "per-ip"}, {"frame_timeouts_total", "frame-timeout"},
		{"partial_shed_total", "partial-budget"}, {"slow_closed_total", "slow-client"},
		{"idle_closed_total", "idle"}, {"bad_frames_total", "bad-frame"},
		{"oversize_out_total", "oversize-push"}, {"bad_triggers_total", "bad-trigger"},
	},
	stat.KindWorker: {
		{"closed_dropped_total", "closed-dropped"}, {"oversize_refused_total", "oversize-reply"},
		{"refused_writes_total", "redis-refused-write"},
	},
}

// buildStatView makes the snapshot to print from reports (sorted as stat.Read
// returns them) and their rates.
func buildStatView(prefix string, now time.Time, rs []stat.Report, rates *rateTracker) farmView {
	v := farmView{Prefix: prefix, At: now, Processes: []procView{}}
	for _, r := range rs {
		p := procView{
			Kind: r.Kind, ID: r.ID, Host: r.Host, PID: r.PID, Version: r.Version,
			Started: r.Started.Unix(), Uptime: int64(r.Uptime / time.Second), ReportedAt: r.Time,
			Values: make(map[string]int64), Rates: rates.of(r), RecentQuantiles: rates.quantilesOf(r),
		}
		if r.Started.IsZero() {
			p.Started = 0
		}
		for f, s := range r.Fields {
			if statIdentity[f] {
				continue
			}
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				p.Values[f] = n
			} else if x, ok := r.Float(f); ok {
				if p.Quantiles == nil {
					p.Quantiles = make(map[string]float64)
				}
				p.Quantiles[f] = x
			}
		}
		v.Processes = append(v.Processes, p)

		t := &v.Totals
		if p.Rates != nil {
			t.RatesFrom++
		}
		for _, l := range statLimits[r.Kind] {
			if n := p.Values[l[0]]; n != 0 {
				if t.Limits == nil {
					t.Limits = make(map[string]int64)
				}
				t.Limits[l[1]] += n
			}
		}
		errs := statSum(p.Values, statErrors[r.Kind])
		t.Errors += errs
		t.ErrorRate += statSumRates(p.Rates, statErrors[r.Kind])
		switch r.Kind {
		case stat.KindGateway:
			t.Gateways++
			t.Connections += p.Values["connections"]
			t.Busy += p.Values["busy_total"]
			t.FramesIn += p.Rates["frames_in_total"]
			t.FramesOut += p.Rates["frames_out_total"]
			t.BytesIn += p.Rates["bytes_in_total"]
			t.BytesOut += p.Rates["bytes_out_total"]
			t.BusyRate += p.Rates["busy_total"]
			t.pipelines += p.Rates["pipelines_total"]
		case stat.KindWorker:
			t.Workers++
			t.InFlight += p.Values["inflight"]
			t.Handled += p.Rates["handled_total"]
			t.Failed += p.Rates["failed_total"]
			t.reads += p.Rates["reads_total"]
		}
		if len(r.Queues) > 0 && (v.Queues == nil || r.QueuesAt.After(v.Queues.At)) {
			q := &queuesView{From: r.ID, At: r.QueuesAt,
				Lengths: make([]int64, len(r.Queues)), Pending: make([]int64, len(r.Queues))}
			for i, pq := range r.Queues {
				q.Lengths[i], q.Pending[i] = pq.Waiting, pq.Pending
				q.Total += pq.Waiting
				q.PendingTotal += pq.Pending
				if pq.AtLeast {
					q.AtLeast = append(q.AtLeast, i)
				}
				if pq.Waiting > q.Max {
					q.Max, q.MaxPart = pq.Waiting, i
				}
			}
			v.Queues = q
		}
	}
	if t := &v.Totals; t.pipelines > 0 {
		t.FramesPerPipeline = t.FramesIn / t.pipelines
	}
	if t := &v.Totals; t.reads > 0 {
		t.HandledPerRead = t.Handled / t.reads
	}
	return v
}

func statSum(m map[string]int64, names []string) int64 {
	var n int64
	for _, f := range names {
		n += m[f]
	}
	return n
}

func statSumRates(m map[string]float64, names []string) float64 {
	var n float64
	for _, f := range names {
		n += m[f]
	}
	return n
}

// writeStatJSON prints v as one line of JSON.
func writeStatJSON(w io.Writer, v farmView) error {
	return json.NewEncoder(w).Encode(v)
}

// statWidth is the widest line writeStatTable prints.
const statWidth = 100

// The table's columns: KIND ID HOST:PID UPTIME CONNS INFL IN/S OUT/S BUSY
// ERRORS P99~ (statLegend and the command's help explain them).
const statRow = "%-7s %-12s %-18s %6s %6s %6s %7s %7s %6s %6s %8s\n"

// statLegend follows every table: what each column, the queues line and
// the limits line mean (in full: `maple stat --help`).
var statLegend = []string{
	"gateway: CONNS = connections open; IN/S, OUT/S = frames from, to clients/s; BUSY = answered -10002",
	"         ERRORS = Redis errors + bad frames; P99~ = request time (frame read to reply handed over)",
	"worker:  INFL = frames and events read, not finished; IN/S = handled/s; P99~ = handler time;",
	"         ERRORS = failed + dead letters + Redis errors. BUSY, ERRORS: since start",
	"P99~:    99th percentile of the last second, an estimate inside histogram buckets; - = none seen",
	"queues:  entries no worker has read yet (consumer-group lag); * = the longest; + = at least",
	"limits:  clients that ran into a limit since start, by limit (docs/operations.md, Limits and abuse)",
}

// Help explains the table and its columns: the description of
// `maple stat --help`.
const Help = `Every gateway and worker reports its counters to Redis every second
(stat hashes that expire when it stops); maple stat reads them and prints
one row per process, totals, and what waits in the partition queues.

Columns:
   KIND, ID      gateway or worker, and its id (random, or from the gateway's
                 --id, the worker's --worker-id)
   HOST:PID      where it runs
   UPTIME        since the process started
   CONNS         gateways: client connections open now (workers: -)
   INFL          workers: frames and connection events read from the queues
                 and not finished yet (waiting for their connection's turn or
                 running); at most about 64 x --concurrency (gateways: -)
   IN/S          gateways: frames read from clients per second; workers:
                 frames and events handled per second
   OUT/S         gateways: frames written to clients per second (replies and
                 pushes; workers: -)
   BUSY          gateways: frames answered -10002 since start, for any reason
   ERRORS        since start; gateways: failed Redis calls + connections
                 closed for a malformed frame; workers: handler errors and
                 panics + dead letters + failed Redis calls
   P99~          the 99th percentile over the last second (the two last
                 reports of the process), of the request time at gateways
                 (frame read to its reply handed to the socket: Redis both
                 ways, queueing and the handler) and of the handler time at
                 workers. An estimate: histograms count durations in buckets
                 (50µs, 100µs, 250µs, 500µs, 1ms, 2.5ms ... 10s), and the
                 percentile is interpolated inside its bucket as if the
                 bucket's durations were spread evenly; the true value lies in
                 that bucket. <=50µs: in the first bucket, nothing finer is
                 known. >10s: past the last. -: nothing measured in that second
                 (idle), or only one report seen yet. --json gives p50 and p99
                 over the last second (recent_quantiles) and since the process
                 started (quantiles).
   rates (IN/S, OUT/S, totals) are over the same last second; - until two
   reports of a process were seen.

Lines under the table:
   total     the sums of the rows; batching: frames per gateway pipeline and
             frames handled per worker read (round trips saved)
   limits    clients that ran into a limit since start, by limit
             (docs/operations.md, "Limits and abuse")
   queues    what waits in the partition streams, as the newest worker
             report read it: entries no worker has read yet, per partition
             (pN:count), the consumer group's lag. An entry holds what one
             gateway round trip queued on that partition (one frame or
             hundreds), or one timer, periodic job or operator frame. Entries
             a worker read and acknowledged but that are not trimmed yet are
             not counted. "read, not acked": entries a worker took and is
             handling (or a dead worker held, until another takes them over).
             * marks the longest queue (a hot partition: one busy connection,
             or its worker is slow); + marks a count that is a lower bound
             (Redis before 7.0 and miniredis keep no lag: at most 1000 are
             counted).`

// writeStatTable prints v as a table at most statWidth columns wide.
func writeStatTable(w io.Writer, v farmView) {
	fmt.Fprintf(w, "maple stat  prefix %s  %s  %s, %s\n", v.Prefix, v.At.Format("2006-01-02 15:04:05"),
		statPlural(v.Totals.Gateways, "gateway"), statPlural(v.Totals.Workers, "worker"))
	if len(v.Processes) == 0 {
		fmt.Fprintf(w, "no process reports under prefix %q: is the farm running, on this Redis, with this --prefix?\n", v.Prefix)
		return
	}
	fmt.Fprintf(w, statRow, "KIND", "ID", "HOST:PID", "UPTIME", "CONNS", "INFL", "IN/S", "OUT/S", "BUSY", "ERRORS", "P99~")
	for _, p := range v.Processes {
		conns, infl, in, out, busy, p99 := "-", "-", "-", "-", "-", "-"
		switch p.Kind {
		case stat.KindGateway:
			conns = statCount(p.Values["connections"])
			in, out = statRate(p.Rates, "frames_in_total"), statRate(p.Rates, "frames_out_total")
			busy = statCount(p.Values["busy_total"])
			p99 = statSeconds(p.RecentQuantiles, "request_duration_seconds_p99")
		case stat.KindWorker:
			infl = statCount(p.Values["inflight"])
			in = statRate(p.Rates, "handled_total")
			p99 = statSeconds(p.RecentQuantiles, "handler_duration_seconds_p99")
		}
		fmt.Fprintf(w, statRow, statClip(p.Kind, 7), statClip(p.ID, 12), statClip(p.Host+":"+strconv.Itoa(p.PID), 18),
			statUptime(p.Uptime), conns, infl, in, out, busy, statCount(statSum(p.Values, statErrors[p.Kind])), p99)
	}
	t := v.Totals
	known := t.RatesFrom > 0
	perSec := func(v float64) string {
		if !known {
			return "-"
		}
		return statPerSec(v)
	}
	fmt.Fprintf(w, "total   gateways: %s conns, %s in/s, %s out/s, %s in, %s out, %s busy/s\n",
		statCount(t.Connections), perSec(t.FramesIn), perSec(t.FramesOut),
		statBytes(t.BytesIn, known), statBytes(t.BytesOut, known), perSec(t.BusyRate))
	fmt.Fprintf(w, "        workers: %s handled/s, %s failed/s, %s in flight; all: %s busy, %s errors, %s errors/s\n",
		perSec(t.Handled), perSec(t.Failed), statCount(t.InFlight), statCount(t.Busy), statCount(t.Errors), perSec(t.ErrorRate))
	ratio := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	fmt.Fprintf(w, "        batching: %s frames per gateway pipeline, %s handled per worker read\n",
		ratio(t.FramesPerPipeline), ratio(t.HandledPerRead))
	limits := "none hit"
	if len(t.Limits) > 0 {
		limits = ""
		for _, kind := range []string{stat.KindGateway, stat.KindWorker} {
			for _, l := range statLimits[kind] {
				if n := t.Limits[l[1]]; n != 0 {
					limits += fmt.Sprintf("%s %s  ", l[1], statCount(n))
				}
			}
		}
	}
	fmt.Fprintf(w, "limits  %s\n", strings.TrimSpace(limits))
	if q := v.Queues; q != nil {
		atLeast := make(map[int]bool, len(q.AtLeast))
		for _, i := range q.AtLeast {
			atLeast[i] = true
		}
		plus := func(i int) string {
			if atLeast[i] {
				return "+"
			}
			return ""
		}
		waiting := "none waiting"
		if q.Max > 0 {
			total := statCount(q.Total)
			if len(q.AtLeast) > 0 {
				total += "+"
			}
			waiting = fmt.Sprintf("%s entries waiting, longest p%d (%s%s)", total, q.MaxPart, statCount(q.Max), plus(q.MaxPart))
		}
		head := fmt.Sprintf("queues  %d partitions: %s; %s read, not acked", len(q.Lengths), waiting, statCount(q.PendingTotal))
		from := fmt.Sprintf("from worker %s, %s ago", statClip(q.From, 12), statAge(v.At.Sub(q.At)))
		if utf8.RuneCountInString(head)+3+utf8.RuneCountInString(from) <= statWidth {
			fmt.Fprintln(w, head+"   "+from)
		} else {
			fmt.Fprintln(w, head)
			fmt.Fprintln(w, "        "+from)
		}
		line := "       "
		for i, n := range q.Lengths {
			cell := fmt.Sprintf(" p%d:%s%s", i, statCount(n), plus(i))
			if n == q.Max && n > 0 {
				cell += "*"
			}
			if utf8.RuneCountInString(line)+utf8.RuneCountInString(cell) > statWidth {
				fmt.Fprintln(w, line)
				line = "       "
			}
			line += cell
		}
		fmt.Fprintln(w, line)
	} else {
		fmt.Fprintln(w, "queues  no worker reports the partition queues")
	}
	for _, l := range statLegend {
		fmt.Fprintln(w, l)
	}
}

func statPlural(n int, s string) string {
	if n == 1 {
		return "1 " + s
	}
	return strconv.Itoa(n) + " " + s + "s"
}

// statClip cuts s to n runes, marking the cut with "…".
func statClip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// statCount prints a count in at most 6 characters: 12345, 123k, 1.23M.
func statCount(n int64) string {
	if n < 100_000 && n > -100_000 {
		return strconv.FormatInt(n, 10)
	}
	return statSI(float64(n))
}

// statPerSec prints a rate: 0, 0.5, 12, 1234, 123k.
func statPerSec(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v < 100_000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return statSI(v)
}

// statRate prints the rate of a counter; "-" until two reports were seen.
func statRate(rates map[string]float64, name string) string {
	v, ok := rates[name]
	if !ok {
		return "-"
	}
	return statPerSec(v)
}

// statBytes prints a byte rate: 950 B/s, 1.07MB/s; "- B/s" when unknown.
func statBytes(v float64, known bool) string {
	if !known {
		return "- B/s"
	}
	if v < 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64) + " B/s"
	}
	return statSI(v) + "B/s"
}

// statSI prints v with 3 significant digits and a k, M, G or T suffix.
func statSI(v float64) string {
	units := []string{"", "k", "M", "G", "T"}
	i := 0
	for (v >= 999.5 || v <= -999.5) && i < len(units)-1 {
		v /= 1000
		i++
	}
	prec := 0
	switch a := max(v, -v); {
	case a < 9.995:
		prec = 2
	case a < 99.95:
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + units[i]
}

// statSeconds prints a latency estimate to 3 significant digits; "-" for
// none, "<=50µs" in the first bucket (nothing finer is known), ">10s" past
// the last.
func statSeconds(q map[string]float64, name string) string {
	v, ok := q[name]
	switch {
	case !ok || math.IsNaN(v):
		return "-"
	case v > stat.Buckets[len(stat.Buckets)-1]:
		return ">" + time.Duration(stat.Buckets[len(stat.Buckets)-1]*float64(time.Second)).String()
	case v <= stat.Buckets[0]:
		return "<=" + time.Duration(stat.Buckets[0]*float64(time.Second)).String()
	}
	unit, x := "s", v
	switch {
	case v < 0.0009995:
		unit, x = "µs", v*1e6
	case v < 0.9995:
		unit, x = "ms", v*1e3
	}
	prec := 0
	switch {
	case x < 9.995:
		prec = 2
	case x < 99.95:
		prec = 1
	}
	n := strconv.FormatFloat(x, 'f', prec, 64)
	if strings.Contains(n, ".") {
		n = strings.TrimRight(strings.TrimRight(n, "0"), ".")
	}
	return n + unit
}

// statUptime prints a duration in at most 6 characters: 45s, 2m03s, 3h04m, 5d03h.
func statUptime(secs int64) string {
	d := time.Duration(secs) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", secs)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", secs/60, secs%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", secs/3600, secs%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", secs/86400, secs%86400/3600)
}

// statAge prints how old a report is: 0.4s, 12s.
func statAge(d time.Duration) string {
	if d < 10*time.Second {
		return strconv.FormatFloat(max(d.Seconds(), 0), 'f', 1, 64) + "s"
	}
	return d.Round(time.Second).String()
}
