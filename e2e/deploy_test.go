package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

// gatewayProc starts a `maple gateway` process on port and waits until it
// accepts connections.
func gatewayProc(t *testing.T, env []string, port int, args ...string) *proc {
	t.Helper()
	p := startProc(t, env, mapleBin, append([]string{"gateway", "--listen", "127.0.0.1:" + strconv.Itoa(port)}, args...)...)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway on port %d not up: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGatewayRollingRestart: a new gateway binds the same port
// (SO_REUSEPORT); the old one, on SIGTERM, stops accepting, keeps serving
// its players through the drain, then closes them, and exits 0.
func TestGatewayRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	srv := storetest.Start(t, storetest.Options{})
	prefix := storetest.Prefix(t)
	env := []string{"MAPLE_REDIS=" + srv.URL(), "MAPLE_PREFIX=" + prefix}
	startProc(t, env, mapleBin, "worker")
	port := storetest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	old := gatewayProc(t, env, port, "--reuseport", "--drain-timeout", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var players []*client.Conn
	for i := 0; i < 10; i++ {
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		players = append(players, c)
	}
	gatewayProc(t, env, port, "--reuseport")
	old.signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond) // it stops accepting

	// During the drain the old gateway's players are served...
	for i, c := range players {
		r, err := c.Request(ctx, demo.CmdEcho, []byte("during drain "+strconv.Itoa(i)))
		if err != nil || string(r.Body) != "during drain "+strconv.Itoa(i) {
			t.Fatalf("player %d during drain: %q %v", i, r.Body, err)
		}
	}
	// ...a slow request started now is still answered before the close...
	slow := make(chan error, 1)
	go func() {
		r, err := players[0].Request(ctx, demo.CmdSleep, []byte("2500"))
		if err == nil && r.Ret != 0 {
			err = errorf("ret %d", r.Ret)
		}
		slow <- err
	}()
	// ...and every new connection lands on the new gateway: none of them
	// is closed when the old one ends.
	var newcomers []*client.Conn
	for i := 0; i < 20; i++ {
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			t.Fatalf("new connection %d during the drain: %v", i, err)
		}
		defer c.Close()
		if r, err := c.Request(ctx, demo.CmdEcho, []byte("new")); err != nil || string(r.Body) != "new" {
			t.Fatalf("new connection %d: %q %v", i, r.Body, err)
		}
		newcomers = append(newcomers, c)
	}
	if err := <-slow; err != nil {
		t.Fatalf("request owed at the drain deadline: %v", err)
	}
	exited, err := old.wait(20 * time.Second)
	if !exited || err != nil {
		t.Fatalf("old gateway: exited=%v err=%v, want exit 0", exited, err)
	}
	for i, c := range players {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("player %d still connected to the stopped gateway", i)
		}
	}
	for i, c := range newcomers {
		select {
		case <-c.Done():
			t.Fatalf("connection %d opened during the drain was closed with the old gateway", i)
		default:
		}
		if r, err := c.Request(ctx, demo.CmdEcho, []byte("still")); err != nil || string(r.Body) != "still" {
			t.Fatalf("connection %d opened during the drain: %q %v", i, r.Body, err)
		}
	}
	// A reconnect lands on the new gateway.
	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Request(ctx, demo.CmdEcho, []byte("after")); err != nil || string(r.Body) != "after" {
		t.Fatalf("after the restart: %q %v", r.Body, err)
	}
}

// TestWorkerReloadOnHUP: SIGHUP makes a worker start its replacement from
// the binary on disk, which pulls before the old one drains and exits 0;
// players see nothing.
func TestWorkerReloadOnHUP(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	w := pf.mapleWorker(t)
	l := startLoad(t, pf.gw.Addr().String(), 20, 2, "hup")
	time.Sleep(time.Second)
	w.signal(syscall.SIGHUP)
	exited, err := w.wait(30 * time.Second)
	if !exited || err != nil {
		t.Fatalf("old worker after SIGHUP: exited=%v err=%v, want exit 0", exited, err)
	}
	// The replacement runs on: it was started by the old process.
	checkAfterReload(t, pf, l, "hup")
	// Stop the replacement (not our child): SIGTERM every live worker pid.
	stopWorkersByRegistry(t, pf)
}

// checkAfterReload checks a load across a worker reload: requests are
// still answered after it, none twice, and the counter route ran once per
// increment the clients saw. It stops the load.
func checkAfterReload(t *testing.T, pf *procFarm, l *load, counter string) {
	t.Helper()
	time.Sleep(time.Second)
	before := l.answered.Load()
	time.Sleep(time.Second)
	if l.answered.Load() == before {
		t.Fatal("no requests answered after the reload")
	}
	report(t, l.finish(t))
	if d := l.duplicates(); d != 0 {
		t.Errorf("%d duplicate replies across a reload, want 0", d)
	}
	if got, want := pf.counter(t, counter), l.increments.Load(); got != want {
		t.Errorf("counter = %d, want %d", got, want)
	}
}

// stopWorkersByRegistry terminates worker processes this test did not
// start directly (a reload's replacement), found by their command line.
func stopWorkersByRegistry(t *testing.T, pf *procFarm) {
	out, _ := execCommand("pgrep", "-f", mapleBin+" worker")
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}

// TestDeadGatewaySessions: a gateway killed with SIGKILL leaves no stale
// sessions: within the gateway timeout its players can log in elsewhere and
// are no longer pushed to.
func TestDeadGatewaySessions(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	srv := storetest.Start(t, storetest.Options{})
	f := newFarm(t, &redis.UniversalOptions{Addrs: []string{srv.Addr}})
	env := []string{"MAPLE_REDIS=" + srv.URL(), "MAPLE_PREFIX=" + f.prefix}
	startProc(t, env, mapleBin, "worker", "--gateway-timeout", "2s", "--login-mode", "refuse")
	port := storetest.FreePort(t)
	doomed := gatewayProc(t, env, port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "127.0.0.1:"+strconv.Itoa(port), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Request(ctx, demo.CmdLogin, []byte("dora")); err != nil || r.Ret != 0 {
		t.Fatalf("login: %d %v", r.Ret, err)
	}
	other := f.gateway(nil)
	c2 := dial(t, other)
	// With login mode refuse, a second login fails while the first lives.
	if r, err := c2.Request(ctx, demo.CmdLogin, []byte("dora")); err != nil || r.Ret != box.RetHandlerFailed {
		t.Fatalf("second login while the first is alive: ret %d err %v, want refused (-10001)", r.Ret, err)
	}
	doomed.signal(syscall.SIGKILL)
	killed := time.Now()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	waitFor(t, "dead gateway's session removed", func() bool {
		n, _ := rdb.Exists(ctx, keys.New(f.prefix).Session("dora")).Result()
		return n == 0
	})
	t.Logf("session removed %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	if r, err := c2.Request(ctx, demo.CmdLogin, []byte("dora")); err != nil || r.Ret != 0 {
		t.Fatalf("login after the gateway died: ret %d err %v", r.Ret, err)
	}
}

func errorf(format string, args ...any) error { return &testErr{s: sprintf(format, args...)} }

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }

// TestWorkerReloadWithMetricsAndSecondHUP: a worker serving metrics (as
// every production worker does) reloads on SIGHUP: the replacement gets
// the metrics port handed over instead of failing to bind it. A second
// SIGHUP half a second later, while frames are in hand, is ignored: the old
// process still drains and exits 0, one replacement runs, no request is
// lost or answered twice.
func TestWorkerReloadWithMetricsAndSecondHUP(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	metricsAddr := "127.0.0.1:" + strconv.Itoa(storetest.FreePort(t))
	w := startProc(t, pf.env, mapleBin, "worker", "--concurrency", "16", "--metrics-addr", metricsAddr)
	scrape := func() error {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "maple_worker_handled_total") {
			return errorf("scrape: %s", resp.Status)
		}
		return nil
	}
	waitFor(t, "the worker's metrics", func() bool { return scrape() == nil })
	l := startLoad(t, pf.gw.Addr().String(), 16, 2, "hup2")
	// Frames that take a while, in hand when the second HUP comes.
	slow := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, pf.gw.Addr().String(), client.Options{})
			if err != nil {
				slow <- err
				return
			}
			defer c.Close()
			r, err := c.Request(ctx, demo.CmdSleep, []byte("2000"))
			if err == nil && r.Ret != 0 {
				err = errorf("sleep: ret %d", r.Ret)
			}
			slow <- err
		}()
	}
	time.Sleep(time.Second)
	w.signal(syscall.SIGHUP)
	time.Sleep(500 * time.Millisecond)
	w.signal(syscall.SIGHUP)
	exited, err := w.wait(30 * time.Second)
	if !exited || err != nil {
		t.Fatalf("old worker after two SIGHUPs: exited=%v err=%v, want exit 0", exited, err)
	}
	for i := 0; i < 8; i++ {
		if err := <-slow; err != nil {
			t.Errorf("slow request across the reload: %v", err)
		}
	}
	if err := scrape(); err != nil {
		t.Errorf("metrics after the reload (served by the replacement): %v", err)
	}
	checkAfterReload(t, pf, l, "hup2")
	out, _ := execCommand("pgrep", "-f", mapleBin+" worker")
	if n := len(strings.Fields(out)); n != 1 {
		t.Errorf("%d worker processes after the reload, want the one replacement", n)
	}
	logged, _ := os.ReadFile(w.log)
	if !strings.Contains(string(logged), "SIGHUP ignored") {
		t.Errorf("the old worker did not log the ignored SIGHUP")
	}
	stopWorkersByRegistry(t, pf)
}

// TestWorkerSIGTERMDuringOutage: a worker told to stop while Redis is
// away, with frames in hand, exits within --shutdown-timeout plus a
// second (docs/operations.md); what it held is left pending for others.
func TestWorkerSIGTERMDuringOutage(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	w := startProc(t, pf.env, mapleBin, "worker", "--shutdown-timeout", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, pf.gw.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Request(ctx, demo.CmdEcho, []byte("up")); err != nil || string(r.Body) != "up" {
		t.Fatalf("echo: %q %v", r.Body, err)
	}
	for i := 0; i < 4; i++ { // frames in hand: sleeping handlers
		go func() { _, _ = c.Request(ctx, demo.CmdSleep, []byte("10000")) }()
	}
	time.Sleep(500 * time.Millisecond)
	pf.srv.Kill()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	w.signal(syscall.SIGTERM)
	exited, err := w.wait(10 * time.Second)
	took := time.Since(start)
	if !exited {
		t.Fatalf("worker still running %v after SIGTERM with Redis away", took)
	}
	if err != nil {
		t.Errorf("worker exit: %v", err)
	}
	if took > 3500*time.Millisecond {
		t.Errorf("worker exited %v after SIGTERM, want within --shutdown-timeout (2 s) + 1 s", took)
	}
	t.Logf("worker exited %v after SIGTERM with Redis away", took.Round(time.Millisecond))
	pf.srv.Restart() // so that the gateway stops at once
}

// TestWorkerReloadFixedIDs: workers started with fixed ids (as a
// StatefulSet or systemd instances name them) reload on SIGHUP under load
// without the old and the new process acting as one consumer: no request
// lost or answered twice, and nothing left pending under a gone process.
func TestWorkerReloadFixedIDs(t *testing.T) {
	pf := newProcFarm(t, storetest.Options{})
	wa := startProc(t, pf.env, mapleBin, "worker", "--concurrency", "16", "--worker-id", "wA")
	startProc(t, pf.env, mapleBin, "worker", "--concurrency", "16", "--worker-id", "wB")
	l := startLoad(t, pf.gw.Addr().String(), 32, 4, "fixed")
	time.Sleep(1500 * time.Millisecond)
	wa.signal(syscall.SIGHUP)
	exited, err := wa.wait(30 * time.Second)
	if !exited || err != nil {
		t.Fatalf("old wA after SIGHUP: exited=%v err=%v, want exit 0", exited, err)
	}
	checkAfterReload(t, pf, l, "fixed")
	// Every worker registered is a distinct process under its name.
	ids, err := pf.rdb.ZRange(context.Background(), pf.keys().Workers(), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id == "wA" || id == "wB" {
			t.Errorf("worker registered as %q: a fixed id must get a per-process suffix", id)
		}
	}
	// Nothing stays pending under a process that is gone.
	live := map[string]bool{}
	for _, id := range ids {
		live[id] = true
	}
	waitFor(t, "no entries pending under gone workers", func() bool {
		for p := 0; p < queue.DefaultPartitions; p++ {
			pend, err := pf.rdb.XPending(context.Background(), pf.keys().Inbound(p), keys.ConsumerGroup).Result()
			if err != nil {
				return false
			}
			for name, n := range pend.Consumers {
				if n > 0 && !live[name] {
					return false
				}
			}
		}
		return true
	})
	stopWorkersByRegistry(t, pf)
}

// TestGatewayRollOneAtATime is the rolling restart of issue 16: clients
// that each send one counter request at a time (demo cmd 3) while the old
// gateway (--reuseport --drain-timeout 2s) gets SIGTERM and a new one
// serves the same port. 32 clients follow the move push (client.Follow)
// and are logged in (again in OnMove, which kicks the old connection);
// half of them move 1 ms after the push whatever is in flight, with a
// 700 ms request in flight as the roll starts, so the kick comes while the
// old gateway still owes that request its answer (which it must deliver,
// not close the connection: none is sent again). 8 more ignore the
// push, as an older client would, and only redial and send again when a
// request is answered -10003 or their connection ends. No request is
// lost, none ran without its answer reaching the client (the counter
// equals the answers the clients saw), none is answered twice, and every
// client ends up on the new gateway.
func TestGatewayRollOneAtATime(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	srv := storetest.Start(t, storetest.Options{})
	prefix := storetest.Prefix(t)
	env := []string{"MAPLE_REDIS=" + srv.URL(), "MAPLE_PREFIX=" + prefix}
	startProc(t, env, mapleBin, "worker", "--concurrency", "32")
	port := storetest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	old := gatewayProc(t, env, port, "--reuseport", "--drain-timeout", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const followers, legacy, counter = 32, 8, "roll"

	var (
		mu      sync.Mutex
		errs    []error
		values  = map[string]int{} // counter value -> times seen in an answer
		worst   time.Duration
		moved   int // -10003 answers the legacy clients saw
		redials int
	)
	fail := func(err error) {
		mu.Lock()
		if len(errs) < 20 {
			errs = append(errs, err)
		}
		mu.Unlock()
	}
	answered := func(r box.Box, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		values[string(r.Body)]++
		worst = max(worst, took)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var conns []*client.Conn
	for i := 0; i < followers; i++ {
		user := []byte("roller-" + strconv.Itoa(i))
		login := func(ctx context.Context, c *client.Conn) error {
			r, err := c.Request(ctx, demo.CmdLogin, user)
			if err == nil && r.Ret != 0 {
				err = errorf("login: ret %d", r.Ret)
			}
			return err
		}
		follow := &client.Follow{OnMove: login}
		if i%2 == 1 {
			follow.Wait = time.Millisecond
		}
		c, err := client.Dial(ctx, addr, client.Options{Follow: follow})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := login(ctx, c); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				r, err := c.Request(ctx, demo.CmdCounter, []byte(counter))
				switch {
				case err != nil:
					fail(errorf("follower %d: %v (no answer)", i, err))
					return
				case r.Ret != 0:
					fail(errorf("follower %d: ret %d", i, r.Ret))
					return
				}
				answered(r, time.Since(start))
			}
		})
	}
	for i := 0; i < legacy; i++ {
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer func() {
				if c != nil { // nil after a failed redial, which fail() reported
					c.Close()
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				for {
					r, err := c.Request(ctx, demo.CmdCounter, []byte(counter))
					if err == nil && r.Ret == 0 {
						answered(r, time.Since(start))
						break
					}
					if err == nil && r.Ret != box.RetMoved {
						fail(errorf("legacy client %d: ret %d", i, r.Ret))
						return
					}
					// -10003, or the gateway closed with the request
					// unanswered: it did not run; send it again elsewhere.
					mu.Lock()
					if err == nil {
						moved++
					}
					redials++
					mu.Unlock()
					c.Close()
					if c, err = client.Dial(ctx, addr, client.Options{}); err != nil {
						fail(errorf("legacy client %d: redial: %v", i, err))
						return
					}
				}
			}
		})
	}

	time.Sleep(time.Second)
	gatewayProc(t, env, port, "--reuseport")
	slow := make(chan error, followers)
	for i := 1; i < followers; i += 2 {
		go func() {
			r, err := conns[i].Request(ctx, demo.CmdSleep, []byte("700"))
			if err == nil && (r.Ret != 0 || string(r.Body) != "700") {
				err = errorf("ret %d body %q", r.Ret, r.Body)
			}
			if err != nil {
				err = errorf("follower %d: slow request in flight at the roll: %v", i, err)
			}
			slow <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // they are in flight
	old.signal(syscall.SIGTERM)
	termed := time.Now()
	exited, err := old.wait(30 * time.Second)
	if !exited || err != nil {
		t.Fatalf("old gateway: exited=%v err=%v, want exit 0", exited, err)
	}
	t.Logf("old gateway exited %v after SIGTERM", time.Since(termed).Round(time.Millisecond))
	time.Sleep(time.Second) // load on the new gateway alone
	close(stop)
	wg.Wait()
	for i := 1; i < followers; i += 2 {
		if err := <-slow; err != nil {
			t.Error(err)
		}
	}
	for _, err := range errs {
		t.Error(err)
	}

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ran, err := store.New(rdb, prefix).Counter(ctx, counter)
	if err != nil {
		t.Fatal(err)
	}
	n, dups := 0, 0
	for v, k := range values {
		n += k
		if k > 1 {
			dups++
			t.Errorf("counter value %s answered %d times", v, k)
		}
	}
	if int64(n) != ran {
		t.Errorf("the counter ran %d times, the clients saw %d answers: %d ran without an answer reaching its client", ran, n, ran-int64(n))
	}
	for i, c := range conns {
		if c.Err() != nil {
			t.Errorf("follower %d ended: %v", i, c.Err())
			continue
		}
		if c.Moves() != 1 {
			t.Errorf("follower %d moved %d times, want 1", i, c.Moves())
		}
		for len(c.Pushes()) > 0 {
			if p := <-c.Pushes(); p.SN != 0 {
				t.Errorf("follower %d: a second answer to sn %d", i, p.SN)
			}
		}
		// The old gateway is gone: an answer now comes from the new one,
		// still logged in.
		if r, err := c.Request(ctx, demo.CmdWhoami, nil); err != nil || string(r.Body) != "roller-"+strconv.Itoa(i) {
			t.Errorf("follower %d after the roll: whoami %q %v", i, r.Body, err)
		}
	}
	logged, _ := os.ReadFile(old.log)
	if strings.Contains(string(logged), "close-grace over") {
		t.Errorf("the old gateway cut connections off:\n%s", tail(logged, 2000))
	}
	var resent uint64
	for _, c := range conns {
		resent += c.Resent()
	}
	if resent != 0 {
		// Each follower moved at a quiet moment or 1 ms after the push,
		// long before the old gateway stopped taking work: a request sent
		// again was closed unanswered on the old gateway, so it may have
		// run twice.
		t.Errorf("followers sent %d requests again, want 0", resent)
	}
	t.Logf("%d answers (counter %d), %d duplicates; worst %v; followers resent %d; legacy clients: %d answered -10003, %d redials",
		n, ran, dups, worst.Round(time.Millisecond), resent, moved, redials)
}
