package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

// statOnce is what TestOperatorTools reads of `maple stat --once --json`.
type statOnce struct {
	Processes []struct {
		Kind      string             `json:"kind"`
		Values    map[string]int64   `json:"values"`
		Quantiles map[string]float64 `json:"quantiles"`
		Recent    map[string]float64 `json:"recent_quantiles"`
	} `json:"processes"`
	Queues *struct {
		Lengths      []int64 `json:"lengths"`
		Total        int64   `json:"total"`
		PendingTotal int64   `json:"pending_total"`
	} `json:"queues"`
}

// TestOperatorTools runs the operator's commands against a farm of
// processes (`maple gateway`, `maple worker`, real Redis), as an operator
// would, for the rows of issue 16 about them:
//
//   - maple stat's p99 is estimated over the last second, not a histogram
//     bucket bound since the process started (it showed 5 ms for a client
//     p99 of 1.9 ms);
//   - its queues count what waits, not entries read, acknowledged and not
//     yet trimmed (1,376 "queued" at idle);
//   - maple trigger refuses a --prefix with no farm (it created
//     <prefix>:partitions and a queue nobody reads, and said "queued");
//   - maple dead shows an unreadable entry as such and refuses to requeue
//     it (it showed kind(0) and reported success).
func TestOperatorTools(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	srv := storetest.Start(t, storetest.Options{})
	prefix := storetest.Prefix(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	env := []string{"MAPLE_REDIS=" + srv.URL(), "MAPLE_PREFIX=" + prefix}
	startProc(t, env, mapleBin, "worker")
	port := storetest.FreePort(t)
	gatewayProc(t, env, port)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	keys := keys.New(prefix)
	maple := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, mapleBin, args...)
		cmd.Env = append(os.Environ(), "MAPLE_REDIS="+srv.URL())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	stat := func() statOnce {
		t.Helper()
		out, err := maple("stat", "--once", "--json", "--prefix", prefix)
		if err != nil {
			t.Fatalf("maple stat: %v\n%s", err, out)
		}
		var v statOnce
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("maple stat: %v in %q", err, out)
		}
		return v
	}
	gatewayOf := func(v statOnce) (values map[string]int64, since, recent map[string]float64) {
		for _, p := range v.Processes {
			if p.Kind == "gateway" {
				return p.Values, p.Quantiles, p.Recent
			}
		}
		t.Fatalf("no gateway in %+v", v)
		return nil, nil, nil
	}

	t.Run("stat p99 over the last second", func(t *testing.T) {
		// First slow: 320 requests of 30 ms (p99 since start: 25-50 ms).
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				c, err := client.Dial(ctx, addr, client.Options{})
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				for range 20 {
					if r, err := c.Request(ctx, demo.CmdSleep, []byte("30")); err != nil || r.Ret != 0 {
						t.Errorf("sleep: ret %d, %v", r.Ret, err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Then fast echoes, paced, while maple stat reads.
		fast, stopFast := context.WithCancel(ctx)
		var mu sync.Mutex
		var lat []time.Duration
		for range 4 {
			wg.Go(func() {
				c, err := client.Dial(ctx, addr, client.Options{})
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				for fast.Err() == nil {
					start := time.Now()
					if r, err := c.Request(ctx, demo.CmdEcho, []byte("x")); err != nil || r.Ret != 0 {
						t.Errorf("echo: ret %d, %v", r.Ret, err)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(start))
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		time.Sleep(1500 * time.Millisecond) // the gateway reports twice meanwhile
		v := stat()
		stopFast()
		wg.Wait()
		slices.Sort(lat)
		clientP99 := lat[len(lat)*99/100]
		_, since, recent := gatewayOf(v)
		p99, ok := recent["request_duration_seconds_p99"]
		t.Logf("gateway p99: %.3gms over the last second, %.3gms since start; client p99 %v over %d echoes",
			p99*1e3, since["request_duration_seconds_p99"]*1e3, clientP99, len(lat))
		// The fast echoes' p99, as the client saw it: a host that slows
		// them (the race detector, other tenants) slows the stat's too,
		// and the sleeps' p99 since start stays well above either.
		limit := max(25*time.Millisecond, 2*clientP99).Seconds()
		if !ok || p99 <= 0 || p99 >= limit || p99 >= since["request_duration_seconds_p99"] {
			t.Errorf("gateway p99 of the last second = %v (%v), want the fast echoes' (< %.3gs, and below the p99 since start)", p99, ok, limit)
		}
		// Since start, the 320 sleeps are about a fifth of the requests, so
		// the p99 is about their p95: 30 ms each, 16 at once, on two cores
		// under the race detector, a few of them end past 50 ms (the next
		// bucket; also in the release before). What matters is that it is
		// theirs, not the fast echoes' of the last second.
		if s := since["request_duration_seconds_p99"]; s < 0.025 || s > 0.1 {
			t.Errorf("gateway p99 since start = %v, want the slow requests' buckets (25ms, 100ms]", s)
		}
	})

	t.Run("stat queues at idle", func(t *testing.T) {
		// The farm is idle: its streams still hold entries read and
		// acknowledged (trimming keeps at least the last delivered one).
		time.Sleep(2500 * time.Millisecond) // a second with no request
		var streamed int64
		for p := range queue.DefaultPartitions {
			n, _ := rdb.XLen(ctx, keys.Inbound(p)).Result()
			streamed += n
		}
		v := stat()
		if q := v.Queues; q == nil || len(q.Lengths) != queue.DefaultPartitions || q.Total != 0 || q.PendingTotal != 0 {
			t.Errorf("queues at idle = %+v, want 16 partitions, nothing waiting or read and not acked", v.Queues)
		}
		if streamed == 0 {
			t.Error("the streams are empty at idle: this check proves nothing")
		}
		if _, _, recent := gatewayOf(v); len(recent) != 0 {
			t.Errorf("gateway p99 of an idle second = %v, want none", recent)
		}
		out, err := maple("stat", "--once", "--prefix", prefix)
		if err != nil || !strings.Contains(out, "16 partitions: none waiting; 0 read, not acked") || !strings.Contains(out, "INFL") {
			t.Errorf("maple stat at idle (%d entries in the streams): %v\n%s", streamed, err, out)
		}
	})

	t.Run("trigger refuses a prefix with no farm", func(t *testing.T) {
		wrong := prefix + "x"
		out, err := maple("trigger", "write_to_worker", "--prefix", wrong, "--cmd", "3", "--body", "ops")
		if err == nil || !strings.Contains(out, "no farm under --prefix") || strings.Contains(out, "queued") {
			t.Errorf("write_to_worker --prefix %s: %v\n%s", wrong, err, out)
		}
		if ks, _ := rdb.Keys(ctx, wrong+":*").Result(); len(ks) != 0 {
			t.Errorf("refused write_to_worker wrote %v", ks)
		}
		// The farm's prefix: the demo's counter route runs once.
		if out, err := maple("trigger", "write_to_worker", "--prefix", prefix, "--cmd", "3", "--body", "ops"); err != nil {
			t.Fatalf("write_to_worker: %v\n%s", err, out)
		}
		st := store.New(rdb, prefix)
		waitFor(t, "the counter route to run", func() bool {
			n, _ := st.Counter(ctx, "ops")
			return n == 1
		})
	})

	t.Run("dead letters an unreadable entry", func(t *testing.T) {
		// An operator's frame straight onto a queue, with a cmd that is
		// no number: the worker cannot read it and dead-letters it.
		in := keys.Inbound(5)
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: in, Values: []any{"cmd", "nine", "body", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
		var out string
		waitFor(t, "the unreadable entry in the dead letters", func() bool {
			out, _ = maple("dead", "list", "--prefix", prefix)
			return strings.Contains(out, "1 dead letters")
		})
		id, _, _ := strings.Cut(out, " ")
		if !strings.HasPrefix(id, "5/") || !strings.Contains(out, "unreadable (bad envelope: version)") ||
			!strings.Contains(out, `reason="unreadable entry"`) || strings.Contains(out, "kind(0)") {
			t.Errorf("maple dead list:\n%s", out)
		}
		before, _ := rdb.XLen(ctx, in).Result()
		out, err := maple("dead", "requeue", "--prefix", prefix, id)
		if err == nil || !strings.Contains(out, "maple: store: requeue "+id+": unreadable envelope") || !strings.Contains(out, "re-queued 0 of 1") {
			t.Errorf("maple dead requeue %s: %v\n%s", id, err, out)
		}
		if after, _ := rdb.XLen(ctx, in).Result(); after != before {
			t.Errorf("refused requeue changed the queue: %d entries, were %d", after, before)
		}
		if out, _ := maple("dead", "list", "--prefix", prefix); !strings.Contains(out, "1 dead letters, 1 unreadable") {
			t.Errorf("after a refused requeue:\n%s", out)
		}
	})
}
