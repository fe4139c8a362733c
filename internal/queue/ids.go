package queue

import (
	"strconv"
	"strings"
)

// NextID returns the smallest stream id greater than id, for trimming
// everything up to and including id.
func NextID(id string) string {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return id
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return id
	}
	if n == ^uint64(0) { // the sequence is full: the next id is the next millisecond's first
		m, err := strconv.ParseUint(ms, 10, 64)
		if err != nil || m == ^uint64(0) {
			return id
		}
		return strconv.FormatUint(m+1, 10) + "-0"
	}
	return ms + "-" + strconv.FormatUint(n+1, 10)
}

// CompareIDs orders two stream ids: -1, 0 or 1.
func CompareIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	x, _ := strconv.ParseUint(am, 10, 64)
	y, _ := strconv.ParseUint(bm, 10, 64)
	if x != y {
		if x < y {
			return -1
		}
		return 1
	}
	x, _ = strconv.ParseUint(as, 10, 64)
	y, _ = strconv.ParseUint(bs, 10, 64)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}
