package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/worker"
)

// The quickstart game's routes (examples/quickstart/game.go, a module of
// its own, so its constants cannot be imported here).
const (
	qsEcho     int32 = 1
	qsLogin    int32 = 2
	qsJoin     int32 = 10
	qsSay      int32 = 11
	qsVersion  int32 = 1000
	qsPushLine int32 = 102
)

// TestQuickstartReload deploys the game of docs/guide.md as the guide
// says: examples/quickstart built with -ldflags "-X main.version=v1", its
// gateway and two of its workers on a real redis-server, players logged in
// and talking in rooms (the game's own Lua script numbers every line) with
// requests in flight; then a build of v2 renamed over the binary and
// SIGHUP to the workers. cmd 1000 answers v2 once the old workers are
// gone, and the players see no reply lost, failed or given twice, no line
// numbered twice and no disconnect. The game's stat command shows the two
// v2 workers, which SIGTERM then drains.
func TestQuickstartReload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the quickstart game and runs its processes")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "quickstart")
	built := time.Now()
	buildQuickstart(t, "v1", bin)
	buildQuickstart(t, "v2", bin+".new") // the deploy's copy, renamed over bin below
	t.Logf("built v1 and v2 in %v", time.Since(built).Round(time.Millisecond))

	srv := storetest.Start(t, storetest.Options{})
	prefix := storetest.Prefix(t)
	farmFlags := []string{"--redis", srv.URL(), "--prefix", prefix}
	addr := "127.0.0.1:" + strconv.Itoa(storetest.FreePort(t))
	startProc(t, nil, bin, append([]string{"gateway", "--listen", addr}, farmFlags...)...)
	secret := "quickstart e2e secret"
	var old []*proc
	for range 2 {
		old = append(old, startProc(t, nil, bin, append([]string{"worker", "--login-secret", secret}, farmFlags...)...))
	}
	// The replacements are the old workers' children, not this test's:
	// they are found in the old workers' logs and stopped by pid.
	t.Cleanup(func() {
		for _, pid := range replacementPIDs(old) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	waitFor(t, "the quickstart gateway", func() bool {
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			return false
		}
		defer c.Close()
		r, err := c.Request(ctx, qsVersion, nil)
		return err == nil && r.Ret == 0 && string(r.Body) == "v1"
	})

	l := startQuickstartLoad(t, ctx, addr, []byte(secret), 16, 4)
	versions := pollVersion(t, ctx, addr)
	time.Sleep(1500 * time.Millisecond)
	if l.answered.Load() == 0 {
		t.Fatal("no requests answered before the reload")
	}

	// The deploy: the new build renamed over the old file, then SIGHUP.
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	hup := time.Now()
	for _, w := range old {
		w.signal(syscall.SIGHUP)
	}
	for i, w := range old {
		exited, err := w.wait(30 * time.Second)
		if !exited || err != nil {
			t.Fatalf("old worker %d after SIGHUP: exited=%v err=%v, want exit 0", i, exited, err)
		}
	}
	reload := time.Since(hup)
	gone := time.Now()
	for i := range 8 { // new connections land on every partition's worker
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Request(ctx, qsVersion, nil)
		c.Close()
		if err != nil || r.Ret != 0 || string(r.Body) != "v2" {
			t.Fatalf("cmd 1000 on connection %d after the reload: %q ret %d err %v, want v2", i, r.Body, r.Ret, err)
		}
	}
	if out, err := execCommand(bin, "client", "--addr", addr, "--cmd", "1000"); err != nil || !strings.Contains(out, `body="v2"`) {
		t.Fatalf("quickstart client --cmd 1000 after the reload: %v\n%s", err, out)
	}
	time.Sleep(time.Second)
	before := l.answered.Load()
	time.Sleep(time.Second)
	if l.answered.Load() == before {
		t.Fatal("no requests answered after the reload")
	}
	firstV2, lastV1 := versions.finish(t, gone)
	says := l.finish(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	for _, p := range l.players {
		// The room's counter, kept by the game's Lua, ran once per line.
		key := prefix + ":{room:" + p.room + "}:seq"
		n, err := rdb.Get(ctx, key).Int64()
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if n != p.said.Load() {
			t.Errorf("room %s: %d lines numbered, %d answered", p.room, n, p.said.Load())
		}
	}
	t.Logf("%d requests answered under load (%d lines said), 16 players x 4 in flight; reload: SIGHUP to both old workers gone %v; cmd 1000 last v1 %v, first v2 %v after SIGHUP",
		l.answered.Load(), says, reload.Round(time.Millisecond), lastV1.Sub(hup).Round(time.Millisecond), firstV2.Sub(hup).Round(time.Millisecond))

	// Watching: stat shows the two new workers, at v2 (the gateway,
	// never replaced, is still v1).
	out, err := execCommand(bin, append([]string{"stat", "--once", "--json"}, farmFlags...)...)
	if err != nil {
		t.Fatalf("quickstart stat: %v\n%s", err, out)
	}
	var view struct {
		Processes []struct {
			Kind    string `json:"kind"`
			PID     int    `json:"pid"`
			Version string `json:"version"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &view); err != nil {
		t.Fatalf("quickstart stat --json: %v\n%s", err, out)
	}
	var pids []int
	for _, p := range view.Processes {
		want := "v1"
		if p.Kind == "worker" {
			want = "v2"
			pids = append(pids, p.PID)
		}
		if p.Version != want {
			t.Errorf("stat: %s pid %d at version %q, want %s", p.Kind, p.PID, p.Version, want)
		}
	}
	slices.Sort(pids)
	if logged := replacementPIDs(old); !slices.Equal(pids, logged) {
		t.Errorf("stat shows workers %v, the old workers started %v", pids, logged)
	}

	// Draining: SIGTERM stops the new workers.
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range pids {
		deadline := time.Now().Add(15 * time.Second)
		for running(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d still running 15 s after SIGTERM", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// buildQuickstart builds examples/quickstart at version to out, as
// docs/guide.md does.
func buildQuickstart(t *testing.T, version, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, ".")
	cmd.Dir = filepath.Join("..", "examples", "quickstart")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, b)
	}
}

var replacementRe = regexp.MustCompile(`replacement is ready, draining" pid=(\d+)`)

// replacementPIDs returns, sorted, the pids of the processes that the old
// workers started on SIGHUP, from their logs.
func replacementPIDs(old []*proc) []int {
	var pids []int
	for _, p := range old {
		b, _ := os.ReadFile(p.log)
		for _, m := range replacementRe.FindAllSubmatch(b, -1) {
			if pid, err := strconv.Atoi(string(m[1])); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// running reports whether pid is a live process (not gone, not a zombie
// waiting for an init that does not reap).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && rest != "" && rest[0] != 'Z' && rest[0] != 'X'
}

// qsLoad is players of the quickstart game, each logged in and alone in a
// room of its own, sending echo and say requests until stopped.
type qsLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	answered atomic.Int64
	mu       sync.Mutex
	errs     []error
	players  []*qsPlayer
}

type qsPlayer struct {
	c    *client.Conn
	room string
	said atomic.Int64 // say requests answered

	mu      sync.Mutex
	numbers map[string]int // line number -> answers with it

	pushed  atomic.Int64 // line pushes
	dups    atomic.Int64 // replies to a request already answered
	readers sync.WaitGroup
}

func (l *qsLoad) fail(err error) {
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, err)
	}
	l.mu.Unlock()
}

// startQuickstartLoad logs n players in with tokens signed with secret;
// each keeps depth requests in flight, alternating echo and say.
func startQuickstartLoad(t *testing.T, ctx context.Context, addr string, secret []byte, n, depth int) *qsLoad {
	t.Helper()
	l := &qsLoad{stop: make(chan struct{})}
	for i := range n {
		c, err := client.Dial(ctx, addr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		p := &qsPlayer{c: c, room: "room-" + strconv.Itoa(i), numbers: map[string]int{}}
		uid := "player-" + strconv.Itoa(i)
		for _, req := range []struct {
			cmd  int32
			body string
		}{{qsLogin, worker.SignLogin(secret, uid, time.Now().Add(time.Hour))}, {qsJoin, p.room}} {
			if r, err := c.Request(ctx, req.cmd, []byte(req.body)); err != nil || r.Ret != 0 {
				t.Fatalf("%s: cmd %d: ret %d err %v", uid, req.cmd, r.Ret, err)
			}
		}
		p.readers.Go(func() {
			for {
				select {
				case b := <-c.Pushes():
					if b.SN != 0 {
						p.dups.Add(1)
					} else if b.Cmd == qsPushLine {
						p.pushed.Add(1)
					}
				case <-l.stop:
					return
				}
			}
		})
		l.players = append(l.players, p)
		for j := range depth {
			l.wg.Go(func() { l.run(ctx, p, i, j) })
		}
	}
	return l
}

func (l *qsLoad) run(ctx context.Context, p *qsPlayer, i, j int) {
	for k := 0; ; k++ {
		select {
		case <-l.stop:
			return
		default:
		}
		cmd, body := qsEcho, fmt.Sprintf("p%d.%d.%d", i, j, k)
		if k%2 == 1 {
			cmd = qsSay
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := p.c.Request(rctx, cmd, []byte(body))
		cancel()
		if err != nil {
			l.fail(fmt.Errorf("player %d: cmd %d: %w", i, cmd, err))
			return
		}
		l.answered.Add(1)
		switch {
		case r.Ret != 0:
			l.fail(fmt.Errorf("player %d: cmd %d: ret %d", i, cmd, r.Ret))
		case cmd == qsEcho && string(r.Body) != body:
			l.fail(fmt.Errorf("player %d: echo %q, want %q", i, r.Body, body))
		case cmd == qsSay:
			p.said.Add(1)
			p.mu.Lock()
			p.numbers[string(r.Body)]++
			p.mu.Unlock()
		}
	}
}

// finish stops the load, waits for every request in flight and for the
// pushes of every line, and checks what the players saw: no error, no
// disconnect, no duplicate reply, each line number 1..n once. It returns
// the lines said.
func (l *qsLoad) finish(t *testing.T) int64 {
	t.Helper()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	close(l.stop)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("requests still unanswered 60 s after the load stopped")
	}
	var says int64
	for i, p := range l.players {
		p.readers.Wait()
		// What is left: line pushes that came after their reply.
		for deadline := time.Now().Add(5 * time.Second); p.pushed.Load() < p.said.Load() && time.Now().Before(deadline); {
			select {
			case b := <-p.c.Pushes():
				if b.SN != 0 {
					p.dups.Add(1)
				} else if b.Cmd == qsPushLine {
					p.pushed.Add(1)
				}
			case <-time.After(10 * time.Millisecond):
			}
		}
		select {
		case <-p.c.Done():
			l.fail(fmt.Errorf("player %d was disconnected: %v", i, p.c.Err()))
		default:
		}
		if d := p.dups.Load(); d != 0 {
			t.Errorf("player %d: %d replies to requests already answered", i, d)
		}
		if p.pushed.Load() != p.said.Load() {
			t.Errorf("player %d: %d line pushes for %d lines said", i, p.pushed.Load(), p.said.Load())
		}
		n := p.said.Load()
		says += n
		for k := int64(1); k <= n; k++ {
			if c := p.numbers[strconv.FormatInt(k, 10)]; c != 1 {
				t.Errorf("player %d: line number %d answered %d times", i, k, c)
			}
		}
		if len(p.numbers) != int(n) {
			t.Errorf("player %d: %d distinct line numbers for %d lines", i, len(p.numbers), n)
		}
	}
	for _, err := range l.errs {
		t.Error(err)
	}
	return says
}

// versionPoll asks cmd 1000 on one connection, one request at a time,
// until finished.
type versionPoll struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen []versionSeen
	err  error
}

type versionSeen struct {
	sent    time.Time
	version string
}

func pollVersion(t *testing.T, ctx context.Context, addr string) *versionPoll {
	t.Helper()
	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	v := &versionPoll{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(v.done)
		for {
			select {
			case <-v.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			sent := time.Now()
			r, err := c.Request(ctx, qsVersion, nil)
			if err == nil && r.Ret != 0 {
				err = fmt.Errorf("ret %d", r.Ret)
			}
			v.mu.Lock()
			if err != nil {
				v.err = err
			} else {
				v.seen = append(v.seen, versionSeen{sent, string(r.Body)})
			}
			v.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return v
}

// finish stops the poll and checks it: v1 or v2, and only v2 for
// requests sent after gone (the old workers exited). It returns when the
// first v2 and the last v1 answers were asked for.
func (v *versionPoll) finish(t *testing.T, gone time.Time) (firstV2, lastV1 time.Time) {
	t.Helper()
	close(v.stop)
	<-v.done
	if v.err != nil {
		t.Errorf("cmd 1000 during the reload: %v", v.err)
	}
	for _, s := range v.seen {
		switch s.version {
		case "v1":
			lastV1 = s.sent
			if s.sent.After(gone) {
				t.Errorf("cmd 1000 sent %v after the old workers exited answered v1", s.sent.Sub(gone))
			}
		case "v2":
			if firstV2.IsZero() {
				firstV2 = s.sent
			}
		default:
			t.Errorf("cmd 1000 answered %q", s.version)
		}
	}
	if firstV2.IsZero() {
		t.Errorf("cmd 1000 never answered v2 on the polling connection")
	}
	return firstV2, lastV1
}
