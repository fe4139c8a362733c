package e2e

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

// procFarm is an in-process gateway and worker processes on a real Redis.
type procFarm struct {
	*farm
	srv *storetest.Server
	gw  *gateway.Server
	rdb *redis.Client
	env []string
}

func newProcFarm(t *testing.T, opts storetest.Options, env ...string) *procFarm {
	return newProcFarmGW(t, opts, nil, env...)
}

// newProcFarmGW is newProcFarm with the gateway's options changed by mod.
func newProcFarmGW(t *testing.T, opts storetest.Options, mod func(*gateway.Options), env ...string) *procFarm {
	if testing.Short() {
		t.Skip("process restarts take a while; skipped with -short")
	}
	srv := storetest.Start(t, opts)
	f := newFarm(t, &redis.UniversalOptions{Addrs: []string{srv.Addr}})
	pf := &procFarm{farm: f, srv: srv}
	pf.gw = f.gateway(mod)
	pf.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { pf.rdb.Close() })
	pf.env = append([]string{"MAPLE_REDIS=" + srv.URL(), "MAPLE_PREFIX=" + f.prefix, "MAPLE_LEASE=1s",
		"MAPLE_SHUTDOWN_TIMEOUT=10s", "MAPLE_LOG_LEVEL=info"}, env...)
	return pf
}

// mapleWorker starts a `maple worker` process.
func (pf *procFarm) mapleWorker(t *testing.T) *proc {
	return startProc(t, pf.env, mapleBin, "worker", "--concurrency", "16")
}

func (pf *procFarm) testWorker(t *testing.T, env ...string) *proc {
	return startProc(t, append(append([]string{}, pf.env...), env...), testWorkerBin)
}

func (pf *procFarm) counter(t *testing.T, name string) int64 {
	n, err := store.New(pf.rdb, pf.prefix).Counter(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func report(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		t.Error(err)
	}
}

// Proof 1: a worker is SIGTERMed and replaced 5 times under load; every
// request gets exactly one correct reply, nobody is disconnected, and the
// counter equals the increments sent.
func TestSIGTERMUnderLoad(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	w := pf.mapleWorker(t)
	l := startLoad(t, pf.gw.Addr().String(), 50, 2, "term")
	for i := 0; i < 5; i++ {
		time.Sleep(700 * time.Millisecond)
		next := pf.mapleWorker(t)
		time.Sleep(300 * time.Millisecond)
		w.signal(syscall.SIGTERM)
		exited, err := w.wait(15 * time.Second)
		if !exited || err != nil {
			t.Fatalf("worker after SIGTERM: exited=%v err=%v, want exit 0 within the shutdown timeout", exited, err)
		}
		w = next
	}
	time.Sleep(500 * time.Millisecond)
	report(t, l.finish(t))
	if d := l.duplicates(); d != 0 {
		t.Errorf("%d duplicate replies after SIGTERM restarts, want 0", d)
	}
	if got, want := pf.counter(t, "term"), l.increments.Load(); got != want {
		t.Errorf("counter = %d, want %d increments", got, want)
	}
	if l.answered.Load() < 500 {
		t.Errorf("only %d requests answered; the load did not run", l.answered.Load())
	}
	t.Logf("sent %d, answered %d, busy %d", l.sent.Load(), l.answered.Load(), l.busy.Load())
}

// A SIGKILLed worker's players wait about one --liveness (700 ms by
// default), not one --lease: the lease here is 30 s, so a farm that waited
// for it would stall the players a killed worker served for 30 s. The
// bound asserted is far above the liveness (the machine may be loaded)
// and far below the lease; scripts/chaos.sh measures the stall itself.
func TestSIGKILLMovesPartitionsWithinLiveness(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	args := []string{"worker", "--concurrency", "16", "--lease", "30s"}
	doomed := startProc(t, pf.env, mapleBin, args...)
	startProc(t, pf.env, mapleBin, args...)
	time.Sleep(2 * time.Second) // the two share the partitions
	l := startLoad(t, pf.gw.Addr().String(), 32, 1, "liveness")
	time.Sleep(time.Second)
	doomed.signal(syscall.SIGKILL)
	doomed.wait(5 * time.Second)
	time.Sleep(3 * time.Second)
	report(t, l.finish(t))
	worst := time.Duration(l.worstNs.Load())
	t.Logf("sent %d, answered %d; longest wait for a reply %v (the kill's stall)", l.sent.Load(), l.answered.Load(),
		worst.Round(time.Millisecond))
	if worst > 10*time.Second {
		t.Errorf("a request waited %v after a SIGKILL: the partitions moved by lease (30 s), not by liveness", worst)
	}
}

// Proof 2: the same with SIGKILL: every request gets a reply; duplicates
// only for frames in flight at a kill; counter at least the increments.
func TestSIGKILLUnderLoad(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	w := pf.mapleWorker(t)
	l := startLoad(t, pf.gw.Addr().String(), 50, 2, "kill")
	const kills, concurrency = 5, 16
	for i := 0; i < kills; i++ {
		time.Sleep(700 * time.Millisecond)
		next := pf.mapleWorker(t)
		time.Sleep(300 * time.Millisecond)
		w.signal(syscall.SIGKILL)
		w.wait(5 * time.Second)
		w = next
	}
	time.Sleep(2 * time.Second) // the last killed worker's lease runs out
	report(t, l.finish(t))
	dups := l.duplicates()
	if dups > kills*4*concurrency {
		t.Errorf("%d duplicate replies, more than in flight at %d kills", dups, kills)
	}
	if got, want := pf.counter(t, "kill"), l.increments.Load(); got < want {
		t.Errorf("counter = %d, want at least %d increments", got, want)
	}
	t.Logf("sent %d, answered %d, duplicates %d", l.sent.Load(), l.answered.Load(), dups)
}

// Proof 3: each client sends 500 frames as fast as it can across 4
// workers that are being restarted; handlers see each client's frames in
// sn order and its replies arrive in sn order.
func TestPerConnectionOrder(t *testing.T) {
	// The clients pipeline all their frames: no bound on frames in flight
	// (past --max-inflight they would be answered -10002).
	pf := newProcFarmGW(t, storetest.Options{}, func(o *gateway.Options) { o.MaxInflight = -1 })
	var workers []*proc
	for i := 0; i < 4; i++ {
		workers = append(workers, pf.testWorker(t))
	}
	const clients, frames = 10, 500
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	ids := make([]string, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- orderedClient(ctx, pf.gw.Addr().String(), frames)
		}(i)
	}
	restartDone := make(chan struct{})
	go func() {
		defer close(restartDone)
		for i := 0; ctx.Err() == nil && i < 6; i++ {
			time.Sleep(400 * time.Millisecond)
			k := i % len(workers)
			workers[k].signal(syscall.SIGTERM)
			workers[k].wait(15 * time.Second)
			workers[k] = pf.testWorker(t)
		}
	}()
	wg.Wait()
	<-restartDone
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	_ = ids
	// What the handlers observed, in the order they ran.
	seen, err := pf.rdb.LRange(ctx, pf.prefix+":{test:order}:list", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	for _, e := range seen {
		conn, sn, _ := strings.Cut(e, " ")
		n, _ := strconv.Atoi(sn)
		if n <= last[conn] {
			t.Fatalf("connection %s: handler saw sn %d after %d", conn, n, last[conn])
		}
		last[conn] = n
	}
	if len(seen) != clients*frames {
		t.Errorf("handlers saw %d frames, want %d", len(seen), clients*frames)
	}
}

// orderedClient sends n record frames back to back and checks the replies
// come in sn order.
func orderedClient(ctx context.Context, addr string, n int) error {
	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	for sn := 1; sn <= n; sn++ {
		if err := c.Send(51, uint32(sn), []byte(strconv.Itoa(sn))); err != nil {
			return err
		}
	}
	for want := 1; want <= n; want++ {
		select {
		case b := <-c.Pushes():
			if int(b.SN) != want || b.Ret != 0 {
				return fmt.Errorf("reply sn %d ret %d, want sn %d", b.SN, b.Ret, want)
			}
		case <-c.Done():
			return fmt.Errorf("disconnected after %d replies: %v", want-1, c.Err())
		case <-ctx.Done():
			return fmt.Errorf("%d of %d replies: %w", want-1, n, ctx.Err())
		}
	}
	return nil
}

// Proof 4: Redis killed and restarted (same port, AOF on) mid-load: no
// client connection drops, every request is answered (ok or -10002).
func TestRedisRestartUnderLoad(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{AOF: true})
	pf.mapleWorker(t)
	l := startLoad(t, pf.gw.Addr().String(), 20, 2, "aof")
	time.Sleep(time.Second)
	pf.srv.Kill()
	time.Sleep(time.Second)
	pf.srv.Restart()
	time.Sleep(3 * time.Second)
	report(t, l.finish(t))
	if got, want := pf.counter(t, "aof"), l.increments.Load(); got < want {
		t.Errorf("counter = %d after the restart, want at least %d increments", got, want)
	}
	t.Logf("sent %d, answered %d, busy %d, gateway redis errors %d", l.sent.Load(), l.answered.Load(), l.busy.Load(), pf.gw.Stats.RedisErrs.Load())
}

// Proof 5: a frame whose handler always kills the worker process goes to
// the dead-letter list after N deliveries, and the farm keeps serving.
func TestPoisonFrameDeadLetters(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{}, "MAPLE_MAX_DELIVERIES=3")
	starts := superviseWorkers(t, pf)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	poison := dial(t, pf.gw)
	r, err := poison.Request(ctx, 50, []byte("boom"))
	if err != nil || r.Ret != -10001 {
		t.Fatalf("poison frame: ret %d err %v, want -10001 once dead-lettered", r.Ret, err)
	}
	// Everything else is served.
	other := dial(t, pf.gw)
	if r, err := other.Request(ctx, 1, []byte("still here")); err != nil || string(r.Body) != "still here" {
		t.Fatalf("echo after poison: %q %v", r.Body, err)
	}
	if r, err := poison.Request(ctx, 1, []byte("me too")); err != nil || string(r.Body) != "me too" {
		t.Fatalf("echo on the poisoned connection: %q %v", r.Body, err)
	}
	// maple dead list shows it; requeue puts it back.
	out := runMaple(t, "dead", "list", "--redis", pf.srv.URL(), "--prefix", pf.prefix)
	if !strings.Contains(out, "cmd=50") || !strings.Contains(out, "1 dead letters") || !strings.Contains(out, "deliveries=3") {
		t.Fatalf("maple dead list:\n%s", out)
	}
	t.Logf("workers started: %d\n%s", starts.Load(), out)
}

// superviseWorkers keeps one test worker running: whenever one dies,
// another starts, until the test ends. It counts the starts.
func superviseWorkers(t *testing.T, pf *procFarm) *atomic.Int64 {
	stop := make(chan struct{})
	var sup sync.WaitGroup
	sup.Add(1)
	starts := new(atomic.Int64)
	go func() {
		defer sup.Done()
		for {
			w := pf.testWorker(t)
			starts.Add(1)
			select {
			case <-w.done:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); sup.Wait() })
	return starts
}

// TestPoisonFrameInABundle: a poison frame sent in one write with frames
// before and after it on the same connection (the gateway bundles them in
// one entry). The frame before is answered once, although the worker
// that answered it died with the bundle; only the poison frame goes to the
// dead letters; the frame after it is answered once it has.
func TestPoisonFrameInABundle(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{}, "MAPLE_MAX_DELIVERIES=3")
	starts := superviseWorkers(t, pf)

	nc, err := net.Dial("tcp", pf.gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var burst []byte
	burst = box.Append(burst, 1, 0, 1, []byte("before"))
	burst = box.Append(burst, 50, 0, 2, []byte("boom"))
	burst = box.Append(burst, 1, 0, 3, []byte("after"))
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	r := box.NewReader(nc, 0)
	want := []struct {
		sn   uint32
		ret  int32
		body string
	}{{1, 0, "before"}, {2, box.RetHandlerFailed, ""}, {3, 0, "after"}}
	for _, w := range want {
		b, err := r.Next()
		if err != nil {
			t.Fatalf("waiting for the reply to sn %d: %v", w.sn, err)
		}
		if b.SN != w.sn || b.Ret != w.ret || string(b.Body) != w.body {
			t.Fatalf("reply sn %d ret %d body %q, want sn %d ret %d body %q", b.SN, b.Ret, b.Body, w.sn, w.ret, w.body)
		}
	}
	// Nothing else: "before" was not answered twice.
	_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if b, err := r.Next(); err == nil {
		t.Errorf("extra reply sn %d ret %d body %q", b.SN, b.Ret, b.Body)
	}
	out := runMaple(t, "dead", "list", "--redis", pf.srv.URL(), "--prefix", pf.prefix)
	if !strings.Contains(out, "cmd=50") || !strings.Contains(out, "1 dead letters") {
		t.Fatalf("maple dead list:\n%s", out)
	}
	t.Logf("workers started: %d\n%s", starts.Load(), out)
}

func runMaple(t *testing.T, args ...string) string {
	t.Helper()
	out, err := execCommand(mapleBin, args...)
	if err != nil {
		t.Fatalf("maple %v: %v\n%s", args, err, out)
	}
	return out
}
