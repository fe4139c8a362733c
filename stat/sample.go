package stat

// Type says how a Value behaves over time.
type Type uint8

const (
	// Counter only goes up while the process lives; its rate is the
	// difference between two samples. Its name ends in "_total".
	Counter Type = iota
	// Gauge is a level at the moment of the sample (connections open now).
	Gauge
)

// Value is one named number of a process.
type Value struct {
	// Name is snake_case and carries its unit, Prometheus style
	// ("frames_in_total", "connections"). It is the field of the stat
	// hash, and the Prometheus name after "maple_<kind>_".
	Name  string
	Help  string
	Type  Type
	Value int64
}

// Dist is a named latency histogram.
type Dist struct {
	// Name ends in "_seconds" ("request_duration_seconds"). The stat hash
	// gets its counts as <Name>_buckets (FormatBuckets), from which
	// `maple stat` estimates quantiles over the last interval, and
	// estimates since the process started as <Name>_p50 and <Name>_p99
	// (seconds, Snapshot.Quantile); Prometheus gets the whole histogram as
	// maple_<kind>_<Name>.
	Name     string
	Help     string
	Snapshot Snapshot
}

// Sample is a process's counters at one moment.
type Sample struct {
	Values []Value
	Dists  []Dist
}

// SampleFunc reads a process's counters. It is called once per report
// and once per Prometheus scrape, from any goroutine: it should only load
// atomics, so that counting costs nothing on the hot paths.
type SampleFunc func() Sample
