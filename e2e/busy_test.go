package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/store/storetest"
)

// sendBurst writes n echo frames (sn 1..n) at once and returns the replies
// by sn that arrive within d.
func sendBurst(t *testing.T, addr string, n int, d time.Duration, after func()) map[uint32]box.Box {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var buf []byte
	for sn := 1; sn <= n; sn++ {
		buf = box.Append(buf, demo.CmdEcho, 0, uint32(sn), []byte("x"))
	}
	if _, err := nc.Write(buf); err != nil {
		t.Fatal(err)
	}
	got := map[uint32]box.Box{}
	r := box.NewReader(nc, 0)
	nc.SetReadDeadline(time.Now().Add(d))
	for len(got) < n {
		b, err := r.Next()
		if err != nil {
			break
		}
		got[b.SN] = b
		if len(got) == n-n/2 && after != nil {
			after()
			after = nil
		}
	}
	return got
}

// TestQueueBound: with no worker, a partition queue past --queue-bound
// answers -10002 at once instead of growing; what was queued is served once
// a worker starts.
func TestQueueBound(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := newFarm(t, b.redis(t))
			gw := f.gateway(func(o *gateway.Options) { o.QueueBound = 21 }) // the open event takes one slot
			started := false
			got := sendBurst(t, gw.Addr().String(), 50, 20*time.Second, func() {
				started = true
				f.worker(nil, nil)
			})
			if !started || len(got) != 50 {
				t.Fatalf("%d replies of 50", len(got))
			}
			ok, busy := 0, 0
			for sn, r := range got {
				switch r.Ret {
				case 0:
					ok++
				case box.RetBusy:
					busy++
				default:
					t.Errorf("sn %d: ret %d", sn, r.Ret)
				}
			}
			if ok != 20 || busy != 30 {
				t.Errorf("%d answered, %d busy; want 20 and 30", ok, busy)
			}
			if gw.Stats.Busy.Load() != 30 {
				t.Errorf("Stats.Busy = %d, want 30", gw.Stats.Busy.Load())
			}
		})
	}
}

// TestRedisAwayBacklog: while Redis is unreachable the gateway keeps the
// connection, holds up to --backlog frames and answers the rest -10002 at
// once; when Redis is back the held frames are served.
func TestRedisAwayBacklog(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	f := newFarm(t, &redis.UniversalOptions{Addrs: []string{srv.Addr}})
	gw := f.gateway(func(o *gateway.Options) { o.Backlog = 10 })
	f.worker(nil, nil)
	c := dial(t, gw)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if r, err := c.Request(ctx, demo.CmdEcho, []byte("up")); err != nil || string(r.Body) != "up" {
		t.Fatalf("before the outage: %q %v", r.Body, err)
	}
	srv.Kill()
	time.Sleep(300 * time.Millisecond)
	got := sendBurst(t, gw.Addr().String(), 40, 30*time.Second, func() { srv.Restart() })
	ok, busy := 0, 0
	for _, r := range got {
		switch r.Ret {
		case 0:
			ok++
		case box.RetBusy:
			busy++
		}
	}
	if len(got) != 40 || busy < 20 || ok < 1 {
		t.Fatalf("%d replies of 40: %d ok, %d busy; want all answered, the backlog (10) served, the rest busy", len(got), ok, busy)
	}
	// The first connection lived through it.
	if r, err := c.Request(ctx, demo.CmdEcho, []byte("back")); err != nil || string(r.Body) != "back" {
		t.Fatalf("after the outage: %q %v", r.Body, err)
	}
	t.Logf("%d served from the backlog, %d answered busy", ok, busy)
}
