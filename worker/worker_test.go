package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store/storetest"
)

var farmLog = flag.Bool("farm.log", false, "show the logs of the workers and gateways the tests start")

func testLogger() *slog.Logger {
	if *farmLog {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// eachBackend runs f against a real redis-server and against miniredis.
func eachBackend(t *testing.T, f func(t *testing.T, ro *redis.UniversalOptions)) {
	t.Run("redis", func(t *testing.T) {
		srv := storetest.Start(t, storetest.Options{})
		f(t, &redis.UniversalOptions{Addrs: []string{srv.Addr}})
	})
	t.Run("miniredis", func(t *testing.T) {
		m := storetest.Mini(t)
		f(t, &redis.UniversalOptions{Addrs: []string{m.Addr()}})
	})
}

// testFarm is an in-process farm on one Redis under a prefix of its own.
type testFarm struct {
	t      *testing.T
	ro     *redis.UniversalOptions
	prefix string
	parts  int
}

func newTestFarm(t *testing.T, ro *redis.UniversalOptions, parts int) *testFarm {
	return &testFarm{t: t, ro: ro, prefix: storetest.Prefix(t), parts: parts}
}

// store returns a Store of the farm on a client of its own.
func (f *testFarm) store() *queue.Broker {
	rdb := redis.NewUniversalClient(f.ro)
	f.t.Cleanup(func() { rdb.Close() })
	return queue.New(rdb, f.prefix)
}

// gateway starts a gateway; it stops when the test ends.
func (f *testFarm) gateway() *gateway.Server {
	f.t.Helper()
	gw, err := gateway.New(gateway.Options{Listen: "127.0.0.1:0", Redis: f.ro, Prefix: f.prefix,
		Partitions: f.parts, Logger: testLogger()})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.t.Errorf("gateway stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			f.t.Error("gateway did not stop in 15s")
		}
	})
	select {
	case <-gw.Ready():
	case err := <-done:
		f.t.Fatalf("gateway did not start: %v", err)
	case <-time.After(10 * time.Second):
		f.t.Fatal("gateway did not start in 10s")
	}
	return gw
}

// runningWorker is a worker the test can stop before the test ends.
type runningWorker struct {
	*Worker
	stop func() error // cancels Run's ctx and returns what Run returned
}

// worker starts a worker of app and waits until it has taken its first
// partitions; it stops when the test ends, or earlier with stop.
func (f *testFarm) worker(app *App, mod func(*Options)) *runningWorker {
	f.t.Helper()
	o := Options{Redis: f.ro, Prefix: f.prefix, Partitions: f.parts, Logger: testLogger()}
	if mod != nil {
		mod(&o)
	}
	w, err := New(app, o)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(15 * time.Second):
				runErr = errors.New("Run did not return 15s after its ctx was cancelled")
			}
		})
		return runErr
	}
	f.t.Cleanup(func() {
		if err := stop(); err != nil {
			f.t.Errorf("worker %s stopped with %v", w.ID(), err)
		}
	})
	select {
	case <-w.Ready():
	case err := <-done:
		f.t.Fatalf("worker did not start: %v", err)
	case <-time.After(10 * time.Second):
		f.t.Fatal("worker did not start in 10s")
	}
	return &runningWorker{Worker: w, stop: stop}
}

func (f *testFarm) dial(gw *gateway.Server) *client.Conn {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, gw.Addr().String(), client.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConnectionsRunInParallel(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const conns = 8
		const nap = 300 * time.Millisecond
		var running, most atomic.Int32
		app := NewApp()
		app.Route(1, func(ctx context.Context, r *Request) error {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			select {
			case <-time.After(nap):
			case <-ctx.Done():
				return ctx.Err()
			}
			return r.Reply(r.Box.Body)
		})
		f := newTestFarm(t, ro, 16)
		gw := f.gateway()
		f.worker(app, nil)
		cs := make([]*client.Conn, conns)
		for i := range cs {
			cs[i] = f.dial(gw)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		start := time.Now()
		errs := make(chan error, conns)
		for i, c := range cs {
			go func() {
				body := []byte(strconv.Itoa(i))
				b, err := c.Request(ctx, 1, body)
				if err == nil && (b.Ret != 0 || string(b.Body) != string(body)) {
					err = fmt.Errorf("conn %d: reply ret %d body %q", i, b.Ret, b.Body)
				}
				errs <- err
			}()
		}
		for range cs {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		t.Logf("%d requests of %v on %d connections took %v; at most %d at once", conns, nap, conns, took, most.Load())
		if took >= 2*time.Second {
			t.Errorf("%d sleeping requests on %d connections took %v, want well under %v (not run in parallel)",
				conns, conns, took, conns*nap)
		}
		if most.Load() < 2 {
			t.Errorf("at most %d handlers ran at once, want several", most.Load())
		}
	})
}

func TestConnectionFramesRunInOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const conns, frames = 4, 25
		var mu sync.Mutex
		seen := make(map[string][]int)      // conn id -> bodies in the order handled
		busy := make(map[string]bool)       // conn id -> a handler is running
		var overlaps, parallel atomic.Int32 // same-conn overlaps; cross-conn concurrency seen
		var running atomic.Int32
		app := NewApp()
		app.Route(1, func(ctx context.Context, r *Request) error {
			mu.Lock()
			if busy[r.Conn.ID] {
				overlaps.Add(1)
			}
			busy[r.Conn.ID] = true
			mu.Unlock()
			if running.Add(1) > 1 {
				parallel.Add(1)
			}
			time.Sleep(3 * time.Millisecond) // leave room for an overlap to show
			running.Add(-1)
			n, _ := strconv.Atoi(string(r.Box.Body))
			mu.Lock()
			seen[r.Conn.ID] = append(seen[r.Conn.ID], n)
			busy[r.Conn.ID] = false
			mu.Unlock()
			return r.Reply(r.Box.Body)
		})
		f := newTestFarm(t, ro, 16)
		gw := f.gateway()
		f.worker(app, nil)

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for i := 0; i < conns; i++ {
			c := f.dial(gw)
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Pipelined: every frame is sent before any reply comes.
				for sn := uint32(1); sn <= frames; sn++ {
					if err := c.Send(1, sn, []byte(strconv.Itoa(int(sn)))); err != nil {
						t.Error(err)
						return
					}
				}
				for want := uint32(1); want <= frames; want++ {
					select {
					case b := <-c.Pushes():
						// Replies to one connection keep the order of its requests.
						if b.SN != want || b.Ret != 0 || string(b.Body) != strconv.Itoa(int(want)) {
							t.Errorf("conn %d: reply sn %d ret %d body %q, want sn %d", i, b.SN, b.Ret, b.Body, want)
						}
					case <-ctx.Done():
						t.Errorf("conn %d: %d of %d replies", i, want-1, frames)
						return
					}
				}
			}()
		}
		wg.Wait()
		if n := overlaps.Load(); n != 0 {
			t.Errorf("%d frames ran while a frame of the same connection was running", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != conns {
			t.Errorf("handled frames of %d connections, want %d", len(seen), conns)
		}
		for id, got := range seen {
			for i, n := range got {
				if n != i+1 {
					t.Errorf("conn %s: frames handled in order %v, want 1..%d", id, got, frames)
					break
				}
			}
			if len(got) != frames {
				t.Errorf("conn %s: %d frames handled, want %d", id, len(got), frames)
			}
		}
		t.Logf("cross-connection concurrency observed %d times", parallel.Load())
	})
}

// owners returns the worker id of each partition's lease ("" if free).
func owners(t *testing.T, st *queue.Broker, parts int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	out := make([]string, parts)
	for p := range out {
		v, err := st.Client().Get(ctx, st.Keys.Owner(p)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("owner of partition %d: %v", p, err)
		}
		out[p] = v
	}
	return out
}

func TestSecondWorkerTakesPartitions(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const parts = 8
		f := newTestFarm(t, ro, parts)
		lease := func(o *Options) { o.Lease = time.Second }
		w1 := f.worker(NewApp(), lease)
		waitFor(t, 5*time.Second, "the first worker to take every partition", func() bool {
			return w1.Stats.Partitions.Load() == parts
		})
		w2 := f.worker(NewApp(), lease)
		var p1, p2 int64
		waitFor(t, 8*time.Second, "the partitions to be shared", func() bool {
			p1, p2 = w1.Stats.Partitions.Load(), w2.Stats.Partitions.Load()
			return p1 > 0 && p2 > 0 && p1+p2 == parts
		})
		t.Logf("partitions: %s has %d, %s has %d", w1.ID(), p1, w2.ID(), p2)
		// Redis agrees: every partition is leased, by one of the two.
		st := f.store()
		waitFor(t, 3*time.Second, "the leases in Redis to match", func() bool {
			n1, n2 := 0, 0
			for _, o := range owners(t, st, parts) {
				switch o {
				case w1.ID():
					n1++
				case w2.ID():
					n2++
				}
			}
			return n1 > 0 && n2 > 0 && n1+n2 == parts
		})
	})
}

func TestStopReleasesLeases(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const parts = 8
		f := newTestFarm(t, ro, parts)
		st := f.store()
		// A lease long enough that a key left behind would still be there
		// when it is checked.
		lease := func(o *Options) { o.Lease = 5 * time.Second }
		app := NewApp()
		app.Route(1, replyWith("ok"))
		w1 := f.worker(app, lease)
		w2 := f.worker(app, lease)
		waitFor(t, 10*time.Second, "the partitions to be shared", func() bool {
			p1, p2 := w1.Stats.Partitions.Load(), w2.Stats.Partitions.Load()
			return p1 > 0 && p2 > 0 && p1+p2 == parts
		})

		start := time.Now()
		if err := w2.stop(); err != nil {
			t.Fatalf("stopping the second worker: Run returned %v", err)
		}
		t.Logf("second worker stopped in %v", time.Since(start))
		for p, o := range owners(t, st, parts) {
			if o == w2.ID() {
				t.Errorf("partition %d is still leased by the stopped worker", p)
			} else if o != "" && o != w1.ID() {
				t.Errorf("partition %d is leased by unknown worker %q", p, o)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := st.Client().ZScore(ctx, st.Keys.Workers(), w2.ID()).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("stopped worker still in the registry (err %v)", err)
		}
		// The other worker takes the rest without waiting for leases to expire.
		waitFor(t, 3*time.Second, "the first worker to take every partition", func() bool {
			return w1.Stats.Partitions.Load() == parts
		})

		if err := w1.stop(); err != nil {
			t.Fatalf("stopping the first worker: Run returned %v", err)
		}
		for p, o := range owners(t, st, parts) {
			if o != "" {
				t.Errorf("partition %d still leased by %q after every worker stopped", p, o)
			}
		}
	})
}

// TestStopGivesUpLeasesItDoesNotList: a lease under a stopping worker's
// name that its table does not list (a take whose reply the shutdown cut
// short, after Redis had run it) is given up too, so that partition's
// players do not wait out the lease.
func TestStopGivesUpLeasesItDoesNotList(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const parts = 4
		f := newTestFarm(t, ro, parts)
		st := f.store()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		// Partition 3 is held by a worker of an older release (no
		// liveness), whose lease is respected.
		if ok, err := st.AcquireLease(ctx, 3, "older", time.Minute); err != nil || !ok {
			t.Fatalf("AcquireLease = %v, %v", ok, err)
		}
		app := NewApp()
		app.Route(1, replyWith("ok"))
		w := f.worker(app, func(o *Options) { o.Lease = time.Minute })
		waitFor(t, 10*time.Second, "the worker to take the free partitions", func() bool {
			return w.Stats.Partitions.Load() == parts-1
		})
		// Its take of partition 3 reached Redis; the reply never came.
		if err := st.Client().Set(ctx, st.Keys.Owner(3), w.ID(), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := w.stop(); err != nil {
			t.Fatalf("stopping the worker: Run returned %v", err)
		}
		for p, o := range owners(t, st, parts) {
			if o != "" {
				t.Errorf("partition %d still leased by %q after its worker stopped", p, o)
			}
		}
	})
}

func TestDuplicateEnvelopeHandledOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const parts = 4
		app, ran := recordingApp(func(r *Request) []byte { return nil })
		f := newTestFarm(t, ro, parts)
		w := f.worker(app, nil)
		st := f.store()

		const conn = "gwx-1"
		p := queue.PartitionOf(conn, parts)
		env := func(seq uint64, body string) []byte {
			e := queue.Envelope{Kind: queue.Kind(Frame), Seq: seq, At: time.Now().UnixNano(), Gateway: "gwx", Conn: conn,
				Addr: "127.0.0.1:9", Frame: box.Append(nil, 1, 0, uint32(seq), []byte(body))}
			return queue.AppendEnvelope(nil, &e)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		enqueue := func(envs ...[]byte) {
			t.Helper()
			b := queue.PartBatch{Part: p}
			for _, e := range envs {
				b.Envelopes = append(b.Envelopes, e)
			}
			if err := st.Enqueue(ctx, "gwx", []queue.PartBatch{b}, 0); err != nil {
				t.Fatal(err)
			}
		}
		// A gateway resends a batch whose outcome it did not learn: the
		// frame with seq 2 arrives twice.
		enqueue(env(1, "a"), env(2, "b"))
		enqueue(env(2, "b"))
		enqueue(env(3, "c"))

		waitFor(t, 5*time.Second, "the frames to be handled", func() bool {
			return w.Stats.Handled.Load()+w.Stats.Duplicates.Load() >= 4
		})
		time.Sleep(200 * time.Millisecond) // room for a wrong second run
		got := ran()
		if got != "[a b c]" {
			t.Errorf("handled %s, want [a b c]", got)
		}
		if n := w.Stats.Duplicates.Load(); n != 1 {
			t.Errorf("Stats.Duplicates = %d, want 1", n)
		}
		if n := w.Stats.Handled.Load(); n != 3 {
			t.Errorf("Stats.Handled = %d, want 3", n)
		}
		// The copy was acknowledged too: nothing stays pending.
		waitFor(t, 3*time.Second, "every entry to be acknowledged", func() bool {
			pend, err := st.Client().XPending(ctx, st.Keys.Inbound(p), keys.ConsumerGroup).Result()
			return err == nil && pend.Count == 0
		})
		// One reply per frame handled, none for the copy.
		if n := len(outboundMessages(t, st, "gwx")); n != 3 {
			t.Errorf("%d outbound messages for the gateway, want 3", n)
		}
	})
}

// outboundMessages returns the messages waiting in gateway gw's outbound
// list, oldest first, with queue.OutBatch messages opened up.
func outboundMessages(t *testing.T, st *queue.Broker, gw string) []queue.Out {
	t.Helper()
	raw, err := st.Client().LRange(t.Context(), st.Keys.Outbound(gw), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []queue.Out
	var open func(b []byte)
	open = func(b []byte) {
		m, err := queue.DecodeOut(b)
		if err != nil {
			t.Fatalf("outbound message %q: %v", b, err)
		}
		if m.Kind != queue.OutBatch {
			out = append(out, m)
			return
		}
		msgs, err := queue.SplitBundle(m.Frames)
		if err != nil {
			t.Fatalf("outbound batch: %v", err)
		}
		for _, b := range msgs {
			open(b)
		}
	}
	for i := len(raw) - 1; i >= 0; i-- { // LPUSHed: the oldest is last
		open([]byte(raw[i]))
	}
	return out
}

// TestMergeDeliveries: the entries a worker takes over (its own pending
// ones and those it claimed from others) come out in stream order, each
// envelope once, since an entry is acknowledged when all of its envelopes
// are done: an envelope admitted twice would acknowledge its entry before
// the last one ran.
func TestMergeDeliveries(t *testing.T) {
	d := func(id string, index int) queue.Delivery { return queue.Delivery{ID: id, Index: index, Count: 2} }
	claimed := []queue.Delivery{d("5-0", 0), d("5-0", 1), d("9-0", 0), d("9-0", 1)}
	own := []queue.Delivery{d("3-0", 0), d("3-0", 1), d("9-0", 0), d("9-0", 1)}
	got := mergeDeliveries(claimed, own)
	var ids []string
	for _, x := range got {
		ids = append(ids, fmt.Sprintf("%s/%d", x.ID, x.Index))
	}
	if want := "[3-0/0 3-0/1 5-0/0 5-0/1 9-0/0 9-0/1]"; fmt.Sprint(ids) != want {
		t.Errorf("merged %v, want %s", ids, want)
	}
}

// TestTakeoverSkipsFinishedEnvelopes: a worker died holding a bundle of
// which it had finished some envelopes (their replies and handled marks
// were written). The worker that takes the bundle over runs only the rest,
// so no reply is sent twice, and acknowledges the bundle.
func TestTakeoverSkipsFinishedEnvelopes(t *testing.T) {
	eachBackend(t, func(t *testing.T, ro *redis.UniversalOptions) {
		const parts = 4
		app, ran := recordingApp(func(r *Request) []byte { return r.Box.Body })
		f := newTestFarm(t, ro, parts)
		st := f.store()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if _, err := st.Partitions(ctx, parts); err != nil {
			t.Fatal(err)
		}
		if err := st.EnsureGroups(ctx, parts); err != nil {
			t.Fatal(err)
		}
		// Two connections of gateway gwx on one partition.
		var conns []string
		for n := 1; len(conns) < 2; n++ {
			if c := fmt.Sprintf("gwx-%d", n); queue.PartitionOf(c, parts) == 0 {
				conns = append(conns, c)
			}
		}
		env := func(conn string, seq uint64, body string) []byte {
			e := queue.Envelope{Kind: queue.Kind(Frame), Seq: seq, At: time.Now().UnixNano(), Gateway: "gwx", Conn: conn,
				Addr: "127.0.0.1:9", Frame: box.Append(nil, 1, 0, uint32(seq), []byte(body))}
			return queue.AppendEnvelope(nil, &e)
		}
		b := queue.PartBatch{Part: 0, Envelopes: [][]byte{
			env(conns[0], 1, "a"), env(conns[0], 2, "b"), env(conns[1], 1, "c"), env(conns[1], 2, "d"),
		}}
		if err := st.Enqueue(ctx, "gwx", []queue.PartBatch{b}, 0); err != nil {
			t.Fatal(err)
		}
		// A worker that is gone took the bundle and finished a, b and c.
		if ds, err := st.ReadInbound(ctx, "gone", []int{0}, 10, -1); err != nil || len(ds) != 4 {
			t.Fatalf("the gone worker's read = %d deliveries, %v; want 4", len(ds), err)
		}
		pipe := st.Client().Pipeline()
		st.MarkHandled(ctx, pipe, "gwx", conns[0], uint64(2), conns[1], uint64(1))
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}

		w := f.worker(app, nil)
		waitFor(t, 10*time.Second, "the bundle to be taken over", func() bool {
			return w.Stats.Handled.Load()+w.Stats.Duplicates.Load() >= 4
		})
		waitFor(t, 5*time.Second, "the bundle to be acknowledged", func() bool {
			pend, err := st.Client().XPending(ctx, st.Keys.Inbound(0), keys.ConsumerGroup).Result()
			return err == nil && pend.Count == 0
		})
		time.Sleep(200 * time.Millisecond) // room for a wrong second run
		got := ran()
		if got != "[d]" {
			t.Errorf("ran %s, want [d]: a, b and c were finished by the worker that died", got)
		}
		if n := w.Stats.Duplicates.Load(); n != 3 {
			t.Errorf("Stats.Duplicates = %d, want 3", n)
		}
		msgs := outboundMessages(t, st, "gwx")
		if len(msgs) != 1 || msgs[0].Conn != conns[1] {
			t.Fatalf("outbound messages %+v, want one reply to %s", msgs, conns[1])
		}
		if r, err := box.Decode(msgs[0].Frames); err != nil || r.SN != 2 || string(r.Body) != "d" {
			t.Errorf("reply %+v, %v; want sn 2 body d", r, err)
		}
		if n, err := st.Queued(ctx, "gwx"); err != nil || n != 0 {
			t.Errorf("Queued(gwx) = %d, %v; want 0 once the bundle is done", n, err)
		}
	})
}

// recordingApp routes cmd 1 to a handler that records the frame's body and
// replies with reply(r); ran returns the bodies recorded, in order.
func recordingApp(reply func(r *Request) []byte) (app *App, ran func() string) {
	var mu sync.Mutex
	var bodies []string
	app = NewApp()
	app.Route(1, func(ctx context.Context, r *Request) error {
		mu.Lock()
		bodies = append(bodies, string(r.Box.Body))
		mu.Unlock()
		return r.Reply(reply(r))
	})
	return app, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(bodies)
	}
}
