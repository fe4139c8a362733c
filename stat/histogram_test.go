package stat

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHistogramSnapshot(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{
		10 * time.Microsecond,  // first bucket (0.00005)
		50 * time.Microsecond,  // on a bound: that bucket
		2 * time.Millisecond,   // 0.0025
		30 * time.Second,       // +Inf
		-time.Millisecond,      // a clock step: first bucket, adds nothing to the sum
		100 * time.Millisecond, // 0.1
	} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 6 {
		t.Errorf("Count = %d, want 6", s.Count)
	}
	if want := 30.10206; math.Abs(s.Sum-want) > 1e-9 {
		t.Errorf("Sum = %v, want %v", s.Sum, want)
	}
	if len(s.Buckets) != len(Buckets) {
		t.Fatalf("%d buckets, want %d", len(s.Buckets), len(Buckets))
	}
	cum := map[float64]uint64{0.00005: 3, 0.001: 3, 0.0025: 4, 0.05: 4, 0.1: 5, 10: 5}
	for i, le := range Buckets {
		if want, ok := cum[le]; ok && s.Buckets[i] != want {
			t.Errorf("bucket le=%v = %d, want %d", le, s.Buckets[i], want)
		}
		if i > 0 && s.Buckets[i] < s.Buckets[i-1] {
			t.Errorf("buckets not cumulative at le=%v", le)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h Histogram
	if q := h.Snapshot().Quantile(0.5); !math.IsNaN(q) {
		t.Errorf("Quantile of an empty histogram = %v, want NaN", q)
	}
	for range 90 {
		h.Observe(300 * time.Microsecond) // 0.0005
	}
	for range 9 {
		h.Observe(20 * time.Millisecond) // 0.025
	}
	h.Observe(time.Minute) // +Inf
	s := h.Snapshot()
	// Interpolated inside the bucket the rank falls in: the rank's share
	// of the bucket's observations, between its lower and upper bound.
	tests := []struct {
		q    float64
		want float64
	}{
		{0, 0.00025},                    // the lower bound of the first bucket with observations
		{0.5, 0.00025 + 0.00025*50/90},  // rank 50 of the 90 in (0.25ms, 0.5ms]
		{0.9, 0.0005},                   // rank 90: the last of them
		{0.95, 0.01 + 0.015*5/9},        // rank 95: 5th of the 9 in (10ms, 25ms]
		{0.99, 0.025},                   // rank 99: the last of them
		{1, math.Inf(1)},                // past the last bound
		{math.NaN(), math.NaN()},        // no such quantile
		{2, math.Inf(1)}, {-1, 0.00025}, // clamped to 0..1
	}
	for _, tt := range tests {
		got := s.Quantile(tt.q)
		if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tt.want) > 1e-12 && got != tt.want) {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

// TestQuantileNearTruth: on evenly spread durations the estimates are
// near the true quantiles, not the upper bound of their bucket (2.5 ms
// for all three here, which `maple stat` used to show), and every
// estimate lies inside the bucket of the true value.
func TestQuantileNearTruth(t *testing.T) {
	var h Histogram
	const n = 10_000
	lo, hi := 300*time.Microsecond, 2*time.Millisecond
	for i := range n {
		h.Observe(lo + (hi-lo)*time.Duration(i)/n)
	}
	s := h.Snapshot()
	for _, tt := range []struct {
		q, tolerance float64 // tolerance: relative to the true value
	}{{0.5, 0.1}, {0.9, 0.25}, {0.99, 0.25}} {
		truth := (lo + time.Duration(tt.q*float64(hi-lo))).Seconds()
		got := s.Quantile(tt.q)
		if math.Abs(got-truth) > tt.tolerance*truth {
			t.Errorf("Quantile(%v) = %.3gs, want %.3gs within %v%%", tt.q, got, truth, 100*tt.tolerance)
		}
		if got > 0.0025 || got <= 0.001 {
			t.Errorf("Quantile(%v) = %v, outside the bucket (1ms, 2.5ms] of the true %v", tt.q, got, truth)
		}
	}
	if got := s.Quantile(0.5); got >= 0.0015 {
		t.Errorf("p50 = %v, want about 1.15ms (the bucket's upper bound is 2.5ms)", got)
	}
}

func TestSnapshotSub(t *testing.T) {
	var h Histogram
	for range 1000 {
		h.Observe(4 * time.Millisecond) // a slow start: (2.5ms, 5ms]
	}
	before := h.Snapshot()
	for range 500 {
		h.Observe(700 * time.Microsecond) // then fast: (0.5ms, 1ms]
	}
	after := h.Snapshot()
	w := after.Sub(before)
	if w.Count != 500 || w.Buckets[len(Buckets)-1] != 500 || math.Abs(w.Sum-0.35) > 1e-9 {
		t.Errorf("window = %+v, want the 500 fast ones (sum 0.35s)", w)
	}
	if p99 := w.Quantile(0.99); p99 <= 0.0005 || p99 > 0.001 {
		t.Errorf("p99 of the window = %v, want in (0.5ms, 1ms]", p99)
	}
	if p99 := after.Quantile(0.99); p99 <= 0.0025 {
		t.Errorf("p99 since start = %v, want in (2.5ms, 5ms]", p99)
	}
	// An earlier snapshot than prev (a restart): the later one as is.
	if got := before.Sub(after); got.Count != before.Count {
		t.Errorf("Sub of a later snapshot: Count %d, want %d", got.Count, before.Count)
	}
	if got := after.Sub(Snapshot{}); got.Count != after.Count {
		t.Errorf("Sub of an empty snapshot: Count %d, want %d", got.Count, after.Count)
	}
}

func TestBucketsRoundTrip(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{10 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, time.Minute} {
		h.Observe(d)
	}
	s := h.Snapshot()
	v := FormatBuckets(s)
	if want := "1,1,1,1,1,1,3,3,3,3,3,3,3,3,3,3,3,4"; v != want {
		t.Errorf("FormatBuckets = %q, want %q", v, want)
	}
	got, ok := ParseBuckets(v)
	if !ok || got.Count != s.Count || !slices.Equal(got.Buckets, s.Buckets) {
		t.Errorf("ParseBuckets(%q) = %+v, %v; want %+v", v, got, ok, s)
	}
	for _, bad := range []string{"", "1,2", "1,1,1,1,1,1,3,3,3,3,3,3,3,3,3,3,3", "1,1,1,1,1,1,3,3,3,3,3,3,3,3,3,3,2,4",
		"1,1,1,1,1,1,3,3,3,3,3,3,3,3,3,3,3,x", "1,1,1,1,1,1,3,3,3,3,3,3,3,3,3,3,3,4,5"} {
		if _, ok := ParseBuckets(bad); ok {
			t.Errorf("ParseBuckets(%q) accepted", bad)
		}
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				h.Observe(time.Millisecond)
			}
		})
	}
	for range 100 {
		if s := h.Snapshot(); s.Count > 8000 {
			t.Fatalf("Count = %d > observations", s.Count)
		}
	}
	wg.Wait()
	if s := h.Snapshot(); s.Count != 8000 || s.Buckets[len(Buckets)-1] != 8000 {
		t.Errorf("Count = %d, last bucket %d; want 8000", s.Count, s.Buckets[len(Buckets)-1])
	}
}
