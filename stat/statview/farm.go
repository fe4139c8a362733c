package statview

// The farm view: what one snapshot of the reports says, per process and in
// total, as the table and the JSON lines show it.

import (
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/maple-farm/maple/stat"
)

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
