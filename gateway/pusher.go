package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/store"
)

// pushItem is one envelope on its way to Redis.
type pushItem struct {
	c     *conn
	env   []byte
	frame bool // a client frame (refusable), not an open/close event
	cmd   int32
	sn    uint32
}

// pushQueue hands envelopes from the event loops to the pusher without
// blocking the loops. Frames are bounded (the backlog); open and close
// events are not, so a worker always learns that a connection ended.
type pushQueue struct {
	mu     sync.Mutex
	items  []pushItem
	frames int
	max    int
	done   bool
	signal chan struct{}
}

func newPushQueue(max int) *pushQueue {
	return &pushQueue{max: max, signal: make(chan struct{}, 1)}
}

func (q *pushQueue) push(it pushItem) bool {
	q.mu.Lock()
	if it.frame && q.frames >= q.max {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, it)
	if it.frame {
		q.frames++
	}
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return true
}

// take swaps out everything queued. It returns done=true once finish was
// called and the queue is empty.
func (q *pushQueue) take(spare []pushItem) (items []pushItem, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, q.items = q.items, spare[:0]
	q.frames = 0
	return items, q.done && len(items) == 0
}

func (q *pushQueue) finish() {
	q.mu.Lock()
	q.done = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *pushQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// runPusher moves queued envelopes to the partition streams: everything
// that piled up since the last round trip goes in one pipeline, as one
// stream entry (a bundle) per partition. When Redis
// fails it retries the same batch with backoff, while the loops keep
// queueing up to the backlog and answer -10002 past it. It returns after
// finish, once the queue is empty, or when ctx ends.
func (s *Server) runPusher(ctx context.Context) {
	log := s.log.With("duty", "pusher")
	var spare []pushItem
	byPart := make(map[int]int)
	var queued int64                // this gateway's frames in the queues, as of the last round trip
	bundles := make(map[int][]byte) // each partition's bundle buffer, reused
	for {
		items, done := s.queue.take(spare)
		if done {
			return
		}
		if len(items) == 0 {
			spare = items // take swapped our spare in; keep this one
			select {
			case <-s.queue.signal:
			case <-ctx.Done():
				return
			}
			continue
		}
		// Group by partition, keeping each connection's order.
		clear(byPart)
		var batches []store.PartBatch
		var owners [][]*pushItem
		for i := range items {
			it := &items[i]
			j, ok := byPart[it.c.part]
			if !ok {
				j = len(batches)
				byPart[it.c.part] = j
				batches = append(batches, store.PartBatch{Part: it.c.part, Bundle: bundles[it.c.part]})
				owners = append(owners, nil)
			}
			batches[j].Envelopes = append(batches[j].Envelopes, it.env)
			owners[j] = append(owners[j], it)
		}
		backoff := 10 * time.Millisecond
		for {
			s.Stats.Pipelines.Add(1)
			err := s.st.EnqueueCached(ctx, s.opts.ID, batches, s.opts.QueueBound, &queued)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				log.Error("stopped with frames not queued", "n", len(items), "err", err)
				return
			}
			s.Stats.RedisErrs.Add(1)
			log.Error("redis push failed, retrying", "n", len(items), "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
		}
		for j, b := range batches {
			if cap(b.Bundle) <= 1<<20 {
				bundles[b.Part] = b.Bundle
			}
			for k, ok := range b.Accepted {
				if !ok {
					it := owners[j][k]
					s.Stats.Busy.Add(1)
					it.c.owed.Add(-1)
					it.c.peer.send(box.Append(nil, it.cmd, box.RetBusy, it.sn, nil))
				}
			}
		}
		clear(items)
		spare = items
	}
}
