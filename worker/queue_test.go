package worker

import (
	"testing"

	"github.com/maple-farm/maple/internal/queue"
)

// TestQueueValues: the worker's public constants spell values of the
// queue machinery, which its API does not expose.
func TestQueueValues(t *testing.T) {
	for _, c := range []struct {
		k Kind
		q queue.Kind
	}{{Frame, queue.KindFrame}, {Open, queue.KindOpen}, {Close, queue.KindClose}, {System, queue.KindSystem}, {Job, queue.KindJob}} {
		if byte(c.k) != byte(c.q) || c.k.String() != c.q.String() {
			t.Errorf("Kind %d %q, the envelope's %d %q", c.k, c.k, c.q, c.q)
		}
	}
	if DefaultWriteBudget != queue.DefaultWriteBudget {
		t.Errorf("DefaultWriteBudget %d, the queue's %d", DefaultWriteBudget, queue.DefaultWriteBudget)
	}
}
