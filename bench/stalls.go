package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// stallBucket is the resolution of Result.Stalls.
const stallBucket = time.Millisecond

// stalls remembers, per stallBucket of send time, when the last request
// sent in it was answered (offsets from the run's start, +1 so that 0
// means none). From that, for any instant, the last answer to a request
// sent before it: how long the farm kept players waiting after a worker
// was killed or a gateway rolled at that instant.
type stalls struct {
	lastAnswer []atomic.Int64
}

func newStalls(span time.Duration) *stalls {
	return &stalls{lastAnswer: make([]atomic.Int64, span/stallBucket+1)}
}

// answered records that a request sent at offset sent was answered at
// offset at.
func (s *stalls) answered(sent, at time.Duration) {
	if s == nil {
		return
	}
	i := int(sent / stallBucket)
	if i < 0 || i >= len(s.lastAnswer) {
		return
	}
	b := &s.lastAnswer[i]
	for v := int64(at) + 1; ; {
		cur := b.Load()
		if cur >= v || b.CompareAndSwap(cur, v) {
			return
		}
	}
}

// after returns how long after offset mark the last request sent before
// it was answered (0 if all were answered by then).
func (s *stalls) after(mark time.Duration) time.Duration {
	last := time.Duration(0)
	n := min(int(mark/stallBucket)+1, len(s.lastAnswer))
	for i := 0; i < n; i++ {
		if v := time.Duration(s.lastAnswer[i].Load() - 1); v > last {
			last = v
		}
	}
	return max(0, last-mark)
}

// ReadMarks reads instants from a file, one per line, in unix seconds
// with a fraction (what `date +%s.%N` prints). Blank lines are skipped.
func ReadMarks(path string) ([]time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []time.Time
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		sec, frac, _ := strings.Cut(line, ".")
		s, err := strconv.ParseInt(sec, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %q is not unix seconds", path, i+1, line)
		}
		ns := int64(0)
		if frac != "" {
			frac = (frac + "000000000")[:9]
			if ns, err = strconv.ParseInt(frac, 10, 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %q is not unix seconds", path, i+1, line)
			}
		}
		out = append(out, time.Unix(s, ns))
	}
	return out, nil
}
