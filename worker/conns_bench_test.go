package worker

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
)

// BenchmarkFrameBookkeeping measures what a worker does per frame besides
// the handler and Redis: admit the envelope behind its connection's, take
// it as a runner does, drop copies by sequence number, and finish it
// (handled mark, acknowledgement). Its cost must not grow with the number
// of connections the worker serves: a worker once scanned every
// connection it knew on each frame when that number was a multiple of
// 1,024.
//
//	go test ./worker -run X -bench FrameBookkeeping -count 6 | benchstat -col /conns -
func BenchmarkFrameBookkeeping(b *testing.B) {
	for _, n := range []int{1000, 1024, 4096, 10000} {
		b.Run("conns="+strconv.Itoa(n), func(b *testing.B) {
			w, err := New(NewApp(), Options{Redis: &redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}}})
			if err != nil {
				b.Fatal(err)
			}
			w.build(nil, nil, nil, 1, false)
			w.table.add(0)
			dp := w.dispatch
			conns := make([]string, n)
			seqs := make([]uint64, n)
			for i := range conns {
				conns[i] = fmt.Sprintf("gw-%d", i)
			}
			frame := box.Append(nil, 1, 0, 1, []byte("hi"))
			ds := make([]queue.Delivery, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := i % n
				seqs[c]++
				d := &ds[i%len(ds)]
				*d = queue.Delivery{Part: 0, ID: strconv.Itoa(i), Count: 1, Deliveries: 1,
					Env: queue.Envelope{Kind: queue.Kind(Frame), Seq: seqs[c], Gateway: "gw", Conn: conns[c], Frame: frame}}
				dp.mu.Lock()
				dp.admitLocked(d)
				q := dp.runnable[0]
				dp.runnable = dp.runnable[1:]
				it := q.items[0]
				q.items = q.items[1:]
				q.running = false
				delete(dp.queues, q.key)
				dp.mu.Unlock()
				if w.marks.duplicate(*it.d) {
					b.Fatal("a new frame taken for a copy")
				}
				dp.finish(it, finished)
				if i%1024 == 1023 {
					w.outbox.take(nil) // the writer's part is per batch: not measured
				}
			}
		})
	}
}
