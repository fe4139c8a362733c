package stat

import (
	"math"
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
	tests := []struct {
		q    float64
		want float64
	}{
		{0.5, 0.0005}, {0.9, 0.0005}, {0.95, 0.025}, {0.99, 0.025}, {1, math.Inf(1)},
	}
	for _, tt := range tests {
		if got := s.Quantile(tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
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
