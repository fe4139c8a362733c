package bench

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/maple-farm/maple/box"
)

// startServer serves a fresh loopback listener with serve(edit) until the
// test ends, and returns its address.
func startServer(t *testing.T, edit func(*box.Box) int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, edit) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// short are options for a quick run; the race detector slows everything.
func short(addr string) Options {
	return Options{
		Addr: addr, Conns: 4, Depth: 8, Size: 32,
		Duration: 400 * time.Millisecond, Warmup: 100 * time.Millisecond, Grace: 500 * time.Millisecond,
	}
}

// checkCounts checks what holds for every run: every request sent is
// either answered or unanswered.
func checkCounts(t *testing.T, r Result) {
	t.Helper()
	if r.Sent == 0 {
		t.Fatalf("nothing sent: %+v", r)
	}
	if r.Sent != r.Answered+r.Unanswered {
		t.Errorf("sent %d != answered %d + unanswered %d", r.Sent, r.Answered, r.Unanswered)
	}
}

func TestRunReference(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- ServeReference(ctx, ln) }()

	var ticks atomic.Int32
	o := short(ln.Addr().String())
	o.Duration = 1200 * time.Millisecond // long enough for a progress tick
	o.Progress = func(p Progress) {
		ticks.Add(1)
		if p.Phase != "warmup" && p.Phase != "run" && p.Phase != "drain" {
			t.Errorf("progress phase %q", p.Phase)
		}
	}
	start := time.Now()
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	cancel()
	if err := <-served; err != nil {
		t.Errorf("ServeReference: %v", err)
	}
	t.Logf("%+v", r)

	checkCounts(t, r)
	if r.Unanswered != 0 || r.Mismatches != 0 || r.Busy != 0 || r.Failed != 0 || r.ConnErrors != 0 || r.Pushes != 0 {
		t.Errorf("want a clean run, got %+v", r)
	}
	if r.RepliesPerSec <= 0 {
		t.Errorf("replies/s = %v", r.RepliesPerSec)
	}
	if r.Duration != o.Duration {
		t.Errorf("duration = %v, want %v", r.Duration, o.Duration)
	}
	ps := []time.Duration{r.P50, r.P90, r.P99, r.P999, r.Max}
	if !slices.IsSorted(ps) || r.P50 <= 0 || r.Max > 5*time.Second {
		t.Errorf("percentiles p50 %v p90 %v p99 %v p99.9 %v max %v", r.P50, r.P90, r.P99, r.P999, r.Max)
	}
	// Nothing is left in flight, so Run ends right after the window,
	// without waiting for the grace.
	if limit := o.Warmup + o.Duration + o.Grace; took >= limit {
		t.Errorf("Run took %v, want under %v", took, limit)
	}
	if ticks.Load() == 0 {
		t.Error("Progress never called")
	}
	if r.Conns != o.Conns || r.Depth != o.Depth || r.Size != o.Size || r.Cmd != DefaultCmd {
		t.Errorf("options not reported: %+v", r)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sent", "answered", "replies_per_sec", "p50_ns", "p999_ns", "unanswered", "mismatches", "conn_errors"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, js)
		}
	}
}

func TestRunWrongBody(t *testing.T) {
	var wrong atomic.Int64
	addr := startServer(t, func(b *box.Box) int {
		if b.SN%10 == 3 {
			b.Body[len(b.Body)-1] ^= 0xFF
			wrong.Add(1)
		}
		return 1
	})
	r, err := Run(t.Context(), short(addr))
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if r.Mismatches == 0 || r.Mismatches != wrong.Load() {
		t.Errorf("mismatches = %d, server spoiled %d", r.Mismatches, wrong.Load())
	}
	if r.Unanswered != 0 {
		t.Errorf("unanswered = %d", r.Unanswered)
	}
}

func TestRunWrongStamp(t *testing.T) {
	// A reply whose body belongs to another request (same length, same
	// pattern, other sn) is a mismatch too.
	addr := startServer(t, func(b *box.Box) int {
		if b.SN%7 == 0 {
			b.Body[3]++
		}
		return 1
	})
	r, err := Run(t.Context(), short(addr))
	if err != nil {
		t.Fatal(err)
	}
	if r.Mismatches == 0 {
		t.Errorf("mismatches = 0: %+v", r)
	}
}

func TestRunBusyAndFailed(t *testing.T) {
	addr := startServer(t, func(b *box.Box) int {
		switch b.SN % 4 {
		case 1:
			b.Ret = box.RetBusy
		case 2:
			b.Ret = box.RetHandlerFailed
		}
		return 1
	})
	r, err := Run(t.Context(), short(addr))
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if r.Busy == 0 || r.Failed == 0 || r.Mismatches != 0 || r.Unanswered != 0 {
		t.Errorf("want busy and failed replies only: %+v", r)
	}
}

func TestRunDuplicateReplies(t *testing.T) {
	addr := startServer(t, func(*box.Box) int { return 2 })
	r, err := Run(t.Context(), short(addr))
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	// Every reply comes twice; the second copies are duplicates, not
	// mismatches.
	if r.Duplicates == 0 || r.Duplicates > r.Answered || r.Mismatches != 0 {
		t.Errorf("duplicates = %d, mismatches = %d, answered %d", r.Duplicates, r.Mismatches, r.Answered)
	}
}

func TestRunUnanswered(t *testing.T) {
	addr := startServer(t, func(b *box.Box) int {
		if b.SN%50 == 0 {
			return 0
		}
		return 1
	})
	o := short(addr)
	o.Grace = 100 * time.Millisecond
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if r.Unanswered == 0 || r.ConnErrors != 0 {
		t.Errorf("want unanswered requests and no connection errors: %+v", r)
	}
}

func TestRunHangUp(t *testing.T) {
	var n atomic.Int64
	addr := startServer(t, func(*box.Box) int {
		if n.Add(1) > 100 {
			return -1
		}
		return 1
	})
	r, err := Run(t.Context(), short(addr))
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if r.ConnErrors == 0 || r.Unanswered == 0 {
		t.Errorf("want connection errors and unanswered requests: %+v", r)
	}
}

func TestRunNoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r, err := Run(t.Context(), Options{Addr: addr, Conns: 3})
	if err == nil {
		t.Fatal("Run against a closed port: no error")
	}
	if r.ConnErrors != 3 {
		t.Errorf("conn errors = %d, want 3", r.ConnErrors)
	}
}

func TestRunCancel(t *testing.T) {
	addr := startServer(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	o := short(addr)
	o.Duration = time.Minute
	start := time.Now()
	r, err := Run(ctx, o)
	if err == nil {
		t.Fatal("cancelled Run: no error")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("cancelled Run took %v", took)
	}
	if r.Sent == 0 || r.ConnErrors != 0 {
		t.Errorf("partial result: %+v", r)
	}
}

// TestRunSeveralAddrs: a comma-separated Addr spreads the connections
// round-robin over the addresses (several gateways of one farm), and
// every reply is checked as with one.
func TestRunSeveralAddrs(t *testing.T) {
	var frames [3]atomic.Int64
	var addrs []string
	for i := range frames {
		addrs = append(addrs, startServer(t, func(*box.Box) int {
			frames[i].Add(1)
			return 1
		}))
	}
	o := short(strings.Join(addrs, ", "))
	o.Conns = 6
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if r.Unanswered != 0 || r.Mismatches != 0 || r.ConnErrors != 0 || r.RepliesPerSec <= 0 {
		t.Errorf("want a clean run, got %+v", r)
	}
	var sum int64
	for i := range frames {
		n := frames[i].Load()
		if n == 0 {
			t.Errorf("server %d (%s) got no frames", i, addrs[i])
		}
		sum += n
	}
	if sum != r.Answered {
		t.Errorf("servers answered %d frames, bench counted %d", sum, r.Answered)
	}

	for _, bad := range []string{"", " ", addrs[0] + ",", addrs[0] + ",," + addrs[1]} {
		if _, err := Run(t.Context(), Options{Addr: bad, Conns: 2}); err == nil {
			t.Errorf("Addr %q: no error", bad)
		}
	}
}

func TestRunEmptyBodyOtherCmd(t *testing.T) {
	var bad atomic.Int64
	addr := startServer(t, func(b *box.Box) int {
		if b.Cmd != 5 || len(b.Body) != 0 {
			bad.Add(1)
		}
		return 1
	})
	o := short(addr)
	o.Size, o.Cmd = -1, 5
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if bad.Load() != 0 || r.Mismatches != 0 || r.Unanswered != 0 {
		t.Errorf("bad frames %d: %+v", bad.Load(), r)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	if h.quantile(0.5) != 0 {
		t.Error("empty histogram: quantile not 0")
	}
	var all []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		// From 100 ns to about 1 s, spread over the decades.
		d := time.Duration(float64(int64(100)<<rng.IntN(24)) * (1 + rng.Float64()))
		all = append(all, d)
		h.record(d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := all[int(q*float64(len(all)-1))]
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.01 || diff < -0.01 {
			t.Errorf("quantile(%v) = %v, exact %v: off by %.2f%%", q, got, want, 100*diff)
		}
	}
	if h.max != all[len(all)-1] {
		t.Errorf("max = %v, want %v", h.max, all[len(all)-1])
	}
	for i := 1; i < histBuckets; i++ {
		if histValue(i) < histValue(i-1) {
			t.Fatalf("bucket %d value %v below bucket %d's %v", i, histValue(i), i-1, histValue(i-1))
		}
		if histIndex(histValue(i)) != i {
			t.Fatalf("bucket %d: its value %v indexes to %d", i, histValue(i), histIndex(histValue(i)))
		}
	}
	if histIndex(-1) != 0 || histIndex(time.Hour) != histBuckets-1 {
		t.Error("out-of-range durations not clamped")
	}
}

// startWSServer serves a WebSocket echo with github.com/coder/websocket,
// an implementation of its own: each binary message is decoded as a frame
// and answered; joined, the answer of two requests goes as one message.
func startWSServer(t *testing.T, joined bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		var held []byte
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil || typ != websocket.MessageBinary {
				return
			}
			b, err := box.Decode(msg)
			if err != nil {
				return
			}
			out := box.Append(held, b.Cmd, box.RetOK, b.SN, b.Body)
			if joined && held == nil {
				held = out
				continue
			}
			held = nil
			if err := c.Write(r.Context(), websocket.MessageBinary, out); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestRunWS(t *testing.T) {
	o := short(startWSServer(t, false))
	o.WS, o.WSPath = true, "/"
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r)
	if r.Unanswered != 0 || r.Mismatches != 0 || r.Failed != 0 || r.ConnErrors != 0 || !r.WS || r.RepliesPerSec <= 0 {
		t.Errorf("want a clean WebSocket run, got %+v", r)
	}
}

// TestRunWSNotOneFrame: a message holding two frames breaks the
// connection: the gateway promises one frame per message.
func TestRunWSNotOneFrame(t *testing.T) {
	o := short(startWSServer(t, true))
	o.WS, o.WSPath, o.Depth = true, "/", 2
	r, _ := Run(t.Context(), o)
	if r.ConnErrors == 0 {
		t.Errorf("two frames in a message went unnoticed: %+v", r)
	}
}

// TestRunRequests: with Requests, each connection sends that many and
// then stays open, idle, until the window ends.
func TestRunRequests(t *testing.T) {
	o := short(startServer(t, nil))
	o.Requests = 3
	start := time.Now()
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != int64(3*o.Conns) || r.Answered != r.Sent || r.ConnErrors != 0 {
		t.Errorf("sent %d answered %d, want %d each: %+v", r.Sent, r.Answered, 3*o.Conns, r)
	}
	if took := time.Since(start); took < o.Warmup+o.Duration {
		t.Errorf("Run took %v, less than the window", took)
	}
}

// The stall after an instant is how long after it the last request sent
// before it was answered.
func TestStallsAfter(t *testing.T) {
	s := newStalls(100 * time.Millisecond)
	s.answered(10*time.Millisecond, 11*time.Millisecond)
	s.answered(20*time.Millisecond, 95*time.Millisecond) // stalled
	s.answered(30*time.Millisecond, 31*time.Millisecond)
	s.answered(60*time.Millisecond, 90*time.Millisecond)
	s.answered(500*time.Millisecond, time.Second) // outside the run: ignored
	for _, c := range []struct{ mark, want time.Duration }{
		{5 * time.Millisecond, 0},
		{15 * time.Millisecond, 0},
		{25 * time.Millisecond, 70 * time.Millisecond},
		{70 * time.Millisecond, 25 * time.Millisecond},
		{99 * time.Millisecond, 0},
	} {
		if got := s.after(c.mark); got != c.want {
			t.Errorf("stall after %v = %v, want %v", c.mark, got, c.want)
		}
	}
}

func TestReadMarks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "marks")
	if err := os.WriteFile(path, []byte("1700000000.123456789\n\n1700000001\n1700000002.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMarks(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{time.Unix(1700000000, 123456789), time.Unix(1700000001, 0), time.Unix(1700000002, 500000000)}
	if !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("marks %v, want %v", got, want)
	}
	if err := os.WriteFile(path, []byte("yesterday\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMarks(path); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("a bad line: err %v, want one naming line 1", err)
	}
}
