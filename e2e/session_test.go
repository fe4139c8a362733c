package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/trigger"
	"github.com/maple-farm/maple/worker"
)

// twoByTwo is a farm of two gateways and two workers on a real Redis.
type twoByTwo struct {
	*farm
	srv    *storetest.Server
	rdb    *redis.Client
	gws    [2]*gateway.Server
	pub    *trigger.Publisher
	ctx    context.Context
	cancel context.CancelFunc
}

func newTwoByTwo(t *testing.T) *twoByTwo {
	srv := storetest.Start(t, storetest.Options{})
	f := newFarm(t, &redis.UniversalOptions{Addrs: []string{srv.Addr}})
	x := &twoByTwo{farm: f, srv: srv}
	x.gws[0] = f.gateway(nil)
	x.gws[1] = f.gateway(nil)
	f.worker(nil, nil)
	f.worker(nil, nil)
	x.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { x.rdb.Close() })
	x.pub = trigger.NewPublisher(x.rdb, f.prefix)
	x.ctx, x.cancel = context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(x.cancel)
	return x
}

// login connects to gateway i and logs in as uid.
func (x *twoByTwo) login(t *testing.T, i int, uid string) *client.Conn {
	t.Helper()
	c := dial(t, x.gws[i])
	r, err := c.Request(x.ctx, demo.CmdLogin, []byte(uid))
	if err != nil || r.Ret != 0 {
		t.Fatalf("login %s on gateway %d: ret %d err %v", uid, i, r.Ret, err)
	}
	// The bind reaches the gateway before the reply does, so the next
	// frame carries the uid.
	who, err := c.Request(x.ctx, demo.CmdWhoami, nil)
	if err != nil || string(who.Body) != uid {
		t.Fatalf("whoami after login as %s: %q, %v", uid, who.Body, err)
	}
	return c
}

// expectPush waits for one push on c and checks its cmd and body.
func expectPush(t *testing.T, c *client.Conn, cmd int32, body string) {
	t.Helper()
	select {
	case p := <-c.Pushes():
		if p.Cmd != cmd || string(p.Body) != body || p.SN != 0 {
			t.Fatalf("push cmd %d sn %d body %q, want cmd %d sn 0 body %q", p.Cmd, p.SN, p.Body, cmd, body)
		}
	case <-c.Done():
		t.Fatalf("connection closed while waiting for push %q: %v", body, c.Err())
	case <-time.After(10 * time.Second):
		t.Fatalf("no push %q within 10s", body)
	}
}

// expectNoPush checks that nothing more arrives on c for a moment.
func expectNoPush(t *testing.T, c *client.Conn) {
	t.Helper()
	select {
	case p := <-c.Pushes():
		t.Fatalf("unexpected extra push cmd %d body %q", p.Cmd, p.Body)
	case <-time.After(300 * time.Millisecond):
	}
}

func expectClosed(t *testing.T, c *client.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open after 10s")
	}
}

func TestTriggersAcrossGateways(t *testing.T) {
	x := newTwoByTwo(t)
	a := x.login(t, 0, "alice")
	b := x.login(t, 1, "bob")
	anon := dial(t, x.gws[1]) // connected, not logged in

	n, err := x.pub.WriteToUsers(x.ctx, []string{"alice", "bob", "nobody"}, 100, []byte("hello"))
	if err != nil || n != 2 {
		t.Fatalf("publish reached %d gateways, err %v; want 2", n, err)
	}
	expectPush(t, a, 100, "hello")
	expectPush(t, b, 100, "hello")
	expectNoPush(t, a)
	expectNoPush(t, b)

	if _, err := x.pub.Broadcast(x.ctx, 101, []byte("restart at 04:00")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{a, b, anon} {
		expectPush(t, c, 101, "restart at 04:00")
		expectNoPush(t, c)
	}

	// Groups: bob joins, the group trigger reaches only him.
	if r, err := b.Request(x.ctx, demo.CmdJoin, []byte("lobby")); err != nil || r.Ret != 0 {
		t.Fatalf("join: %v %v", r.Ret, err)
	}
	if _, err := x.pub.WriteToGroup(x.ctx, "lobby", 102, []byte("lobby news")); err != nil {
		t.Fatal(err)
	}
	expectPush(t, b, 102, "lobby news")
	expectNoPush(t, a)

	// A malformed trigger is counted and the gateways go on serving.
	x.rdb.Publish(x.ctx, x.keys().TriggerChannel(), "{not json")
	x.rdb.Publish(x.ctx, x.keys().TriggerChannel(), `{"op":"write_to_users","cmd":1}`)
	waitFor(t, "bad triggers counted", func() bool {
		return x.gws[0].Stats.BadTriggers.Load() == 2 && x.gws[1].Stats.BadTriggers.Load() == 2
	})
	if r, err := a.Request(x.ctx, demo.CmdEcho, []byte("alive")); err != nil || string(r.Body) != "alive" {
		t.Fatalf("echo after malformed trigger: %q %v", r.Body, err)
	}

	if _, err := x.pub.CloseUsers(x.ctx, []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, a)
	expectClosed(t, b)
	select {
	case <-anon.Done():
		t.Fatal("close_users closed a connection that was not logged in")
	default:
	}
	// Their sessions are gone once the close events are handled.
	waitFor(t, "sessions removed", func() bool {
		n, _ := x.rdb.Exists(x.ctx, x.keys().Session("alice"), x.keys().Session("bob")).Result()
		return n == 0
	})
}

func TestReloginKicks(t *testing.T) {
	x := newTwoByTwo(t)
	a := x.login(t, 0, "carol")
	b := x.login(t, 1, "carol")
	expectClosed(t, a)
	// The new connection holds the session: pushes reach it once.
	if _, err := x.pub.WriteToUsers(x.ctx, []string{"carol"}, 100, []byte("hi carol")); err != nil {
		t.Fatal(err)
	}
	expectPush(t, b, 100, "hi carol")
	expectNoPush(t, b)
	// The kicked connection's close event must not remove the new session.
	time.Sleep(500 * time.Millisecond)
	sess, err := x.rdb.HGet(x.ctx, x.keys().Session("carol"), "gw").Result()
	if err != nil || sess != x.gws[1].ID() {
		t.Fatalf("session of carol on gateway %q (%v), want %q", sess, err, x.gws[1].ID())
	}
}

func TestSayToGroup(t *testing.T) {
	x := newTwoByTwo(t)
	a := x.login(t, 0, "ann")
	b := x.login(t, 1, "ben")
	for _, c := range []*client.Conn{a, b} {
		for _, g := range []string{"table1", "table2"} {
			if r, err := c.Request(x.ctx, demo.CmdJoin, []byte(g)); err != nil || r.Ret != 0 {
				t.Fatalf("join %s: %d %v", g, r.Ret, err)
			}
		}
	}
	if r, err := a.Request(x.ctx, demo.CmdSay, []byte("hello all")); err != nil || r.Ret != 0 {
		t.Fatalf("say: %d %v", r.Ret, err)
	}
	// In two shared groups, each member still gets the message once.
	expectPush(t, a, demo.CmdSay, "ann: hello all")
	expectPush(t, b, demo.CmdSay, "ann: hello all")
	expectNoPush(t, a)
	expectNoPush(t, b)

	anon := dial(t, x.gws[0])
	for _, cmd := range []int32{demo.CmdJoin, demo.CmdSay} {
		r, err := anon.Request(x.ctx, cmd, []byte("x"))
		if err != nil || r.Ret != box.RetLoginRequired {
			t.Fatalf("cmd %d without login: ret %d err %v, want %d", cmd, r.Ret, err, box.RetLoginRequired)
		}
	}
}

// TestRedisCLITriggers sends triggers with the real redis-cli binary, as an
// operator would.
func TestRedisCLITriggers(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is not installed (apt-get install redis-tools)")
	}
	x := newTwoByTwo(t)
	a := x.login(t, 0, "42")
	b := x.login(t, 1, "43")
	port := x.srv.Addr[strings.LastIndex(x.srv.Addr, ":")+1:]
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(x.ctx, cli, append([]string{"-h", "127.0.0.1", "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ch := x.keys().TriggerChannel()
	if got := run("PUBLISH", ch, `{"op":"write_to_users","uids":["42","43"],"cmd":100,"body":"hello"}`); got != "2" {
		t.Fatalf("PUBLISH reached %s gateways, want 2", got)
	}
	expectPush(t, a, 100, "hello")
	expectPush(t, b, 100, "hello")
	run("PUBLISH", ch, `{"op":"broadcast","cmd":100,"body":"server restarts at 04:00"}`)
	expectPush(t, a, 100, "server restarts at 04:00")
	expectPush(t, b, 100, "server restarts at 04:00")
	run("PUBLISH", ch, `{"op":"write_to_users","uids":["42"],"cmd":100,"body_b64":"AAEC"}`)
	expectPush(t, a, 100, "\x00\x01\x02")
	run("PUBLISH", ch, `{"op":"write_to_users","uids":["42"],"cmd":100,"body":"x","ret":-5}`)
	select {
	case p := <-a.Pushes():
		if p.Ret != -5 {
			t.Fatalf("ret %d, want -5", p.Ret)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no push with ret")
	}
	run("PUBLISH", ch, `{"op":"close_users","uids":["42"]}`)
	expectClosed(t, a)
	expectNoPush(t, b)
}

// TestWriteToWorker: a frame for the workers from redis-cli is handled
// exactly once although every gateway receives the trigger.
func TestWriteToWorker(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	f := newFarm(t, &redis.UniversalOptions{Addrs: []string{srv.Addr}})
	f.gateway(nil)
	f.gateway(nil)
	var mu sync.Mutex
	got := map[string]int{}
	app := func() *worker.App {
		a := worker.NewApp()
		a.Route(9, func(ctx context.Context, r *worker.Request) error {
			if r.Kind != worker.System {
				return fmt.Errorf("kind %v, want system", r.Kind)
			}
			mu.Lock()
			got[string(r.Box.Body)]++
			mu.Unlock()
			return nil
		})
		return a
	}
	f.worker(app(), nil)
	f.worker(app(), nil)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	pub := trigger.NewPublisher(rdb, f.prefix)
	if _, err := pub.Publish(ctx, trigger.Message{Op: trigger.OpWriteToWorker, Cmd: 9, Body: "via pubsub"}); err != nil {
		t.Fatal(err)
	}
	if err := pub.WriteToWorker(ctx, 9, []byte("via go")); err != nil {
		t.Fatal(err)
	}
	// The raw stream form, as in docs/operations.md.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: f.keys().Inbound(0), Values: []any{"cmd", "9", "body", "via xadd"}}).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three system frames", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3
	})
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for k, n := range got {
		if n != 1 {
			t.Errorf("%q handled %d times, want once", k, n)
		}
	}
}

// TestTimerSurvivesWorkers: a timer scheduled before every worker stops
// fires once after a worker starts again.
func TestTimerSurvivesWorkers(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { timerSurvivesWorkers(t, b.redis(t)) })
	}
}

// timerSurvivesWorkers: a timer scheduled (and one cancelled) before every
// worker stops fires once after a worker starts again.
func timerSurvivesWorkers(t *testing.T, ro *redis.UniversalOptions) {
	f := newFarm(t, ro)
	gw := f.gateway(nil)
	var mu sync.Mutex
	fired := 0
	app := func() *worker.App {
		a := worker.NewApp()
		a.Route(20, func(ctx context.Context, r *worker.Request) error {
			if _, err := r.ScheduleAfter(ctx, 1500*time.Millisecond, 21, []byte("turn over")); err != nil {
				return err
			}
			id, err := r.ScheduleAfter(ctx, time.Second, 21, []byte("cancelled"))
			if err != nil {
				return err
			}
			if ok, err := r.CancelTimer(ctx, id); !ok || err != nil {
				return fmt.Errorf("cancel: %v %v", ok, err)
			}
			return r.Reply(nil)
		})
		a.Route(21, func(ctx context.Context, r *worker.Request) error {
			if string(r.Box.Body) != "turn over" {
				return fmt.Errorf("cancelled timer fired: %q", r.Box.Body)
			}
			mu.Lock()
			fired++
			mu.Unlock()
			return nil
		})
		return a
	}
	w1 := f.worker(app(), nil)
	w2 := f.worker(app(), nil)
	cn := dial(t, gw)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := cn.Request(ctx, 20, nil); err != nil || r.Ret != 0 {
		t.Fatalf("schedule: %d %v", r.Ret, err)
	}
	w1.stop()
	w2.stop()
	time.Sleep(2500 * time.Millisecond)
	mu.Lock()
	if fired != 0 {
		t.Fatalf("fired %d times with no worker running", fired)
	}
	mu.Unlock()
	f.worker(app(), nil)
	waitFor(t, "timer fired", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return fired > 0
	})
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	if fired != 1 {
		t.Fatalf("timer fired %d times, want once", fired)
	}
}

// TestPeriodicJobOncePerPeriod: three workers, one job every 300 ms; each
// period runs once across the farm.
func TestPeriodicJobOncePerPeriod(t *testing.T) {
	periodicJobOncePerPeriod(t, realRedis(t))
}

func periodicJobOncePerPeriod(t *testing.T, ro *redis.UniversalOptions) {
	f := newFarm(t, ro)
	var runs atomic.Int64
	const period = 300 * time.Millisecond
	app := func() *worker.App {
		a := worker.NewApp()
		a.Every("tick", period, func(ctx context.Context, r *worker.Request) error {
			runs.Add(1)
			return nil
		})
		return a
	}
	for i := 0; i < 3; i++ {
		f.worker(app(), nil)
	}
	time.Sleep(3 * time.Second)
	if total := runs.Load(); total < 5 || total > 11 {
		t.Fatalf("%d runs in 3s of a 300ms job across 3 workers; want about 10, once per period", total)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
