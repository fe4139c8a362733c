package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// marks is what this worker knows of the connections it serves: the last
// envelope it handled of each (its handled mark), to drop copies of
// envelopes already done, and the user a handler here logged in. Copies
// come from a gateway that resends a batch, and from entries taken over
// from a worker that died: for those, learn first reads the handled marks
// that worker wrote to Redis (the outbox writes this worker's).
type marks struct {
	q     *queue.Broker
	stats *Stats
	log   *slog.Logger
	parts int

	mu      sync.Mutex
	lastSeq map[string]seqMark // by connection
}

// seqMark is what a worker remembers of a connection it served.
type seqMark struct {
	seq    uint64 // last envelope handled, to drop resent copies
	closed time.Time
	uid    string // user logged in by a handler on this worker
}

type marksParams struct {
	queue      *queue.Broker
	stats      *Stats
	log        *slog.Logger
	partitions int
}

func newMarks(p marksParams) *marks {
	return &marks{q: p.queue, stats: p.stats, log: p.log, parts: p.partitions, lastSeq: make(map[string]seqMark)}
}

// duplicate reports whether d is a copy of an envelope this worker already
// handled; if not, d is the connection's last one from now on.
func (m *marks) duplicate(d queue.Delivery) bool {
	if d.Env.Conn == "" || d.Env.Seq == 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.lastSeq[d.Env.Conn]
	if ok && d.Env.Seq <= s.seq {
		return true
	}
	s.seq = d.Env.Seq
	if d.Env.Kind == queue.KindClose {
		s.closed = time.Now()
	}
	m.lastSeq[d.Env.Conn] = s
	return false
}

// learn reads the handled marks of the connections in ds that this worker
// may not know all about: those it has not seen since it took their
// partition, and those of redelivered entries, which another worker may
// have partly done. duplicate then drops what is done.
func (m *marks) learn(ctx context.Context, ds []queue.Delivery) {
	var qs []queue.HandledQuery
	var at map[string]int     // gateway -> its query
	var asked map[string]bool // made on the first connection to ask for: most reads have none
	m.mu.Lock()
	for _, d := range ds {
		c := d.Env.Conn
		if c == "" || d.Env.Gateway == "" || asked[c] {
			continue
		}
		if _, known := m.lastSeq[c]; d.Deliveries <= 1 && (known || d.Env.Seq <= 1) {
			continue // seen here, or new: nothing of it can be done elsewhere
		}
		if asked == nil {
			at, asked = make(map[string]int), make(map[string]bool)
		}
		asked[c] = true
		i, ok := at[d.Env.Gateway]
		if !ok {
			i = len(qs)
			at[d.Env.Gateway] = i
			qs = append(qs, queue.HandledQuery{Gateway: d.Env.Gateway})
		}
		qs[i].Conns = append(qs[i].Conns, c)
	}
	m.mu.Unlock()
	if len(qs) == 0 {
		return
	}
	if err := m.q.HandledSeqs(ctx, qs); err != nil {
		// Run them anyway: a frame run twice beats a frame lost.
		m.stats.RedisErrs.Add(1)
		m.log.Warn("could not read handled marks; redelivered frames may run twice", "err", err)
		return
	}
	m.mu.Lock()
	for _, q := range qs {
		for i, c := range q.Conns {
			if s := m.lastSeq[c]; q.Seqs[i] > s.seq {
				s.seq = q.Seqs[i]
				m.lastSeq[c] = s
			}
		}
	}
	m.mu.Unlock()
}

// forgetClosedAfter is how long a closed connection's sequence mark is
// kept: a copy of its events cannot arrive that late.
const forgetClosedAfter = time.Minute

// forgetClosed drops the marks of connections closed a while ago. The
// janitor calls it now and then: it scans every connection, so it must not
// run per frame.
func (m *marks) forgetClosed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	cut := time.Now().Add(-forgetClosedAfter)
	for id, s := range m.lastSeq {
		if !s.closed.IsZero() && s.closed.Before(cut) {
			delete(m.lastSeq, id)
		}
	}
}

// forgetPartition drops what the worker remembers of partition p's
// connections: that is the next owner's business now, and if p comes back,
// the handled marks in Redis tell what happened meanwhile.
func (m *marks) forgetPartition(p int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for conn := range m.lastSeq {
		if queue.PartitionOf(conn, m.parts) == p {
			delete(m.lastSeq, conn)
		}
	}
}

// setUID remembers a connection's user on this worker, for frames of that
// connection queued before its gateway learnt of the login.
func (m *marks) setUID(conn, uid string) {
	m.mu.Lock()
	s := m.lastSeq[conn]
	s.uid = uid
	m.lastSeq[conn] = s
	m.mu.Unlock()
}

// uidOf returns the user a handler here logged conn in as, or "".
func (m *marks) uidOf(conn string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastSeq[conn].uid
}
