// Package stat holds the farm's own counters: a lock-free latency
// histogram used on hot paths, and the reporting of every process's
// counters to Redis for `maple stat`.
package stat

import (
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Buckets are the upper bounds, in seconds, of the latency histograms:
// from 50 µs to 10 s, roughly x2 apart. Fixed, so histograms of many
// processes add up.
var Buckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Histogram counts durations into Buckets. It is safe for concurrent use
// and costs a few atomic adds per observation.
type Histogram struct {
	counts [18]atomic.Uint64 // len(Buckets)+1: the last is +Inf
	sumNs  atomic.Uint64
	n      atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(Buckets) && s > Buckets[i] {
		i++
	}
	h.counts[i].Add(1)
	if d > 0 {
		h.sumNs.Add(uint64(d))
	}
	h.n.Add(1)
}

// Snapshot is a histogram's state at one moment.
type Snapshot struct {
	Count   uint64
	Sum     float64  // seconds
	Buckets []uint64 // cumulative count per bound of Buckets
}

// Snapshot returns the histogram's current state, in the cumulative form
// Prometheus uses.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Buckets: make([]uint64, len(Buckets))}
	var cum uint64
	for i := range Buckets {
		cum += h.counts[i].Load()
		s.Buckets[i] = cum
	}
	s.Count = cum + h.counts[len(Buckets)].Load()
	s.Sum = float64(h.sumNs.Load()) / 1e9
	return s
}

// Quantile estimates the q-quantile (0..1) of the observed durations, in
// seconds, the way Prometheus's histogram_quantile does: it finds the
// bucket the rank q x Count falls in and interpolates linearly between the
// bucket's lower bound (the bound below it; 0 for the first) and its upper
// bound, as if the bucket's observations were spread evenly across it. It
// is an estimate: the true quantile lies somewhere in that bucket, and for
// the first bucket all that is known is that it is at most Buckets[0].
// +Inf when the rank falls past the last bound; NaN when empty.
func (s Snapshot) Quantile(q float64) float64 {
	if s.Count == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * float64(s.Count)
	var below uint64 // observations in the buckets before this one
	lower := 0.0
	for i, c := range s.Buckets {
		if c > below && float64(c) >= rank {
			return lower + (Buckets[i]-lower)*(rank-float64(below))/float64(c-below)
		}
		below, lower = c, Buckets[i]
	}
	return math.Inf(1)
}

// Sub returns what was observed between prev and s (a later snapshot of
// the same histogram): the histogram of that window. A snapshot that is
// not later than prev (the process restarted) yields s itself.
func (s Snapshot) Sub(prev Snapshot) Snapshot {
	if s.Count < prev.Count || len(prev.Buckets) != len(s.Buckets) {
		return s
	}
	d := Snapshot{Count: s.Count - prev.Count, Sum: max(s.Sum-prev.Sum, 0), Buckets: make([]uint64, len(s.Buckets))}
	for i, c := range s.Buckets {
		if c < prev.Buckets[i] {
			return s
		}
		d.Buckets[i] = c - prev.Buckets[i]
	}
	return d
}

// FormatBuckets writes a snapshot's counts for a stat hash: the cumulative
// count of every bound of Buckets, then Count, comma separated. The sum is
// left out.
func FormatBuckets(s Snapshot) string {
	b := make([]byte, 0, 4*(len(s.Buckets)+1))
	for _, c := range s.Buckets {
		b = strconv.AppendUint(b, c, 10)
		b = append(b, ',')
	}
	return string(strconv.AppendUint(b, s.Count, 10))
}

// ParseBuckets reads what FormatBuckets wrote; ok is false unless it has a
// count for every bound of Buckets and Count, never decreasing.
func ParseBuckets(v string) (s Snapshot, ok bool) {
	parts := strings.Split(v, ",")
	if len(parts) != len(Buckets)+1 {
		return Snapshot{}, false
	}
	s.Buckets = make([]uint64, len(Buckets))
	var prev uint64
	for i, p := range parts {
		c, err := strconv.ParseUint(p, 10, 64)
		if err != nil || c < prev {
			return Snapshot{}, false
		}
		prev = c
		if i < len(Buckets) {
			s.Buckets[i] = c
		} else {
			s.Count = c
		}
	}
	return s, true
}
