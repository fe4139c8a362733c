package e2e

// Redis Cluster and Sentinel: the farm runs unchanged on many masters and
// survives a master failover. Every test here starts its own redis-server
// processes (storetest.StartCluster, storetest.StartSentinel) and stops
// them by pid.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/trigger"
	"github.com/maple-farm/maple/worker"
)

// parseURL turns a --redis URL into the options the farm gets.
func parseURL(t *testing.T, url string) *redis.UniversalOptions {
	t.Helper()
	ro, err := store.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return ro
}

// testClient is the test's own client on ro, closed when the test ends.
func testClient(t *testing.T, ro *redis.UniversalOptions) redis.UniversalClient {
	o := *ro
	rdb := redis.NewUniversalClient(&o)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// redisCLI runs redis-cli against addr and returns its trimmed output.
func redisCLI(t *testing.T, ctx context.Context, addr string, args ...string) string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is not installed (apt-get install redis-tools)")
	}
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.CommandContext(ctx, cli, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli -p %s %v: %v: %s", port, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestCluster runs the end-to-end flows on a 3-master Redis Cluster: the
// 200x50 echo, triggers across gateways (Go and redis-cli, against every
// node), kicks, groups, write_to_worker, a timer and a periodic job; then
// it checks that the partition streams of the run live on all three
// masters.
func TestCluster(t *testing.T) {
	start := time.Now()
	c := storetest.StartCluster(t, 3, 0)
	t.Logf("3-master cluster up in %v; masters %v", time.Since(start).Round(time.Millisecond), c.MasterAddrs())
	ro := parseURL(t, c.URL())

	t.Run("Echo200x50", func(t *testing.T) {
		f := newFarm(t, ro)
		gw := f.gateway(nil)
		f.worker(nil, nil)
		f.worker(nil, nil)
		const clients, perClient = 200, 50
		echoClients(t, gw.Addr().String(), clients, perClient, 60*time.Second, nil)
		checkQueuesOnEveryMaster(t, c, f.prefix)
	})

	t.Run("TriggersAcrossGateways", func(t *testing.T) {
		x, rdb := newClusterTwoByTwo(t, ro)
		a := x.login(t, 0, "alice")
		b := x.login(t, 1, "bob")
		anon := dial(t, x.gws[1])
		n, err := x.pub.WriteToUsers(x.ctx, []string{"alice", "bob", "nobody"}, 100, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		// PUBLISH answers the subscribers of the node it ran on; the
		// Publisher sends it to the node the gateways subscribe on.
		if n != 2 {
			t.Errorf("publish reached %d gateways, want 2", n)
		}
		for i := 0; i < 6; i++ { // not by luck: 1 node in 3
			if n, err := x.pub.WriteToUsers(x.ctx, []string{"nobody"}, 100, nil); err != nil || n != 2 {
				t.Errorf("publish %d reached %d gateways (%v), want 2", i, n, err)
			}
		}
		expectPush(t, a, 100, "hello")
		expectPush(t, b, 100, "hello")
		expectNoPush(t, a)
		expectNoPush(t, b)
		if _, err := x.pub.Broadcast(x.ctx, 101, []byte("restart at 04:00")); err != nil {
			t.Fatal(err)
		}
		for _, cn := range []*client.Conn{a, b, anon} {
			expectPush(t, cn, 101, "restart at 04:00")
			expectNoPush(t, cn)
		}
		if r, err := b.Request(x.ctx, demo.CmdJoin, []byte("lobby")); err != nil || r.Ret != 0 {
			t.Fatalf("join: %v %v", r.Ret, err)
		}
		if _, err := x.pub.WriteToGroup(x.ctx, "lobby", 102, []byte("lobby news")); err != nil {
			t.Fatal(err)
		}
		expectPush(t, b, 102, "lobby news")
		expectNoPush(t, a)
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
		// The sessions live in two slots: one EXISTS each.
		waitFor(t, "sessions removed", func() bool {
			n1, _ := rdb.Exists(x.ctx, x.keys().Session("alice")).Result()
			n2, _ := rdb.Exists(x.ctx, x.keys().Session("bob")).Result()
			return n1+n2 == 0
		})
	})

	t.Run("ReloginKicks", func(t *testing.T) {
		x, rdb := newClusterTwoByTwo(t, ro)
		a := x.login(t, 0, "carol")
		b := x.login(t, 1, "carol")
		expectClosed(t, a)
		if _, err := x.pub.WriteToUsers(x.ctx, []string{"carol"}, 100, []byte("hi carol")); err != nil {
			t.Fatal(err)
		}
		expectPush(t, b, 100, "hi carol")
		expectNoPush(t, b)
		time.Sleep(500 * time.Millisecond)
		sess, err := rdb.HGet(x.ctx, x.keys().Session("carol"), "gw").Result()
		if err != nil || sess != x.gws[1].ID() {
			t.Fatalf("session of carol on gateway %q (%v), want %q", sess, err, x.gws[1].ID())
		}
	})

	t.Run("SayToGroup", func(t *testing.T) {
		x, _ := newClusterTwoByTwo(t, ro)
		a := x.login(t, 0, "ann")
		b := x.login(t, 1, "ben")
		for _, cn := range []*client.Conn{a, b} {
			for _, g := range []string{"table1", "table2"} {
				if r, err := cn.Request(x.ctx, demo.CmdJoin, []byte(g)); err != nil || r.Ret != 0 {
					t.Fatalf("join %s: %d %v", g, r.Ret, err)
				}
			}
		}
		if r, err := a.Request(x.ctx, demo.CmdSay, []byte("hello all")); err != nil || r.Ret != 0 {
			t.Fatalf("say: %d %v", r.Ret, err)
		}
		expectPush(t, a, demo.CmdSay, "ann: hello all")
		expectPush(t, b, demo.CmdSay, "ann: hello all")
		expectNoPush(t, a)
		expectNoPush(t, b)
	})

	t.Run("RedisCLITriggersOnEveryNode", func(t *testing.T) {
		x, _ := newClusterTwoByTwo(t, ro)
		a := x.login(t, 0, "42")
		b := x.login(t, 1, "43")
		ch := x.keys().TriggerChannel()
		subscribed := c.MasterOf(ch) // where go-redis subscribes the gateways
		others := 0
		for _, node := range c.Addrs {
			if node != subscribed {
				others++
			}
			body := "hello via " + node
			got := redisCLI(t, x.ctx, node, "PUBLISH", ch, `{"op":"write_to_users","uids":["42","43"],"cmd":100,"body":"`+body+`"}`)
			// On a cluster PUBLISH counts the subscribers of that node only.
			t.Logf("PUBLISH on %s (gateways subscribed on %s) answered %s", node, subscribed, got)
			expectPush(t, a, 100, body)
			expectPush(t, b, 100, body)
		}
		if others == 0 {
			t.Fatal("no node other than the subscribed one was tried")
		}
		redisCLI(t, x.ctx, c.Addrs[len(c.Addrs)-1], "PUBLISH", ch, `{"op":"close_users","uids":["42"]}`)
		expectClosed(t, a)
		expectNoPush(t, b)
	})

	t.Run("WriteToWorker", func(t *testing.T) {
		f := newFarm(t, ro)
		f.gateway(nil)
		f.gateway(nil)
		var mu sync.Mutex
		got := map[string]int{}
		app := func() *worker.App {
			a := worker.NewApp()
			a.Route(9, func(ctx context.Context, r *worker.Request) error {
				mu.Lock()
				got[string(r.Box.Body)]++
				mu.Unlock()
				return nil
			})
			return a
		}
		f.worker(app(), nil)
		f.worker(app(), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pub := trigger.NewPublisher(testClient(t, ro), f.prefix)
		if _, err := pub.Publish(ctx, trigger.Message{Op: trigger.OpWriteToWorker, Cmd: 9, Body: "via pubsub"}); err != nil {
			t.Fatal(err)
		}
		if err := pub.WriteToWorker(ctx, 9, []byte("via go")); err != nil {
			t.Fatal(err)
		}
		// The raw stream form of docs/operations.md; -c follows MOVED.
		redisCLI(t, ctx, c.Addrs[0], "-c", "XADD", f.keys().Inbound(5), "*", "cmd", "9", "body", "via xadd")
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
	})

	t.Run("StatReadSeesEveryMaster", func(t *testing.T) {
		// maple stat finds the reports by SCAN; on a cluster the hashes
		// spread over the masters.
		rdb := testClient(t, ro)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		prefix := storetest.Prefix(t)
		k := keys.New(prefix)
		on := map[string]int{}
		const n = 12
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("w%d", i)
			key := k.Stat(stat.KindWorker, id)
			on[c.MasterOf(key)]++
			if err := rdb.HSet(ctx, key, stat.FieldKind, stat.KindWorker, stat.FieldID, id).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if len(on) != 3 {
			t.Fatalf("the %d report keys landed on %d masters; want all 3 for this check", n, len(on))
		}
		reports, err := stat.Read(ctx, rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != n {
			t.Errorf("stat.Read found %d of %d reports (spread over masters: %v)", len(reports), n, on)
		}
	})

	t.Run("Timer", func(t *testing.T) { timerSurvivesWorkers(t, ro) })

	t.Run("PeriodicJob", func(t *testing.T) { periodicJobOncePerPeriod(t, ro) })
}

// newClusterTwoByTwo is newTwoByTwo on a cluster: two gateways, two
// workers, a Publisher on the test's own cluster client (returned; x.rdb
// and x.srv stay nil).
func newClusterTwoByTwo(t *testing.T, ro *redis.UniversalOptions) (*twoByTwo, redis.UniversalClient) {
	f := newFarm(t, ro)
	x := &twoByTwo{farm: f}
	x.gws[0] = f.gateway(nil)
	x.gws[1] = f.gateway(nil)
	f.worker(nil, nil)
	f.worker(nil, nil)
	rdb := testClient(t, ro)
	x.pub = trigger.NewPublisher(rdb, f.prefix)
	x.ctx, x.cancel = context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(x.cancel)
	return x, rdb
}

// checkQueuesOnEveryMaster asks every master (DBSIZE, SCAN, XINFO STREAM
// on that node alone) for the farm's partition streams: each master must
// hold some, each stream must be on the master its slot says, and the
// streams of every master must have taken entries in this run (an entry
// bundles a gateway's frames of one round trip, so there are fewer entries
// than frames).
func checkQueuesOnEveryMaster(t *testing.T, c *storetest.Cluster, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	masters := c.MasterAddrs()
	var total int64
	for _, m := range masters {
		node := c.Client(m)
		dbsize, err := node.DBSize(ctx).Result()
		if err != nil {
			t.Fatalf("DBSIZE on %s: %v", m, err)
		}
		var keys []string
		var cursor uint64
		for {
			batch, next, err := node.Scan(ctx, cursor, prefix+":{p*}:in", 1000).Result()
			if err != nil {
				t.Fatalf("SCAN on %s: %v", m, err)
			}
			keys = append(keys, batch...)
			if cursor = next; cursor == 0 {
				break
			}
		}
		sort.Strings(keys)
		var added int64
		for _, k := range keys {
			if owner := c.MasterOf(k); owner != m {
				t.Errorf("%s found on %s, but its slot %d is served by %s", k, m, storetest.KeySlot(k), owner)
			}
			info, err := node.XInfoStream(ctx, k).Result()
			if err != nil {
				t.Fatalf("XINFO STREAM %s on %s: %v", k, m, err)
			}
			added += info.EntriesAdded
		}
		total += added
		t.Logf("master %s: dbsize %d, %d partition streams %v, %d entries added", m, dbsize, len(keys), keys, added)
		if len(keys) == 0 || added == 0 {
			t.Errorf("master %s holds %d partition streams with %d entries: the queues do not spread over all masters", m, len(keys), added)
		}
	}
	t.Logf("%d entries added to the partition streams", total)
}

// --- slot safety --------------------------------------------------------

// slotChecker finds every command that touches keys of two hash slots:
// a single command (EVAL/EVALSHA by numkeys, XREAD[GROUP] STREAMS, DEL,
// EXISTS, BLMOVE, ... by the server's own key specs), or a MULTI/EXEC
// block. It sees commands twice over: on the wire, through a Dialer that
// wraps every connection the farm's clients open (gateways and workers
// build their clients from UniversalOptions, whose Dialer every cluster
// node client inherits), and through a go-redis hook on clients the test
// builds, which also sees a cross-slot TxPipeline that go-redis refuses
// before it reaches the wire.
type slotChecker struct {
	t       *testing.T
	info    map[string]*redis.CommandInfo
	side    *redis.Client // COMMAND GETKEYS for commands with movable keys
	scripts map[string]string

	mu         sync.Mutex
	violations []string
	seen       map[string]int // command (evalsha by script name) -> calls with keys
	multiKey   map[string]int // ... with two keys or more
	getkeys    int
}

// keyless commands take no key arguments (or are handled elsewhere).
var keyless = map[string]bool{
	"ping": true, "hello": true, "client": true, "cluster": true, "command": true, "info": true,
	"select": true, "auth": true, "readonly": true, "readwrite": true, "asking": true, "multi": true,
	"exec": true, "discard": true, "quit": true, "subscribe": true, "unsubscribe": true,
	"psubscribe": true, "punsubscribe": true, "publish": true, "pubsub": true, "script": true,
	"function": true, "time": true, "dbsize": true, "scan": true, "flushall": true, "flushdb": true,
	"config": true, "role": true, "echo": true, "wait": true, "debug": true, "lastsave": true,
	"latency": true, "slowlog": true, "reset": true,
}

func newSlotChecker(t *testing.T, anyNode string) *slotChecker {
	t.Helper()
	k := &slotChecker{t: t, scripts: map[string]string{}, seen: map[string]int{}, multiKey: map[string]int{}}
	k.side = redis.NewClient(&redis.Options{Addr: anyNode})
	t.Cleanup(func() { k.side.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := k.side.Command(ctx).Result()
	if err != nil {
		t.Fatalf("COMMAND: %v", err)
	}
	k.info = info
	files, _ := filepath.Glob("../internal/queue/lua/*.lua")
	games, _ := filepath.Glob("../examples/tictactoe/lua/*.lua")
	for _, f := range append(files, games...) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha1.Sum(src)
		k.scripts[hex.EncodeToString(sum[:])] = strings.TrimSuffix(filepath.Base(f), ".lua")
	}
	if len(k.scripts) == 0 {
		t.Fatal("no scripts found in ../internal/queue/lua")
	}
	return k
}

// keysOf returns the key arguments of one command.
func (k *slotChecker) keysOf(args []string) []string {
	if len(args) == 0 {
		return nil
	}
	name := strings.ToLower(args[0])
	switch name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		if len(args) < 3 {
			return nil
		}
		n, _ := strconv.Atoi(args[2])
		n = min(max(n, 0), len(args)-3)
		return args[3 : 3+n]
	case "xread", "xreadgroup":
		for i := 1; i < len(args); i++ {
			if strings.EqualFold(args[i], "streams") {
				rest := args[i+1:]
				return rest[:len(rest)/2]
			}
		}
		return nil
	}
	if keyless[name] {
		return nil
	}
	info := k.info[name]
	if info == nil || info.FirstKeyPos <= 0 || slices.Contains(info.Flags, "movablekeys") {
		return k.getKeys(args) // containers (XGROUP CREATE, XINFO STREAM) and movable keys
	}
	first, last, step := int(info.FirstKeyPos), int(info.LastKeyPos), max(int(info.StepCount), 1)
	if last < 0 {
		last += len(args)
	}
	var keys []string
	for i := first; i <= last && i < len(args); i += step {
		keys = append(keys, args[i])
	}
	return keys
}

func (k *slotChecker) getKeys(args []string) []string {
	k.mu.Lock()
	k.getkeys++
	k.mu.Unlock()
	a := []any{"command", "getkeys"}
	for _, s := range args {
		a = append(a, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := k.side.Do(ctx, a...).StringSlice()
	if err != nil {
		return nil // no key arguments
	}
	return keys
}

// label names a command for the tallies: evalsha by its script's name.
func (k *slotChecker) label(args []string) string {
	name := strings.ToLower(args[0])
	if strings.HasPrefix(name, "eval") && len(args) > 1 {
		id := args[1]
		if !strings.HasPrefix(name, "evalsha") {
			sum := sha1.Sum([]byte(id))
			id = hex.EncodeToString(sum[:])
		}
		if s, ok := k.scripts[id]; ok {
			return "script " + s
		}
		return name + " (not a farm script)"
	}
	return name
}

// command checks one command and returns its keys' slot (-1 if keyless).
func (k *slotChecker) command(where string, args []string) int {
	keys := k.keysOf(args)
	if len(keys) == 0 {
		return -1
	}
	label := k.label(args)
	slot := storetest.KeySlot(keys[0])
	bad := false
	for _, key := range keys[1:] {
		if storetest.KeySlot(key) != slot {
			bad = true
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seen[label]++
	if len(keys) > 1 {
		k.multiKey[label]++
	}
	if bad {
		k.violations = append(k.violations, fmt.Sprintf("%s: %s touches keys of several slots: %s", where, label, slotList(keys)))
	}
	return slot
}

// tx checks the commands of one MULTI/EXEC block.
func (k *slotChecker) tx(where string, cmds [][]string) {
	slot := -1
	var all []string
	bad := false
	for _, args := range cmds {
		keys := k.keysOf(args)
		all = append(all, keys...)
		for _, key := range keys {
			s := storetest.KeySlot(key)
			if slot == -1 {
				slot = s
			} else if s != slot {
				bad = true
			}
		}
	}
	if bad {
		k.mu.Lock()
		k.violations = append(k.violations, fmt.Sprintf("%s: MULTI block touches keys of several slots: %s", where, slotList(all)))
		k.mu.Unlock()
	}
}

func slotList(keys []string) string {
	var b strings.Builder
	for i, key := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (slot %d)", key, storetest.KeySlot(key))
	}
	return b.String()
}

func (k *slotChecker) takeViolations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.violations
	k.violations = nil
	return v
}

// dial is a redis Dialer whose connections report what they send.
func (k *slotChecker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &slotConn{Conn: nc, k: k, addr: addr}, nil
}

// slotConn parses the RESP commands written on a connection.
type slotConn struct {
	net.Conn
	k    *slotChecker
	addr string
	mu   sync.Mutex
	buf  []byte
	tx   [][]string // commands queued since MULTI
	inTx bool
}

func (c *slotConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.buf = append(c.buf, b...)
	for {
		args, n, ok := parseRESPCommand(c.buf)
		if !ok {
			break
		}
		c.buf = c.buf[n:]
		c.observe(args)
	}
	if len(c.buf) == 0 {
		c.buf = c.buf[:0:0]
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *slotConn) observe(args []string) {
	if len(args) == 0 {
		return
	}
	where := "wire to " + c.addr
	switch strings.ToLower(args[0]) {
	case "multi":
		c.inTx, c.tx = true, nil
		return
	case "exec", "discard":
		if c.inTx {
			c.k.tx(where, c.tx)
		}
		c.inTx, c.tx = false, nil
		return
	}
	c.k.command(where, args)
	if c.inTx {
		c.tx = append(c.tx, args)
	}
}

// parseRESPCommand parses one command (an array of bulk strings, or an
// inline command) from the front of b.
func parseRESPCommand(b []byte) (args []string, n int, ok bool) {
	line := func(from int) (string, int, bool) {
		i := bytes.Index(b[from:], []byte("\r\n"))
		if i < 0 {
			return "", 0, false
		}
		return string(b[from : from+i]), from + i + 2, true
	}
	if len(b) == 0 {
		return nil, 0, false
	}
	if b[0] != '*' {
		l, next, ok := line(0)
		if !ok {
			return nil, 0, false
		}
		return strings.Fields(l), next, true
	}
	l, pos, ok := line(0)
	if !ok {
		return nil, 0, false
	}
	count, err := strconv.Atoi(l[1:])
	if err != nil {
		return nil, len(b), true // not RESP: skip it all
	}
	for i := 0; i < count; i++ {
		l, next, ok := line(pos)
		if !ok {
			return nil, 0, false
		}
		if len(l) == 0 || l[0] != '$' {
			return nil, len(b), true // not a command: skip it all
		}
		size, err := strconv.Atoi(l[1:])
		if err != nil || size < 0 {
			return nil, len(b), true
		}
		if len(b) < next+size+2 {
			return nil, 0, false
		}
		args = append(args, string(b[next:next+size]))
		pos = next + size + 2
	}
	return args, pos, true
}

// slotHook is the go-redis hook form of the checker, for the test's own
// clients.
type slotHook struct{ k *slotChecker }

func cmdArgs(cmd redis.Cmder) []string {
	var out []string
	for _, a := range cmd.Args() {
		switch v := a.(type) {
		case string:
			out = append(out, v)
		case []byte:
			out = append(out, string(v))
		default:
			out = append(out, fmt.Sprint(v))
		}
	}
	return out
}

func (h slotHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h slotHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.k.command("hook", cmdArgs(cmd))
		return next(ctx, cmd)
	}
}

func (h slotHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var tx [][]string
		multi := len(cmds) > 0 && cmds[0].Name() == "multi"
		for _, c := range cmds {
			args := cmdArgs(c)
			if name := strings.ToLower(args[0]); name == "multi" || name == "exec" {
				continue
			}
			h.k.command("hook pipeline", args)
			tx = append(tx, args)
		}
		if multi {
			h.k.tx("hook TxPipeline", tx)
		}
		return next(ctx, cmds)
	}
}

// TestClusterSlotSafety runs a farm on a 3-master cluster with every
// connection of its gateways and workers watched, through the echo,
// counter, login/kick, groups, triggers, write_to_worker, timers, a
// periodic job, a stat reporter and the reaping of a dead gateway, and
// fails if any command or MULTI block touches keys of two slots. It first
// shows that the checker catches each kind of cross-slot call.
func TestClusterSlotSafety(t *testing.T) {
	c := storetest.StartCluster(t, 3, 0)
	ro := parseURL(t, c.URL())
	k := newSlotChecker(t, c.Addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("CheckerCatchesCrossSlot", func(t *testing.T) {
		o := *ro
		o.Dialer = k.dial
		rdb := redis.NewUniversalClient(&o)
		defer rdb.Close()
		rdb.AddHook(slotHook{k})
		a, b := "probe:{a}", "probe:{b}" // slots 15495 and 3300
		if storetest.KeySlot(a) == storetest.KeySlot(b) {
			t.Fatal("probe keys share a slot")
		}
		rdb.Eval(ctx, "return 1", []string{a, b})
		rdb.Del(ctx, a, b)
		rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{a, b, ">", ">"}, Block: -1})
		rdb.BLMove(ctx, a, b, "RIGHT", "LEFT", time.Millisecond)
		rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, a, 1, 0)
			p.Set(ctx, b, 1, 0)
			return nil
		})
		// A MULTI block on the wire: a single-node client does not split it.
		plain := redis.NewClient(&redis.Options{Addr: c.MasterOf(a), Dialer: k.dial})
		defer plain.Close()
		plain.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, a, 1, 0)
			p.Set(ctx, b, 1, 0)
			return nil
		})
		// Allowed: one slot per command, a plain pipeline across slots,
		// a MULTI block in one slot.
		rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, a, 1, 0)
			p.Set(ctx, b, 1, 0)
			return nil
		})
		rdb.Del(ctx, a+"1", a+"2")
		rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, a+"1", 1, 0)
			p.Set(ctx, a+"2", 1, 0)
			return nil
		})
		got := k.takeViolations()
		var text = strings.Join(got, "\n")
		for _, want := range []string{
			"hook: eval (not a farm script) touches",
			"wire to " + c.MasterOf(a) + ": eval (not a farm script) touches",
			"hook: del touches", "wire to " + c.MasterOf(a) + ": del touches",
			"hook: xreadgroup touches", "hook: blmove touches",
			"hook TxPipeline: MULTI block", "wire to " + c.MasterOf(a) + ": MULTI block",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("checker missed %q; it reported:\n%s", want, text)
			}
		}
		if strings.Contains(text, a+"1") || strings.Contains(text, "pipeline: set") {
			t.Errorf("checker flagged an allowed call:\n%s", text)
		}
	})

	// The farm, watched.
	o := *ro
	o.Dialer = k.dial
	f := newFarm(t, &o)
	mine := testClient(t, ro)
	mine.AddHook(slotHook{k})
	t.Cleanup(func() {
		// Runs after the farm's cleanups: gateways and workers have
		// stopped (lease release, gateway deregistration included).
		for _, v := range k.takeViolations() {
			t.Error(v)
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		var seen []string
		for l, n := range k.seen {
			seen = append(seen, fmt.Sprintf("%s=%d", l, n))
		}
		sort.Strings(seen)
		t.Logf("commands with keys: %s", strings.Join(seen, " "))
		t.Logf("with two keys or more: %v; COMMAND GETKEYS lookups: %d", k.multiKey, k.getkeys)
		// The farm's own scripts must all have run (a game's scripts and
		// dead_requeue, which needs an operator, are not part of
		// this run).
		var names []string
		for _, name := range k.scripts {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if k.seen["script "+name] > 0 {
				continue
			}
			if name == "dead_requeue" || strings.HasPrefix(name, "ttt_") {
				t.Logf("script %s not run here (its package's tests check its keys)", name)
				continue
			}
			t.Errorf("the run never called script %s: the check did not cover it", name)
		}
		for _, cmd := range []string{"xreadgroup", "xack", "lpush", "xadd"} {
			if k.seen[cmd] == 0 {
				t.Errorf("the run never sent %s", cmd)
			}
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			dumpQueues(t, mine, f.keys())
		}
	})
	gw1 := f.gateway(nil)
	gw2 := f.gateway(nil)
	timerApp := func() *worker.App {
		a := demo.New()
		a.Route(20, func(ctx context.Context, r *worker.Request) error {
			if _, err := r.ScheduleAfter(ctx, 200*time.Millisecond, 21, nil); err != nil {
				return err
			}
			id, err := r.ScheduleAfter(ctx, time.Hour, 21, nil)
			if err != nil {
				return err
			}
			if _, err := r.CancelTimer(ctx, id); err != nil {
				return err
			}
			return r.Reply(nil)
		})
		a.Route(21, func(ctx context.Context, r *worker.Request) error {
			return r.Broadcast(ctx, 121, []byte("timer fired"))
		})
		a.Every("tick", 200*time.Millisecond, func(ctx context.Context, r *worker.Request) error { return nil })
		return a
	}
	f.worker(timerApp(), nil)
	f.worker(timerApp(), nil)

	// A gateway that died without a word: any worker reaps it.
	st := queue.New(mine, f.prefix)
	dead := "deadgw"
	if _, err := store.New(mine, f.prefix).BindUser(ctx, "ghost", store.Session{Gateway: dead, Conn: dead + "-1"}, store.Kick); err != nil {
		t.Fatal(err)
	}
	if err := st.Heartbeat(ctx, f.keys().Gateways(), dead, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}

	// A stat reporter with queue lengths, on the test's hooked client.
	rep, err := stat.NewReporter(stat.ReporterOptions{Redis: mine, Prefix: f.prefix, Kind: stat.KindGateway,
		ID: "probe", Sample: func() stat.Sample { return stat.Sample{} }, Queues: true, Interval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	repDone := make(chan struct{})
	go func() { defer close(repDone); _ = rep.Run(rctx) }()
	defer func() { rcancel(); <-repDone }()

	// Echo and counters from 50 clients.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			gw := gw1
			if i%2 == 1 {
				gw = gw2
			}
			errs <- echoClient(ctx, gw.Addr().String(), i, 20)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	x := &twoByTwo{farm: f, gws: [2]*gateway.Server{gw1, gw2}, pub: trigger.NewPublisher(mine, f.prefix), ctx: ctx, cancel: cancel}
	a := x.login(t, 0, "alice")
	b := x.login(t, 1, "bob")
	x.login(t, 0, "bob") // kicks b
	expectClosed(t, b)
	for _, cmd := range []struct {
		cmd  int32
		body string
	}{{demo.CmdCounter, "c1"}, {demo.CmdCounter, "c2"}, {demo.CmdJoin, "lobby"}, {demo.CmdJoin, "table"}, {demo.CmdSay, "hi"}, {20, ""}} {
		if r, err := a.Request(ctx, cmd.cmd, []byte(cmd.body)); err != nil || r.Ret != 0 {
			t.Fatalf("cmd %d %q: ret %d err %v", cmd.cmd, cmd.body, r.Ret, err)
		}
	}
	expectPush(t, a, demo.CmdSay, "alice: hi")
	expectPush(t, a, 121, "timer fired")
	if _, err := x.pub.WriteToGroup(ctx, "lobby", 100, []byte("news")); err != nil {
		t.Fatal(err)
	}
	expectPush(t, a, 100, "news")
	if err := x.pub.WriteToWorker(ctx, 1, []byte("system echo")); err != nil {
		t.Fatal(err)
	}
	if _, err := x.pub.Publish(ctx, trigger.Message{Op: trigger.OpWriteToWorker, Cmd: 1, Body: "system echo 2"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dead gateway reaped", func() bool {
		_, err := store.New(mine, f.prefix).SessionOf(ctx, "ghost")
		return errors.Is(err, store.ErrNotFound)
	})
	if _, err := x.pub.CloseUsers(ctx, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, a)
	waitFor(t, "alice's session removed", func() bool {
		_, err := store.New(mine, f.prefix).SessionOf(ctx, "alice")
		return errors.Is(err, store.ErrNotFound)
	})
	time.Sleep(500 * time.Millisecond) // a few trims, timer ticks and periods
	if _, err := stat.Read(ctx, mine, f.prefix); err != nil {
		t.Errorf("stat.Read: %v", err)
	}
}

// dumpQueues logs, for a failed test, what waits in each partition.
func dumpQueues(t *testing.T, rdb redis.UniversalClient, k keys.Keys) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for p := 0; p < queue.DefaultPartitions; p++ {
		n, _ := rdb.XLen(ctx, k.Inbound(p)).Result()
		pend, _ := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: k.Inbound(p), Group: keys.ConsumerGroup, Start: "-", End: "+", Count: 100}).Result()
		timers, _ := rdb.ZCard(ctx, k.Timers(p)).Result()
		owner, _ := rdb.Get(ctx, k.Owner(p)).Result()
		groups, _ := rdb.XInfoGroups(ctx, k.Inbound(p)).Result()
		var desc []string
		for _, pe := range pend {
			msgs, _ := rdb.XRange(ctx, k.Inbound(p), pe.ID, pe.ID).Result()
			what := "?"
			if len(msgs) == 1 {
				if e, ok := msgs[0].Values["e"].(string); ok {
					env, err := queue.DecodeEnvelope([]byte(e))
					what = fmt.Sprintf("kind %d conn %s seq %d frame %d bytes %v", env.Kind, env.Conn, env.Seq, len(env.Frame), err)
				}
			}
			desc = append(desc, fmt.Sprintf("%s by %s idle %v deliveries %d: %s", pe.ID, pe.Consumer, pe.Idle, pe.RetryCount, what))
		}
		var lastDelivered string
		if len(groups) > 0 {
			lastDelivered = groups[0].LastDeliveredID
		}
		t.Logf("partition %d: len %d, owner %q, last delivered %s, timers %d, pending %d %v", p, n, owner, lastDelivered, timers, len(pend), desc)
	}
}

// --- failover -------------------------------------------------------------

// echoLoad keeps depth echo and counter requests in flight on each of n
// clients. Unlike startLoad it gives each request its own short deadline
// and goes on after one expires, so frames lost in a failover are counted
// instead of holding the test for a minute.
type echoLoad struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	conns []*client.Conn

	sent, answered, busy, unanswered, wrong atomic.Int64
	lastAnswer                              atomic.Int64 // unix ns
	mu                                      sync.Mutex
	errs                                    []error
}

func startEchoLoad(t *testing.T, addr string, n, depth int, timeout time.Duration) *echoLoad {
	t.Helper()
	l := &echoLoad{stop: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		l.conns = append(l.conns, c)
		for j := 0; j < depth; j++ {
			l.wg.Add(1)
			go l.run(c, i, j, timeout)
		}
	}
	return l
}

func (l *echoLoad) run(c *client.Conn, i, j int, timeout time.Duration) {
	defer l.wg.Done()
	for k := 0; ; k++ {
		select {
		case <-l.stop:
			return
		default:
		}
		cmd, body := demo.CmdEcho, fmt.Sprintf("c%d.%d.%d", i, j, k)
		if k%2 == 1 {
			cmd, body = demo.CmdCounter, "failover"
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		l.sent.Add(1)
		r, err := c.Request(ctx, cmd, []byte(body))
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			l.unanswered.Add(1)
		case err != nil:
			l.mu.Lock()
			l.errs = append(l.errs, fmt.Errorf("client %d: %w", i, err))
			l.mu.Unlock()
			return // the connection ended
		case r.Ret == box.RetBusy:
			l.busy.Add(1)
		case r.Ret != 0 || (cmd == demo.CmdEcho && string(r.Body) != body):
			l.wrong.Add(1)
		default:
			l.answered.Add(1)
			l.lastAnswer.Store(time.Now().UnixNano())
		}
	}
}

func (l *echoLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// lateReplies drains the replies that came after their request gave up,
// or twice: replies with an sn on Pushes.
func (l *echoLoad) lateReplies() int {
	n := 0
	for _, c := range l.conns {
	drain:
		for {
			select {
			case p := <-c.Pushes():
				if p.SN != 0 {
					n++
				}
			default:
				break drain
			}
		}
	}
	return n
}

// failoverCase is a Redis setup whose master the test kills.
type failoverCase struct {
	ro *redis.UniversalOptions
	// prepare, if set, looks at the farm before the kill.
	prepare func(f *farm)
	// kill kills a master and returns its address.
	kill func() string
	// healed waits until a replica took over and returns a node where a
	// trigger may be published.
	healed func(old string) (string, error)
}

// runFailover loads a farm (one gateway, two workers) from 20 clients,
// kills a master mid-load and checks: every client is still connected,
// every request sent after the failover is answered, triggers reach every
// client again, and the requests lost with the master are few.
func runFailover(t *testing.T, fc failoverCase) {
	f := newFarm(t, fc.ro)
	f.keepLog()
	gw := f.gateway(nil)
	w1, w2 := f.worker(nil, nil), f.worker(nil, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("at the end: worker partitions %d and %d, leases lost %d and %d, gateway redis errors %d",
				w1.Stats.Partitions.Load(), w2.Stats.Partitions.Load(), w1.Stats.LeasesLost.Load(), w2.Stats.LeasesLost.Load(), gw.Stats.RedisErrs.Load())
		}
	})
	if fc.prepare != nil {
		fc.prepare(f)
	}
	const clients, depth = 20, 2
	warm := dial(t, gw)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	if r, err := warm.Request(wctx, demo.CmdEcho, []byte("warm")); err != nil || string(r.Body) != "warm" {
		t.Fatalf("first echo: %q %v", r.Body, err)
	}
	wcancel()
	l := startEchoLoad(t, gw.Addr().String(), clients, depth, 8*time.Second)
	time.Sleep(1500 * time.Millisecond)
	before := l.answered.Load()
	old := fc.kill()
	killed := time.Now()
	trig, err := fc.healed(old)
	if err != nil {
		t.Fatalf("no failover: %v", err)
	}
	promoted := time.Since(killed)
	atKill := l.answered.Load()
	// Triggers work again once the gateway subscribed anew (pub/sub is
	// at most once: publish until the idle client gets one).
	pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer pcancel()
	var resub time.Duration
	for {
		redisCLI(t, pctx, trig, "PUBLISH", f.keys().TriggerChannel(), `{"op":"broadcast","cmd":131,"body":"probe"}`)
		select {
		case p := <-warm.Pushes():
			if p.Cmd != 131 {
				t.Fatalf("unexpected push %+v", p.Header)
			}
			resub = time.Since(killed)
		case <-time.After(200 * time.Millisecond):
		}
		if resub > 0 {
			break
		}
		if pctx.Err() != nil {
			t.Fatal("no trigger reached the gateway within 20s of the failover")
		}
	}
	// Keep the load on until the farm answers again, and a little more.
	waitFor(t, "answers after the failover", func() bool {
		return l.answered.Load() > atKill+int64(clients*depth)
	})
	resumed := time.Since(killed)
	time.Sleep(time.Second)
	l.finish()

	// Every client is still connected, and answers new requests.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, c := range l.conns {
		select {
		case <-c.Done():
			t.Errorf("client %d was disconnected: %v", i, c.Err())
			continue
		default:
		}
		for k := 0; k < 3; k++ {
			body := fmt.Sprintf("after failover %d.%d", i, k)
			r, err := c.Request(ctx, demo.CmdEcho, []byte(body))
			if err != nil || r.Ret != 0 || string(r.Body) != body {
				t.Errorf("client %d after the failover: ret %d body %q err %v, want %q", i, r.Ret, r.Body, err, body)
			}
		}
	}
	for _, err := range l.errs {
		t.Error(err)
	}
	// The broadcast reaches every client of the load.
	got := make([]bool, len(l.conns))
	for deadline := time.Now().Add(15 * time.Second); ; {
		redisCLI(t, ctx, trig, "PUBLISH", f.keys().TriggerChannel(), `{"op":"broadcast","cmd":130,"body":"after failover"}`)
		time.Sleep(200 * time.Millisecond)
		all := true
		for i, c := range l.conns {
		drain:
			for !got[i] {
				select {
				case p := <-c.Pushes():
					got[i] = p.SN == 0 && p.Cmd == 130
				default:
					break drain
				}
			}
			all = all && got[i]
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broadcast trigger after the failover reached %d of %d clients", count(got), len(got))
		}
	}
	late := l.lateReplies()
	stuck := stuckEntries(t, testClient(t, fc.ro), f.keys(), 8*time.Second)
	t.Logf("master %s killed after %d answers; replica promoted after %v; triggers work again after %v; answers resumed after %v",
		old, before, promoted.Round(time.Millisecond), resub.Round(time.Millisecond), resumed.Round(time.Millisecond))
	t.Logf("sent %d, answered %d, busy %d, wrong %d, unanswered within 8s %d (late replies seen %d, entries left pending %d); gateway redis errors %d",
		l.sent.Load(), l.answered.Load(), l.busy.Load(), l.wrong.Load(), l.unanswered.Load(), late, stuck, gw.Stats.RedisErrs.Load())
	// What may be lost is what the master accepted and did not replicate:
	// at most the requests in flight when it died.
	if n := l.unanswered.Load(); n > clients*depth {
		t.Errorf("%d requests unanswered, more than the %d in flight at the kill", n, clients*depth)
	}
	if l.wrong.Load() > 0 {
		t.Errorf("%d wrong replies", l.wrong.Load())
	}
}

// stuckEntries counts the entries of the farm's partitions delivered to a
// worker and not acknowledged for longer than idle.
func stuckEntries(t *testing.T, rdb redis.UniversalClient, k keys.Keys, idle time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	for p := 0; p < queue.DefaultPartitions; p++ {
		pend, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: k.Inbound(p), Group: keys.ConsumerGroup,
			Start: "-", End: "+", Count: 1000, Idle: idle}).Result()
		if err != nil {
			t.Logf("XPENDING on partition %d: %v", p, err)
			continue
		}
		for _, pe := range pend {
			t.Logf("partition %d: entry %s pending under %s for %v, %d deliveries", p, pe.ID, pe.Consumer, pe.Idle, pe.RetryCount)
		}
		n += len(pend)
	}
	return n
}

func count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// TestClusterFailover: 3 masters with a replica each; the master that
// serves the trigger channel's slot (and some partitions) is killed under
// load.
func TestClusterFailover(t *testing.T) {
	c := storetest.StartCluster(t, 3, 1)
	var victim string
	runFailover(t, failoverCase{
		ro: parseURL(t, c.URL()),
		prepare: func(f *farm) {
			ch := f.keys().TriggerChannel()
			victim = c.MasterOf(ch)
			n := 0
			for p := 0; p < queue.DefaultPartitions; p++ {
				if c.MasterOf(f.keys().Inbound(p)) == victim {
					n++
				}
			}
			t.Logf("victim %s serves the trigger channel %s and %d of %d partitions", victim, ch, n, queue.DefaultPartitions)
			if n == 0 {
				t.Fatalf("victim %s serves no partition", victim)
			}
		},
		kill: func() string {
			i := slices.Index(c.MasterAddrs(), victim)
			if i < 0 {
				t.Fatalf("victim %s is no longer a master", victim)
			}
			return c.KillMaster(i)
		},
		healed: func(old string) (string, error) {
			if err := c.WaitHealthy(20 * time.Second); err != nil {
				return "", fmt.Errorf("%v\n%s", err, c.Logs(10))
			}
			for _, a := range c.MasterAddrs() {
				if a != old {
					return a, nil
				}
			}
			return "", errors.New("no master left")
		},
	})
}

// TestSentinelFailover: a master, one replica, three Sentinels (quorum
// 2); the master is killed under load.
func TestSentinelFailover(t *testing.T) {
	s := storetest.StartSentinel(t, 1)
	runFailover(t, failoverCase{
		ro:   parseURL(t, s.URL()),
		kill: s.KillMaster,
		healed: func(old string) (string, error) {
			return s.WaitFailover(20*time.Second, old)
		},
	})
}
