package bench

import (
	"math"
	"math/bits"
	"time"
)

// histogram counts durations in log-linear buckets: exact below 256 ns,
// then 128 buckets per power of two, so a bucket is under 0.8% wide.
// Durations of 2^40 ns (18 minutes) and more share the last bucket.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxBits = 40
	histBuckets = (histMaxBits-histSubBits)*histSub + histSub
)

func histIndex(d time.Duration) int {
	v := uint64(max(d, 0))
	shift := bits.Len64(v) - (histSubBits + 1)
	if shift <= 0 {
		return int(v)
	}
	i := shift*histSub + int(v>>uint(shift))
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i.
func histValue(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	shift := i/histSub - 1
	lo := uint64(i-shift*histSub) << uint(shift)
	return time.Duration(lo + (uint64(1)<<uint(shift))/2)
}

func (h *histogram) record(d time.Duration) {
	h.counts[histIndex(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0..1), never above max; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var cum uint64
	for i, n := range h.counts {
		cum += n
		if cum >= rank {
			return min(histValue(i), h.max)
		}
	}
	return h.max
}
