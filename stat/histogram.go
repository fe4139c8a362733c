// Package stat holds the farm's own counters: a lock-free latency
// histogram used on hot paths, and the reporting of every process's
// counters to Redis for `maple stat`.
package stat

import (
	"math"
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

// Quantile estimates the q-quantile (0..1) from the buckets: the upper
// bound of the bucket it falls in. NaN when empty.
func (s Snapshot) Quantile(q float64) float64 {
	if s.Count == 0 {
		return math.NaN()
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	for i, c := range s.Buckets {
		if c >= rank {
			return Buckets[i]
		}
	}
	return math.Inf(1)
}
