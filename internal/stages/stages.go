// Package stages records when a request passes each step of the farm, for
// scripts/stages.sh: where a 1 x 1 round trip spends its time, step by
// step, across the processes (docs/benchmarks.md, "Hand-offs by yield").
//
// It is off unless MAPLE_STAGES names a file prefix when the process
// starts; then each process appends "<unix ns> <step>" lines to
// <prefix>.<pid>, written every half second. Off, Mark is one comparison.
// The clock is the wall clock (CLOCK_REALTIME, the same in every process
// on a machine), so the files of the gateway, the worker and the bench
// merge into one timeline.
package stages

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"
)

var prefix = os.Getenv("MAPLE_STAGES")

type mark struct {
	at   int64
	step string
}

var (
	mu      sync.Mutex
	pending []mark
	start   sync.Once
)

// Mark records that a request reached step now.
func Mark(step string) {
	if prefix == "" {
		return
	}
	at := time.Now().UnixNano()
	mu.Lock()
	pending = append(pending, mark{at, step})
	mu.Unlock()
	start.Do(func() { go write() })
}

// write appends what was marked to the process's file, every half second,
// for as long as the process lives.
func write() {
	f, err := os.Create(fmt.Sprintf("%s.%d", prefix, os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "stages:", err)
		return
	}
	w := bufio.NewWriter(f)
	for {
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		ms := pending
		pending = nil
		mu.Unlock()
		for _, m := range ms {
			fmt.Fprintf(w, "%d %s\n", m.at, m.step)
		}
		_ = w.Flush()
	}
}
