package worker

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/maple-farm/maple/internal/queue"
)

// gatedProc is a processor whose handle waits for a token on gate.
type gatedProc struct{ gate chan struct{} }

func (p *gatedProc) handle(d queue.Delivery) outcome     { <-p.gate; return finished }
func (p *gatedProc) dropClosed(d queue.Delivery) outcome { return finished }

// countingResults counts what the dispatcher hands the outbox.
type countingResults struct {
	mu          sync.Mutex
	marks, acks int
}

func (r *countingResults) mark(gw, conn string, seq uint64) { r.mu.Lock(); r.marks++; r.mu.Unlock() }
func (r *countingResults) ack(a *ack)                       { r.mu.Lock(); r.acks++; r.mu.Unlock() }
func (r *countingResults) tryDrain()                        {}
func (r *countingResults) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.marks, r.acks
}

type noneDead struct{}

func (noneDead) dead(string) bool { return false }

// waiting runs wait in a goroutine; the channel gets its result.
func waiting(wait func(ctx context.Context) bool) (chan bool, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan bool, 1)
	go func() { ch <- wait(ctx) }()
	return ch, cancel
}

func isBlocked(t *testing.T, what string, ch chan bool) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s returned %v, want it waiting", what, v)
	case <-time.After(50 * time.Millisecond):
	}
}

func returns(t *testing.T, what string, ch chan bool, want bool) {
	t.Helper()
	select {
	case v := <-ch:
		if v != want {
			t.Fatalf("%s returned %v, want %v", what, v, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// TestDispatcherSignals: the reader waiting for room, a release waiting
// for its partition's entries and the drain waiting for nothing held each
// wake when their own condition holds, not before; a waiter whose ctx
// ends returns false.
func TestDispatcherSignals(t *testing.T) {
	proc := &gatedProc{gate: make(chan struct{})}
	res := &countingResults{}
	var stats Stats
	d := newDispatcher(dispatcherParams{log: slog.New(slog.DiscardHandler), stats: &stats, concurrency: 1,
		maxHeldBytes: DefaultMaxHeldBytes, proc: proc, out: res, gateways: noneDead{}})
	// Concurrency 1: room for 4 connections with work. Five connections,
	// one entry each, the last on partition 1.
	var ds []queue.Delivery
	for i := range 5 {
		ds = append(ds, queue.Delivery{Part: i / 4, ID: strconv.Itoa(i+1) + "-0", Count: 1, Deliveries: 1,
			Env: queue.Envelope{Kind: queue.Kind(Frame), Gateway: "gw", Conn: "gw-" + strconv.Itoa(i), Seq: 1}})
	}
	if n := d.admit(ds[:4], false); n != 4 {
		t.Fatalf("admitted %d, want 4", n)
	}
	room, stopRoom := waiting(d.waitRoom)
	part0, _ := waiting(func(ctx context.Context) bool { return d.waitPartition(ctx, 0) })
	idle, _ := waiting(d.waitIdle)
	isBlocked(t, "waitRoom with 4 connections queued", room)
	if n := d.admit(ds[4:], false); n != 1 {
		t.Fatalf("admitted %d, want 1", n)
	}
	part1, stopPart1 := waiting(func(ctx context.Context) bool { return d.waitPartition(ctx, 1) })
	if !d.waitPartition(t.Context(), 2) {
		t.Fatal("waitPartition of a partition with nothing held waits")
	}
	if !d.holdsPartition(0) || !d.holdsPartition(1) || d.holdsPartition(2) {
		t.Errorf("holdsPartition(0, 1, 2) = %v, %v, %v; want true, true, false", d.holdsPartition(0), d.holdsPartition(1), d.holdsPartition(2))
	}

	var runners sync.WaitGroup
	d.start(&runners)
	defer func() { d.shutdown(); runners.Wait() }()
	proc.gate <- struct{}{} // one connection done: still 4 with work
	isBlocked(t, "waitRoom with 4 connections queued", room)
	proc.gate <- struct{}{} // 3 with work: room
	returns(t, "waitRoom", room, true)
	isBlocked(t, "waitPartition(0) with entries held", part0)
	isBlocked(t, "waitIdle", idle)
	stopPart1()
	returns(t, "waitPartition(1) whose ctx ended", part1, false)
	proc.gate <- struct{}{}
	proc.gate <- struct{}{} // partition 0 done
	returns(t, "waitPartition(0)", part0, true)
	if d.holdsPartition(0) {
		t.Error("holdsPartition(0) after its entries were done")
	}
	isBlocked(t, "waitIdle", idle)
	proc.gate <- struct{}{}
	returns(t, "waitIdle", idle, true)
	stopRoom()
	if marks, acks := res.counts(); marks != 5 || acks != 5 {
		t.Errorf("%d marks and %d acks, want 5 of each", marks, acks)
	}
	if n := stats.InFlight.Load(); n != 0 {
		t.Errorf("Stats.InFlight = %d, want 0", n)
	}
}

// TestDispatcherAdmitRecovered: entries admitted again after a failure
// (recovered) are left alone if held already; a bundle's envelopes are
// acknowledged once, with the last.
func TestDispatcherAdmitRecovered(t *testing.T) {
	proc := &gatedProc{gate: make(chan struct{})}
	res := &countingResults{}
	var stats Stats
	d := newDispatcher(dispatcherParams{log: slog.New(slog.DiscardHandler), stats: &stats, concurrency: 2,
		maxHeldBytes: DefaultMaxHeldBytes, proc: proc, out: res, gateways: noneDead{}})
	bundle := func(id string) []queue.Delivery {
		var ds []queue.Delivery
		for i := range 2 {
			ds = append(ds, queue.Delivery{Part: 0, ID: id, Index: i, Count: 2, Deliveries: 1,
				Env: queue.Envelope{Kind: queue.Kind(Frame), Gateway: "gw", Conn: "gw-" + strconv.Itoa(i), Seq: 1}})
		}
		return ds
	}
	if n := d.admit(bundle("1-0"), false); n != 2 {
		t.Fatalf("admitted %d, want 2", n)
	}
	if n := d.admit(append(bundle("1-0"), bundle("2-0")...), true); n != 2 {
		t.Fatalf("recovered %d, want 2 (the bundle not held yet)", n)
	}
	var runners sync.WaitGroup
	d.start(&runners)
	defer func() { d.shutdown(); runners.Wait() }()
	for range 4 {
		proc.gate <- struct{}{}
	}
	if !d.waitIdle(t.Context()) {
		t.Fatal("not idle")
	}
	if _, acks := res.counts(); acks != 2 {
		t.Errorf("%d acks, want 2", acks)
	}
}
