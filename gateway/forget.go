package gateway

import (
	"context"
	"sync"
	"time"
)

// Forgetting what this gateway left in Redis. Workers delete a
// connection's handled marks when they finish its close event, and the
// reaper deletes all of a gateway's keys when it dies; two cases are left
// to the gateway itself:
//
//   - A mark written after its connection's close was finished (a worker
//     that lost its lease flushed it late) stays for good: every
//     markGrace the gateway deletes the marks of connections that closed
//     long before, which no worker can still need.
//   - A cleanly stopped gateway is not reaped (it is not stale, it is
//     gone): once the workers finished what it queued, it forgets itself
//     the reaper's way, queue.Broker.ForgetGateway, the one owner of
//     forgetting a gateway.

// forgetWait bounds how long a stopping gateway waits for workers to
// finish its last envelopes before it forgets itself.
const forgetWait = 5 * time.Second

// markGrace is how long after a connection closed its handled mark may
// still be needed: by a worker that takes over an entry of its frames.
const markGrace = 10 * time.Minute

// closedConns lists the connections closed since the last sweep.
type closedConns struct {
	mu  sync.Mutex
	ids []closedConn
}

type closedConn struct {
	id string
	at time.Time
}

func (cc *closedConns) add(id string, at time.Time) {
	cc.mu.Lock()
	cc.ids = append(cc.ids, closedConn{id, at})
	cc.mu.Unlock()
}

// due removes and returns the connections closed before cut.
func (cc *closedConns) due(cut time.Time) []string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	n := 0
	for n < len(cc.ids) && cc.ids[n].at.Before(cut) {
		n++
	}
	out := make([]string, n)
	for i := range n {
		out[i] = cc.ids[i].id
	}
	cc.ids = append(cc.ids[:0], cc.ids[n:]...)
	return out
}

// forgetMarks deletes the handled marks of connections closed more than
// markGrace ago (most are gone already: deleting a missing field is a
// no-op), a thousand per round trip.
func (s *Server) forgetMarks(ctx context.Context, now time.Time) {
	ids := s.closedIDs.due(now.Add(-markGrace))
	for len(ids) > 0 {
		n := min(len(ids), 1000)
		pipe := s.rdb.Pipeline()
		s.q.ForgetHandled(ctx, pipe, s.opts.ID, ids[:n]...)
		if _, err := pipe.Exec(ctx); err != nil {
			s.log.Debug("forgetting old handled marks failed", "err", err)
			return
		}
		ids = ids[n:]
	}
}

// forgetSelf runs when the gateway stopped cleanly: it waits (up to wait)
// until workers finished every envelope it queued, its close events
// included, then deletes all it left in Redis. If they do not finish in
// time (no worker runs), its registry entry stays, goes stale, and the
// reaper of the first worker to come forgets it the same way.
func (s *Server) forgetSelf(wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait+2*time.Second)
	defer cancel()
	deadline := time.Now().Add(wait)
	if live, err := s.q.Alive(ctx, s.keys.Workers(), time.Now(), 10*time.Second); err != nil || len(live) == 0 {
		// No worker to finish them: the reaper forgets this gateway later.
		s.log.Info("no live worker: leaving this gateway's keys to the reaper", "err", err)
		return
	}
	for {
		n, err := s.q.Queued(ctx, s.opts.ID)
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.log.Warn("workers did not finish this gateway's last frames; the reaper will forget it", "queued", n, "err", err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.q.ForgetGateway(ctx, s.opts.ID); err != nil {
		s.log.Warn("could not forget this gateway in Redis; the reaper will", "err", err)
	}
}
