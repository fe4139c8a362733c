package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
)

// These tests check the limits one client meets (docs/operations.md,
// "Limits and abuse") on a gateway with a real redis-server and no
// worker: what the client sees, and that the other clients do not notice.

// TestMaxInflight: frames past a connection's MaxInflight are answered
// -10002 at once and not queued; another connection is not affected.
func TestMaxInflight(t *testing.T) {
	gw, rdb := startGateway(t, Options{MaxInflight: 5})
	greedy, greedyID := dialConn(t, gw)
	other, otherID := dialConn(t, gw)
	var burst []byte
	for sn := uint32(1); sn <= 8; sn++ {
		burst = box.Append(burst, 1, 0, sn, []byte("x"))
	}
	if _, err := greedy.Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = greedy.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := box.NewReader(greedy, 0)
	for sn := uint32(6); sn <= 8; sn++ {
		b, err := r.Next()
		if err != nil || b.SN != sn || b.Ret != box.RetBusy {
			t.Fatalf("greedy client: got sn=%d ret=%d err=%v, want sn=%d ret=%d", b.SN, b.Ret, err, sn, box.RetBusy)
		}
	}
	if _, err := other.Write(box.Append(nil, 1, 0, 1, []byte("mine"))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	waitFor(t, 10*time.Second, "the other client's frame queued", func() bool {
		return len(queuedFrames(ctx, t, gw, rdb, otherID)) == 1
	})
	if got := len(queuedFrames(ctx, t, gw, rdb, greedyID)); got != 5 {
		t.Errorf("greedy client has %d frames queued, want 5", got)
	}
	if n := gw.Stats.OverInflight.Load(); n != 3 {
		t.Errorf("Stats.OverInflight = %d, want 3", n)
	}
	// An answer frees a place: the next frame is queued.
	if err := lpushAll(ctx, rdb, gw.keys.Outbound(gw.ID()), [][]byte{replyTo(greedyID, 1)}); err != nil {
		t.Fatal(err)
	}
	if b, err := r.Next(); err != nil || b.SN != 1 || b.Ret != 0 {
		t.Fatalf("reply: sn=%d ret=%d err=%v", b.SN, b.Ret, err)
	}
	if _, err := greedy.Write(box.Append(nil, 1, 0, 9, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a sixth frame queued after a reply", func() bool {
		return len(queuedFrames(ctx, t, gw, rdb, greedyID)) == 6
	})
}

// replyTo is a worker's reply (or, with no frames, its "done, no reply")
// to connection conn's frame sn.
func replyTo(conn string, sn uint32) []byte {
	return outWriteAt(conn, box.Append(nil, 1, 0, sn, nil))
}

// TestMaxConnsPerIP: past the limit a connection from the same address is
// closed at once; the others stay.
func TestMaxConnsPerIP(t *testing.T) {
	gw, _ := startGateway(t, Options{MaxConnsPerIP: 2})
	dialConn(t, gw)
	second, _ := dialConn(t, gw)
	third, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := third.Read(make([]byte, 1)); !isClosedErr(err) {
		t.Fatalf("third connection: read n=%d err=%v, want closed", n, err)
	}
	waitFor(t, 5*time.Second, "Stats.PerIPRefused == 1", func() bool { return gw.Stats.PerIPRefused.Load() == 1 })
	if n := gw.Stats.Conns.Load(); n != 2 {
		t.Errorf("Conns = %d, want 2", n)
	}
	// Closing one makes room again.
	second.Close()
	waitFor(t, 5*time.Second, "Conns == 1", func() bool { return gw.Stats.Conns.Load() == 1 })
	dialConn(t, gw)
	if n := gw.Stats.PerIPRefused.Load(); n != 1 {
		t.Errorf("PerIPRefused = %d after a place was freed, want 1", n)
	}
}

// TestFrameTimeout: a client that starts a frame and sends the rest a
// byte now and then is closed after FrameTimeout, within FrameSweep more
// (the bound FrameSweep states; 1 s more for the loop's wake and this
// test's reader on a busy machine: a frame-timeout close that late is a
// sweep that missed its turn); one that completes its frames in time is
// not.
func TestFrameTimeout(t *testing.T) {
	const ft = time.Second
	gw, _ := startGateway(t, Options{FrameTimeout: ft})
	slow, _ := dialConn(t, gw)
	steady, _ := dialConn(t, gw)
	frame := box.Append(nil, 1, 0, 1, bytes.Repeat([]byte("y"), 100))
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, _ = slow.Read(make([]byte, 1))
		closed <- time.Since(start)
	}()
	for i := 0; i < len(frame)-1; i++ {
		if _, err := slow.Write(frame[i : i+1]); err != nil {
			break // closed
		}
		// The steady client sends whole frames throughout.
		if _, err := steady.Write(box.Append(nil, 1, 0, uint32(i+1), nil)); err != nil {
			t.Fatalf("steady client: %v", err)
		}
		select {
		case took := <-closed:
			if limit := ft + FrameSweep(ft) + time.Second; took < ft || took > limit {
				t.Errorf("slow frame closed after %v, want after %v, within %v", took, ft, limit)
			}
			waitFor(t, 5*time.Second, "Stats.FrameTimeouts == 1", func() bool { return gw.Stats.FrameTimeouts.Load() == 1 })
			if n := gw.Stats.Conns.Load(); n != 1 {
				t.Errorf("Conns = %d, want the steady client's 1", n)
			}
			if n := gw.partials.held(); n != 0 {
				t.Errorf("partial bytes held = %d after the close", n)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("the slow frame's connection was never closed")
}

// TestPartialBudget: past the budget, the connections with the oldest
// partial frames are closed, and memory held for partial frames grows
// with the bytes received, not the frame's announced length.
func TestPartialBudget(t *testing.T) {
	const part = 300 << 10
	gw, _ := startGateway(t, Options{PartialBudget: 1 << 20})
	big := box.Append(nil, 1, 0, 1, make([]byte, 1<<20-box.HeaderLen-100))
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		nc, _ := dialConn(t, gw)
		conns = append(conns, nc)
		if _, err := nc.Write(big[:part]); err != nil {
			t.Fatal(err)
		}
		want := (i + 1) * part
		if i >= 3 {
			want = 0 // some are closed by now
		}
		waitFor(t, 5*time.Second, "the partial frame held", func() bool {
			return gw.Stats.PartialShed.Load() > 0 || gw.partials.held() >= want
		})
		time.Sleep(20 * time.Millisecond) // distinct start times
	}
	waitFor(t, 5*time.Second, "Stats.PartialShed >= 2", func() bool { return gw.Stats.PartialShed.Load() >= 2 })
	if n := gw.partials.held(); n > 1<<20 {
		t.Errorf("partial bytes held = %d, over the budget of 1 MiB", n)
	}
	// The oldest went first: the newest is still open.
	for i, nc := range conns {
		_ = nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := nc.Read(make([]byte, 1))
		open := err != nil && !isClosedErr(err)
		if i == 0 && open {
			t.Errorf("connection 0 (the oldest partial frame) still open")
		}
		if i == len(conns)-1 && !open {
			t.Errorf("connection %d (the newest partial frame) closed: %v", i, err)
		}
	}
}

// TestTriggerOverMaxFrameRefused: a trigger whose frame a player may not
// receive is refused; no player is dropped.
func TestTriggerOverMaxFrameRefused(t *testing.T) {
	gw, rdb := startGateway(t, Options{MaxFrame: 64 << 10})
	nc, _ := dialConn(t, gw)
	ctx := t.Context()
	publish := func(body string) {
		msg, _ := json.Marshal(map[string]any{"op": "broadcast", "cmd": 100, "body": body})
		if err := rdb.Publish(ctx, gw.keys.TriggerChannel(), msg).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the gateway subscribed", func() bool {
		n, _ := rdb.PubSubNumSub(ctx, gw.keys.TriggerChannel()).Result()
		return n[gw.keys.TriggerChannel()] > 0
	})
	publish(strings.Repeat("z", 64<<10)) // 24 bytes too many
	publish("small")
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := box.NewReader(nc, 0).Next()
	if err != nil || string(b.Body) != "small" {
		t.Fatalf("client got body of %d bytes, err %v; want only the small push", len(b.Body), err)
	}
	if n := gw.Stats.OversizeOut.Load(); n != 1 {
		t.Errorf("Stats.OversizeOut = %d, want 1", n)
	}
	if n := gw.Stats.SlowClosed.Load(); n != 0 {
		t.Errorf("Stats.SlowClosed = %d, want 0", n)
	}
}

// TestRedisRefusalAnswered: an entry Redis refuses (here: out of memory)
// is not retried for ever; its frames are answered -10002, and once Redis
// takes writes again the farm goes on.
func TestRedisRefusalAnswered(t *testing.T) {
	gw, rdb := startGateway(t, Options{})
	nc, id := dialConn(t, gw)
	ctx := t.Context()
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(box.Append(nil, 1, 0, 1, []byte("refused"))); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := box.NewReader(nc, 0)
	if b, err := r.Next(); err != nil || b.SN != 1 || b.Ret != box.RetBusy {
		t.Fatalf("got sn=%d ret=%d err=%v, want -10002 for sn 1", b.SN, b.Ret, err)
	}
	if n := gw.Stats.RedisRefused.Load(); n != 1 {
		t.Errorf("Stats.RedisRefused = %d, want 1", n)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(box.Append(nil, 1, 0, 2, []byte("taken"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the next frame queued", func() bool {
		got := queuedFrames(ctx, t, gw, rdb, id)
		return len(got) == 1 && string(got[0]) == "taken"
	})
}

// TestPushesWithinWriteBudget: a round trip's frames are split into
// entries of at most WriteBudget bytes, in order.
func TestPushesWithinWriteBudget(t *testing.T) {
	const maxFrame = 16 << 10
	gw, rdb := startGateway(t, Options{MaxFrame: maxFrame, WriteBudget: 1, MaxInflight: -1}) // the budget becomes MaxFrame + 64 KiB
	nc, id := dialConn(t, gw)
	var burst []byte
	const n = 60
	for sn := uint32(1); sn <= n; sn++ {
		burst = box.Append(burst, 1, 0, sn, bytes.Repeat([]byte{byte(sn)}, maxFrame-box.HeaderLen))
	}
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	waitFor(t, 10*time.Second, "every frame queued", func() bool { return len(queuedFrames(ctx, t, gw, rdb, id)) == n })
	for i, b := range queuedFrames(ctx, t, gw, rdb, id) {
		if b[0] != byte(i+1) {
			t.Fatalf("frame %d queued out of order", i+1)
		}
	}
	budget := gw.opts.WriteBudget
	for p := range gw.parts {
		msgs, err := rdb.XRange(ctx, gw.keys.Inbound(p), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if raw, _ := m.Values["b"].(string); len(raw) > budget {
				t.Errorf("entry %s holds %d bytes, over the budget of %d", m.ID, len(raw), budget)
			}
		}
	}
}

// outWriteAt is a worker's reply: an OutWrite with the request's time.
func outWriteAt(conn string, frames []byte) []byte {
	return queue.AppendOut(nil, &queue.Out{Kind: queue.OutWrite, Conn: conn, At: time.Now().UnixNano(), Frames: frames})
}

// TestQueueBoundLeavesOneFrame: at the queue bound a connection's bulk is
// refused -10002, but a connection's only frame in flight is still
// queued: one player's flood cannot make the farm refuse everyone.
func TestQueueBoundLeavesOneFrame(t *testing.T) {
	// The bound counts events too: the two open events and 3 frames.
	gw, rdb := startGateway(t, Options{QueueBound: 5})
	flood, floodID := dialConn(t, gw)
	steady, steadyID := dialConn(t, gw)
	var burst []byte
	for sn := uint32(1); sn <= 6; sn++ {
		burst = box.Append(burst, 1, 0, sn, []byte("x"))
	}
	if _, err := flood.Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = flood.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := box.NewReader(flood, 0)
	for i := 0; i < 3; i++ {
		if b, err := r.Next(); err != nil || b.Ret != box.RetBusy {
			t.Fatalf("flooding client: ret %d err %v, want -10002 past the bound", b.Ret, err)
		}
	}
	ctx := t.Context()
	if got := len(queuedFrames(ctx, t, gw, rdb, floodID)); got != 3 {
		t.Errorf("flooding client has %d frames queued, want 3 (the bound)", got)
	}
	if _, err := steady.Write(box.Append(nil, 1, 0, 1, []byte("mine"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the steady client's frame queued past the bound", func() bool {
		return len(queuedFrames(ctx, t, gw, rdb, steadyID)) == 1
	})
	if n := gw.Stats.QueueBoundBusy.Load(); n != 3 {
		t.Errorf("Stats.QueueBoundBusy = %d, want 3", n)
	}
}
