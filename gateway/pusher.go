package gateway

import (
	"context"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/retry"
	"github.com/maple-farm/maple/internal/stages"
)

// pushItem is one envelope on its way to Redis.
type pushItem struct {
	c     *conn
	env   []byte
	frame bool // a client frame (refusable), not an open/close event
	kind  queue.Kind
	// always: queued even at the queue bound (events, and a connection's
	// only frame in flight).
	always bool
	cmd    int32
	sn     uint32
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
	// idle: the pusher found the queue empty and waits for a signal. The
	// push that ends the wait sets woke, for handOff.
	idle bool
	woke atomic.Bool
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
	if q.idle {
		q.idle = false
		q.woke.Store(true)
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
	q.idle = len(items) == 0
	return items, q.done && len(items) == 0
}

// handOff lets the pusher, if a push since the last call ended its wait,
// run at once on the calling goroutine's thread: the event loop calls it
// once it has handed over a read. Signalled from the loop, the pusher
// would wait for the Go scheduler to wake another thread to take it,
// about 30 µs of a 1 x 1 round trip on a 2-core machine
// (docs/benchmarks.md); yielding runs it here, and the loop goes on as
// soon as the pusher has sent its pipeline and waits on the network. A
// busy pusher is not waiting for a signal: no yield.
func (q *pushQueue) handOff() {
	if q.woke.Load() && q.woke.Swap(false) {
		runtime.Gosched()
	}
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

// requeue puts events back at the front of the queue, before what came
// meanwhile (the close events of a batch Redis refused).
func (q *pushQueue) requeue(items []pushItem) {
	if len(items) == 0 {
		return
	}
	q.mu.Lock()
	q.items = append(slices.Clone(items), q.items...)
	q.mu.Unlock()
}

// runPusher moves queued envelopes to the partition streams: everything
// that piled up since the last round trip goes in one pipeline, as one
// stream entry (a bundle) per partition, within WriteBudget bytes (more
// is sent in several round trips). When Redis fails it retries with
// backoff, while the loops keep queueing up to the backlog and answer
// -10002 past it. An entry Redis refuses for its content (out of memory,
// or anything a retry would meet again) is not retried: its frames are
// answered -10002. It returns after finish, once the queue is empty, or
// when ctx ends.
func (s *Server) runPusher(ctx context.Context) {
	p := &pusher{s: s, log: s.log.With("duty", "pusher"), byPart: make(map[int]int), bundles: make(map[int][]byte)}
	var spare []pushItem
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
		// Cut the items into round trips of at most WriteBudget bytes.
		for start := 0; start < len(items); {
			end, size := start, 0
			for end < len(items) && (end == start || size+len(items[end].env) <= s.opts.WriteBudget) {
				size += len(items[end].env)
				end++
			}
			if !p.push(ctx, items[start:end]) {
				return
			}
			start = end
		}
		clear(items)
		spare = items
	}
}

// pusher is runPusher's state between round trips.
type pusher struct {
	s       *Server
	log     *slog.Logger
	byPart  map[int]int
	queued  int64          // this gateway's frames in the queues, as of the last round trip
	bundles map[int][]byte // each partition's bundle buffer, reused
}

// push sends items (within the byte budget) in one round trip, retrying
// through Redis failures; false if ctx ended first.
func (p *pusher) push(ctx context.Context, items []pushItem) bool {
	s := p.s
	// Group by partition, keeping each connection's order.
	clear(p.byPart)
	var batches []queue.PartBatch
	var owners [][]*pushItem
	for i := range items {
		it := &items[i]
		j, ok := p.byPart[it.c.part]
		if !ok {
			j = len(batches)
			p.byPart[it.c.part] = j
			batches = append(batches, queue.PartBatch{Part: it.c.part, Bundle: p.bundles[it.c.part]})
			owners = append(owners, nil)
		}
		batches[j].Envelopes = append(batches[j].Envelopes, it.env)
		batches[j].Always = append(batches[j].Always, it.always)
		owners[j] = append(owners[j], it)
	}
	backoff := retry.New(10*time.Millisecond, time.Second)
	for len(batches) > 0 {
		s.Stats.Pipelines.Add(1)
		stages.Mark("gw.push")
		err := s.q.EnqueueCached(ctx, s.opts.ID, batches, s.opts.QueueBound, &p.queued)
		// Answer what Redis refused; it is not sent again.
		kept := 0
		for j, b := range batches {
			if b.Refused != nil {
				p.refused(b, owners[j])
				continue
			}
			batches[kept], owners[kept] = b, owners[j]
			kept++
		}
		batches, owners = batches[:kept], owners[:kept]
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			p.log.Error("stopped with frames not queued", "n", len(items), "err", err)
			return false
		}
		s.Stats.RedisErrs.Add(1)
		p.log.Error("redis push failed, retrying", "n", len(items), "err", err, "backoff", backoff.Delay())
		backoff.Wait(ctx)
	}
	for j, b := range batches {
		if cap(b.Bundle) <= 1<<20 {
			p.bundles[b.Part] = b.Bundle
		}
		for k, ok := range b.Accepted {
			if !ok {
				it := owners[j][k]
				s.Stats.Busy.Add(1)
				s.Stats.QueueBoundBusy.Add(1)
				s.limit.Warn("queue bound", "frames queued and not finished at --queue-bound: frame answered -10002",
					"conn", it.c.id, "queued", p.queued, "bound", s.opts.QueueBound)
				it.c.inflight.Add(-1)
				it.c.owed.Add(-1)
				it.c.peer.send(busyAnswer(it.cmd, it.sn))
			}
		}
	}
	return true
}

// refused answers the frames of an entry Redis refused -10002 (not
// queued), and puts its close events back in the queue: a worker must
// learn that a connection ended. Open events are dropped (logged): the
// frames after them are answered or run as usual.
func (p *pusher) refused(b queue.PartBatch, owners []*pushItem) {
	s := p.s
	var closes []pushItem
	frames, opens := 0, 0
	for _, it := range owners {
		switch {
		case it.frame:
			frames++
			s.Stats.Busy.Add(1)
			s.Stats.RedisRefused.Add(1)
			it.c.inflight.Add(-1)
			it.c.owed.Add(-1)
			it.c.peer.send(busyAnswer(it.cmd, it.sn))
		case it.kind == queue.KindClose:
			closes = append(closes, *it)
		default:
			opens++
		}
	}
	s.queue.requeue(closes)
	s.limit.Error("redis refused", "redis refused an entry: its frames answered -10002", "partition", b.Part,
		"frames", frames, "closes_retried", len(closes), "opens_dropped", opens, "bytes", queue.BundleSize(b.Envelopes), "err", b.Refused)
}
