package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/examples/tictactoe"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/worker"
)

// docACL returns the lines of the ```acl blocks of docs/security.md: the
// roles exactly as an operator would type them.
func docACL(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "```acl":
			in = true
		case strings.HasPrefix(l, "```"):
			in = false
		case in && l != "":
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 {
		t.Fatal("docs/security.md has no ```acl block")
	}
	return lines
}

// aclRedis is a redis-server (or each node of a cluster) with the roles
// of docs/security.md, an admin user for the test, and the default user
// turned off.
type aclRedis struct {
	addrs  []string
	admin  *redis.Client     // of addrs[0]
	admins []*redis.Client   // of every node
	pass   map[string]string // user -> password, from the lines
}

const aclAdminPass = "test-admin-password"

func startACLRedis(t *testing.T, lines []string) *aclRedis {
	t.Helper()
	return aclOn(t, []string{storetest.Start(t, storetest.Options{}).Addr}, lines, nil)
}

// aclOn runs the lines on every server of addrs, then extra on each of
// their users (like "+cluster|slots"), and turns default off.
func aclOn(t *testing.T, addrs []string, lines []string, extra []string) *aclRedis {
	t.Helper()
	ctx := t.Context()
	a := &aclRedis{addrs: addrs, pass: map[string]string{}}
	for _, addr := range addrs {
		def := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		run := func(args ...string) {
			t.Helper()
			if err := def.Do(ctx, anys(args)...).Err(); err != nil {
				t.Fatalf("%s on %s: %v", strings.Join(args, " "), addr, err)
			}
		}
		run("ACL", "SETUSER", "test-admin", "on", ">"+aclAdminPass, "~*", "&*", "+@all")
		var users []string
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) < 3 || !strings.EqualFold(f[0], "ACL") || !strings.EqualFold(f[1], "SETUSER") {
				t.Fatalf("not an ACL SETUSER line: %q", l)
			}
			if _, ok := a.pass[f[2]]; !ok {
				users = append(users, f[2])
			}
			for _, r := range f[3:] {
				if strings.HasPrefix(r, ">") {
					a.pass[f[2]] = r[1:]
				}
			}
			run(f...)
		}
		if len(extra) > 0 {
			for u := range a.pass {
				run(append([]string{"ACL", "SETUSER", u}, extra...)...)
			}
		}
		run("ACL", "SETUSER", "default", "off")
		def.Close()
		admin := redis.NewClient(&redis.Options{Addr: addr, Username: "test-admin", Password: aclAdminPass})
		t.Cleanup(func() { admin.Close() })
		a.admins = append(a.admins, admin)
		// The default user is off: a client without a user gets nothing.
		anon := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Fatalf("PING without a user on %s: %v, want NOAUTH", addr, err)
		}
		anon.Close()
		if err := admin.ACLLogReset(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	a.admin = a.admins[0]
	return a
}

// anys converts args for Do.
func anys(args []string) []any {
	out := make([]any, len(args))
	for i, s := range args {
		out[i] = s
	}
	return out
}

// url is the --redis URL of user: one server, or a cluster's nodes.
func (a *aclRedis) url(t *testing.T, user string) string {
	t.Helper()
	p, ok := a.pass[user]
	if !ok {
		t.Fatalf("no user %s in docs/security.md", user)
	}
	if len(a.addrs) > 1 {
		return "redis-cluster://" + user + ":" + p + "@" + strings.Join(a.addrs, ",")
	}
	return "redis://" + user + ":" + p + "@" + a.addrs[0] + "/0"
}

// refusals returns what Redis refused since the last call, on every
// node, as "user reason object (context)" (ACL LOG), and clears the logs.
func (a *aclRedis) refusals(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // also in a Cleanup
	defer cancel()
	var out []string
	for _, admin := range a.admins {
		log, err := admin.ACLLog(ctx, 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.ACLLogReset(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		for _, e := range log {
			out = append(out, e.Username+" "+e.Reason+" "+e.Object+" ("+e.Context+")")
		}
	}
	return out
}

// mapleAs runs a maple command with --redis url (and the default prefix)
// and returns its output.
func mapleAs(ctx context.Context, url string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, mapleBin, args...)
	cmd.Env = append(os.Environ(), "MAPLE_REDIS="+url, "MAPLE_PREFIX=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// onlyOperatorLooked checks that Redis refused nobody anything but the
// operator's PING and its look for a farm (EXISTS), which maple trigger
// does without.
func onlyOperatorLooked(t *testing.T, refused []string) {
	t.Helper()
	for _, r := range refused {
		if !strings.HasPrefix(r, "maple-operator command ping ") && !strings.HasPrefix(r, "maple-operator command exists ") {
			t.Errorf("Redis refused %s", r)
		}
	}
}

// waitPush waits for a push of cmd on c, skipping others (the lobby's
// presence pushes), and returns its body.
func waitPush(t *testing.T, c *client.Conn, cmd int32) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-c.Pushes():
			if p.Cmd == cmd && p.SN == 0 {
				return string(p.Body)
			}
		case <-c.Done():
			t.Fatalf("connection closed while waiting for a push of cmd %d: %v", cmd, c.Err())
		case <-deadline:
			t.Fatalf("no push of cmd %d within 10s", cmd)
		}
	}
}

// TestACLRoles runs a farm of processes on a redis-server whose default
// user is off, each with a role of docs/security.md, exactly as written
// there (issue 12, item 2):
//
//   - gateways and workers with the farm role serve echoes, logins (and a
//     kick), counters, groups, tic-tac-toe with its turn timers, a frame
//     of a killed worker claimed by the next, a dead gateway reaped, an
//     unreadable entry dead-lettered, a periodic job: Redis refuses them
//     nothing (ACL LOG stays empty);
//   - `maple trigger` works with the operator role, which may only
//     PUBLISH on maple:trigger: broadcast, write_to_users,
//     write_to_group, close_users, and write_to_worker through the
//     gateways; with no gateway it says nobody received it;
//   - `maple stat --once` and `maple dead list` work with the reader
//     role, which Redis refuses nothing either;
//   - a role too narrow for a process stops it at start with one line:
//     "redis user lacks permission: <Redis's words>; see
//     docs/security.md".
func TestACLRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	a := startACLRedis(t, docACL(t))
	top := t // processes outlive the subtest that starts them
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	farmURL, opURL, readURL := a.url(t, "maple-farm"), a.url(t, "maple-operator"), a.url(t, "maple-reader")
	maple := func(url string, args ...string) (string, error) { return mapleAs(ctx, url, args...) }
	farmEnv := []string{"MAPLE_REDIS=" + farmURL, "MAPLE_PREFIX="}
	workerArgs := []string{"worker", "--lease", "1s", "--gateway-timeout", "2s"}
	wk := startProc(t, farmEnv, mapleBin, workerArgs...)
	ports := [2]int{storetest.FreePort(t), storetest.FreePort(t)}
	gw1 := gatewayProc(t, farmEnv, ports[0])
	gw2 := gatewayProc(t, farmEnv, ports[1])
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	// The helpers take the subtest's t; connections live until the end.
	conn := func(t *testing.T, i int) *client.Conn {
		t.Helper()
		c, err := client.Dial(ctx, addr(i), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		top.Cleanup(func() { c.Close() })
		return c
	}
	call := func(t *testing.T, c *client.Conn, cmd int32, body string) (int32, string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := c.Request(rctx, cmd, []byte(body))
		if err != nil {
			t.Fatalf("cmd %d %q: %v", cmd, body, err)
		}
		return r.Ret, string(r.Body)
	}
	must := func(t *testing.T, c *client.Conn, cmd int32, body string) string {
		t.Helper()
		ret, b := call(t, c, cmd, body)
		if ret != 0 {
			t.Fatalf("cmd %d %q: ret %d body %q", cmd, body, ret, b)
		}
		return b
	}
	noRefusals := func(t *testing.T, what string) {
		t.Helper()
		if r := a.refusals(t); len(r) != 0 {
			t.Errorf("%s: Redis refused %v", what, r)
		}
	}
	keys := keys.New("")
	var alice, bob *client.Conn
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Redis refused (ACL LOG): %v", a.refusals(t))
		}
	})

	t.Run("farm role serves", func(t *testing.T) {
		c := conn(t, 0)
		if got := must(t, c, demo.CmdEcho, "hi"); got != "hi" {
			t.Errorf("echo: %q", got)
		}
		alice, bob = conn(t, 0), conn(t, 1)
		must(t, alice, demo.CmdLogin, "alice")
		must(t, bob, demo.CmdLogin, "bob")
		if got := must(t, alice, demo.CmdCounter, "acl"); got != "1" {
			t.Errorf("counter: %q", got)
		}
		// A second login of a user kicks the first, on the other gateway.
		old := conn(t, 0)
		must(t, old, demo.CmdLogin, "bob2")
		must(t, conn(t, 1), demo.CmdLogin, "bob2")
		expectClosed(t, old)
		// Groups: both join, alice says something, both get it.
		for _, p := range []*client.Conn{alice, bob} {
			must(t, p, demo.CmdJoin, "room")
		}
		must(t, alice, demo.CmdSay, "hello")
		for _, p := range []*client.Conn{alice, bob} {
			if got := waitPush(t, p, demo.CmdSay); got != "alice: hello" {
				t.Errorf("say: push %q", got)
			}
		}
		// Tic-tac-toe: its scripts and turn timers (added, cancelled).
		must(t, alice, tictactoe.CmdLobby, "")
		must(t, bob, tictactoe.CmdLobby, "")
		must(t, alice, tictactoe.CmdChallenge, "bob")
		if ret, _ := call(t, alice, tictactoe.CmdMove, "4"); ret != 0 {
			must(t, bob, tictactoe.CmdMove, "4")
		}
		must(t, alice, tictactoe.CmdResign, "")
		noRefusals(t, "echo, logins, groups, tic-tac-toe")
	})

	t.Run("farm role claims a killed worker's frames", func(t *testing.T) {
		c := conn(t, 0)
		done := make(chan string, 1)
		go func() {
			r, err := c.Request(ctx, demo.CmdSleep, []byte("1500"))
			if err != nil {
				done <- err.Error()
				return
			}
			done <- strconv.Itoa(int(r.Ret)) + " " + string(r.Body)
		}()
		time.Sleep(500 * time.Millisecond) // the worker runs it
		wk.signal(syscall.SIGKILL)
		wk.wait(5 * time.Second)
		wk = startProc(top, farmEnv, mapleBin, workerArgs...)
		select {
		case got := <-done:
			if got != "0 1500" {
				t.Errorf("the killed worker's frame: %s, want ret 0 body 1500", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the killed worker's frame was not run again within 20s")
		}
		noRefusals(t, "takeover")
	})

	t.Run("farm role reaps a dead gateway", func(t *testing.T) {
		gw2.signal(syscall.SIGKILL)
		gw2.wait(5 * time.Second)
		waitFor(t, "bob's session to go with his gateway", func() bool {
			n, err := a.admin.Exists(ctx, keys.Session("bob")).Result()
			return err == nil && n == 0
		})
		noRefusals(t, "reaper")
	})

	t.Run("farm role dead-letters", func(t *testing.T) {
		if err := a.admin.XAdd(ctx, &redis.XAddArgs{Stream: keys.Inbound(5), Values: []any{"cmd", "nine"}}).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the unreadable entry in the dead letters", func() bool {
			n, _ := a.admin.XLen(ctx, keys.Dead(5)).Result()
			return n == 1
		})
		noRefusals(t, "dead letters")
	})

	t.Run("operator role publishes triggers", func(t *testing.T) {
		out, err := maple(opURL, "trigger", "broadcast", "--cmd", "900", "--body", "all")
		if err != nil || !strings.Contains(out, "broadcast: published to 1 gateways") {
			t.Fatalf("broadcast: %v\n%s", err, out)
		}
		if got := waitPush(t, alice, 900); got != "all" {
			t.Errorf("broadcast: push %q", got)
		}
		if out, err := maple(opURL, "trigger", "write_to_users", "--uids", "alice,nobody", "--cmd", "901", "--body", "you"); err != nil {
			t.Fatalf("write_to_users: %v\n%s", err, out)
		}
		if got := waitPush(t, alice, 901); got != "you" {
			t.Errorf("write_to_users: push %q", got)
		}
		if out, err := maple(opURL, "trigger", "write_to_group", "--group", "room", "--cmd", "902", "--body", "room"); err != nil {
			t.Fatalf("write_to_group: %v\n%s", err, out)
		}
		if got := waitPush(t, alice, 902); got != "room" {
			t.Errorf("write_to_group: push %q", got)
		}
		// write_to_worker goes through the gateways: twice, two runs.
		for range 2 {
			out, err := maple(opURL, "trigger", "write_to_worker", "--cmd", strconv.Itoa(int(demo.CmdCounter)), "--body", "ops")
			if err != nil || !strings.Contains(out, "published to 1 gateways") {
				t.Fatalf("write_to_worker: %v\n%s", err, out)
			}
		}
		st := store.New(a.admin, "")
		waitFor(t, "the counter route to run twice", func() bool {
			n, _ := st.Counter(ctx, "ops")
			return n == 2
		})
		if out, err := maple(opURL, "trigger", "close_users", "--uids", "alice"); err != nil {
			t.Fatalf("close_users: %v\n%s", err, out)
		}
		expectClosed(t, alice)
		// Another farm's channel is not this role's.
		out, err = maple(opURL, "trigger", "broadcast", "--prefix", "other", "--cmd", "900")
		if err == nil || !strings.Contains(out, "redis user lacks permission: NOPERM") || !strings.Contains(out, "see docs/security.md") {
			t.Errorf("broadcast on another prefix: %v\n%s", err, out)
		}
		// Redis refused the operator only its PING and the look for a
		// farm (EXISTS), which maple trigger does without; the farm
		// nothing.
		for _, r := range a.refusals(t) {
			if !strings.HasPrefix(r, "maple-operator command ping ") && !strings.HasPrefix(r, "maple-operator command exists ") &&
				!strings.HasPrefix(r, "maple-operator channel other:trigger ") {
				t.Errorf("Redis refused %s", r)
			}
		}
	})

	t.Run("reader role watches", func(t *testing.T) {
		out, err := maple(readURL, "stat", "--once")
		if err != nil || !strings.Contains(out, "1 gateway, 1 worker") {
			t.Errorf("maple stat --once: %v\n%s", err, out)
		}
		out, err = maple(readURL, "dead", "list")
		if err != nil || !strings.Contains(out, "1 dead letters, 1 unreadable") {
			t.Errorf("maple dead list: %v\n%s", err, out)
		}
		noRefusals(t, "maple stat, maple dead list")
		// It can change nothing.
		out, err = maple(readURL, "trigger", "broadcast", "--cmd", "900")
		if err == nil || !strings.Contains(out, "redis user lacks permission: NOPERM") || !strings.Contains(out, "'publish'") {
			t.Errorf("broadcast as the reader: %v\n%s", err, out)
		}
		a.refusals(t)
	})

	t.Run("farm role runs a game's worker with a periodic job", func(t *testing.T) {
		// In place of the worker process: a worker of this process, as a
		// game would run it (worker.Options.Redis with the farm's user).
		wk.signal(syscall.SIGTERM)
		if exited, err := wk.wait(15 * time.Second); !exited || err != nil {
			t.Fatalf("worker on SIGTERM: exited %v, %v", exited, err)
		}
		app := demo.New()
		tictactoe.Register(app, tictactoe.Options{})
		var ticks atomic.Int64
		app.Every("acl-tick", 200*time.Millisecond, func(ctx context.Context, r *worker.Request) error {
			ticks.Add(1)
			return nil
		})
		f := &farm{t: top, prefix: store.DefaultPrefix, ro: &redis.UniversalOptions{
			Addrs: a.addrs, Username: "maple-farm", Password: a.pass["maple-farm"]}}
		f.worker(app, nil)
		waitFor(t, "the periodic job to run twice", func() bool { return ticks.Load() >= 2 })
		c := conn(t, 0)
		must(t, c, demo.CmdLogin, "carol")
		if got := must(t, c, demo.CmdCounter, "acl"); got != "2" {
			t.Errorf("counter: %q", got)
		}
		noRefusals(t, "a game's worker, periodic job")
	})

	t.Run("too narrow a role stops a process at start", func(t *testing.T) {
		for _, c := range []struct {
			role, url string
			args      []string
			want      string
		}{
			{"reader", readURL, []string{"worker"}, "maple: worker: redis [" + a.addrs[0] + "]: redis user lacks permission: store: partitions: " +
				"NOPERM this user has no permissions to run the 'set' command; see docs/security.md"},
			{"reader", readURL, []string{"gateway", "--listen", "127.0.0.1:0"}, "maple: gateway: redis [" + a.addrs[0] + "]: redis user lacks permission: " +
				"store: partitions: NOPERM this user has no permissions to run the 'set' command; see docs/security.md"},
			{"operator", opURL, []string{"worker"}, "redis user lacks permission: NOPERM this user has no permissions to run the 'ping' command; see docs/security.md"},
			{"operator", opURL, []string{"dead", "list"}, "redis user lacks permission: NOPERM this user has no permissions to run the 'ping' command; see docs/security.md"},
			// The farm role of another prefix: the keys are not its.
			{"farm", farmURL, []string{"worker", "--prefix", "other"}, "redis user lacks permission: store: partitions: " +
				"NOPERM this user has no permissions to access one of the keys used as arguments; see docs/security.md"},
		} {
			out, err := maple(c.url, c.args...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("maple %s as the %s: %v, want %q in\n%s", strings.Join(c.args, " "), c.role, err, c.want, out)
			}
		}
		// The farm role without the trigger channel: the gateway serves,
		// and says at once that triggers will not reach it.
		for _, l := range docACL(t) {
			if f := strings.Fields(l); f[2] == "maple-farm" {
				f[2] = "farm-nochan"
				if err := a.admin.Do(ctx, anys(append(f, "resetchannels"))...).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		a.pass["farm-nochan"] = a.pass["maple-farm"]
		gw := gatewayProc(t, []string{"MAPLE_REDIS=" + a.url(t, "farm-nochan"), "MAPLE_PREFIX="}, storetest.FreePort(t))
		const want = `level=ERROR msg="redis user lacks permission to subscribe: triggers will not reach this gateway; see docs/security.md" ` +
			`gw=`
		waitFor(t, "the gateway to log the refused subscription", func() bool {
			b, _ := os.ReadFile(gw.log)
			return strings.Contains(string(b), want) && strings.Contains(string(b), "channel=maple:trigger err=\"NOPERM ")
		})
		a.refusals(t)
	})

	t.Run("no gateway received a trigger", func(t *testing.T) {
		gw1.signal(syscall.SIGTERM)
		gw1.wait(10 * time.Second)
		out, err := maple(opURL, "trigger", "broadcast", "--cmd", "900")
		if err == nil || !strings.Contains(out, "no gateway received it on maple:trigger") {
			t.Errorf("broadcast with no gateway: %v\n%s", err, out)
		}
		out, err = maple(opURL, "trigger", "write_to_worker", "--cmd", "3", "--body", "ops")
		if err == nil || !strings.Contains(out, "no gateway received it on maple:trigger") || !strings.Contains(out, "not queued") {
			t.Errorf("write_to_worker with no gateway: %v\n%s", err, out)
		}
		out, err = maple(opURL, "trigger", "broadcast", "--cmd", "900", "--force")
		if err != nil || !strings.Contains(out, "broadcast: published to 0 gateways") {
			t.Errorf("broadcast --force with no gateway: %v\n%s", err, out)
		}
	})
}

// TestACLRolesOnCluster: the roles of docs/security.md on a 3-master Redis
// Cluster, with what that page adds for a cluster (+cluster|slots
// +command, the users on every node): a gateway and a worker with the farm
// role serve echoes, logins and group pushes; the operator role's triggers
// (write_to_users, write_to_worker through the gateways) reach them; the
// reader role runs maple stat --once and maple dead list; Redis refuses
// nothing else on any node.
func TestACLRolesOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	c := storetest.StartCluster(t, 3, 0)
	a := aclOn(t, c.Addrs, docACL(t), []string{"+cluster|slots", "+command"})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	farmEnv := []string{"MAPLE_REDIS=" + a.url(t, "maple-farm"), "MAPLE_PREFIX="}
	startProc(t, farmEnv, mapleBin, "worker")
	port := storetest.FreePort(t)
	gatewayProc(t, farmEnv, port)
	var ps [2]*client.Conn
	for i, uid := range []string{"alice", "bob"} {
		p, err := client.Dial(ctx, "127.0.0.1:"+strconv.Itoa(port), client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ps[i] = p
		for _, req := range []struct {
			cmd  int32
			body string
		}{{demo.CmdEcho, "hi"}, {demo.CmdLogin, uid}, {demo.CmdJoin, "room"}} {
			if r, err := p.Request(ctx, req.cmd, []byte(req.body)); err != nil || r.Ret != 0 {
				t.Fatalf("%s: cmd %d: ret %d, %v", uid, req.cmd, r.Ret, err)
			}
		}
	}
	if r, err := ps[0].Request(ctx, demo.CmdSay, []byte("hello")); err != nil || r.Ret != 0 {
		t.Fatalf("say: ret %d, %v", r.Ret, err)
	}
	for _, p := range ps {
		if got := waitPush(t, p, demo.CmdSay); got != "alice: hello" {
			t.Errorf("say: push %q", got)
		}
	}
	opURL := a.url(t, "maple-operator")
	if out, err := mapleAs(ctx, opURL, "trigger", "write_to_users", "--uids", "bob", "--cmd", "901", "--body", "you"); err != nil ||
		!strings.Contains(out, "published to 1 gateways") {
		t.Fatalf("write_to_users: %v\n%s", err, out)
	}
	if got := waitPush(t, ps[1], 901); got != "you" {
		t.Errorf("write_to_users: push %q", got)
	}
	if out, err := mapleAs(ctx, opURL, "trigger", "write_to_worker", "--cmd", strconv.Itoa(int(demo.CmdCounter)), "--body", "ops"); err != nil {
		t.Fatalf("write_to_worker: %v\n%s", err, out)
	}
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: a.addrs, Username: "test-admin", Password: aclAdminPass})
	defer admin.Close()
	st := store.New(admin, "")
	waitFor(t, "the counter route to run", func() bool {
		n, _ := st.Counter(ctx, "ops")
		return n == 1
	})
	readURL := a.url(t, "maple-reader")
	if out, err := mapleAs(ctx, readURL, "stat", "--once"); err != nil || !strings.Contains(out, "1 gateway, 1 worker") {
		t.Errorf("maple stat --once: %v\n%s", err, out)
	}
	if out, err := mapleAs(ctx, readURL, "dead", "list"); err != nil || !strings.Contains(out, "0 dead letters") {
		t.Errorf("maple dead list: %v\n%s", err, out)
	}
	onlyOperatorLooked(t, a.refusals(t))
}
