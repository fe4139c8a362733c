package gateway

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
)

// TestDirectWrites: once a connection got output through its loop (which
// gives it a dup of its socket), sends go straight to the socket, in
// order; its close gives the dup back.
func TestDirectWrites(t *testing.T) {
	gw, rdb := startGateway(t, Options{})
	nc, id := dialConn(t, gw)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := box.NewReader(nc, 0)
	const total = 200
	for i := range uint64(total) {
		// One at a time, each waited for: every send finds nothing queued.
		if err := lpushAll(ctx, rdb, gw.keys.Outbound(gw.ID()), [][]byte{outWrite(id, pushFrame(i))}); err != nil {
			t.Fatal(err)
		}
		b, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint64(b.Body); got != i {
			t.Fatalf("frame %d carries %d", i, got)
		}
	}
	direct, wakes := gw.Stats.DirectWrites.Load(), gw.Stats.Wakes.Load()
	t.Logf("%d sends: %d direct, %d wakes", total, direct, wakes)
	if direct < total-5 {
		t.Errorf("%d of %d sends written directly, want all but the first few", direct, total)
	}

	p := gw.lookup(id).peer.(*evioPeer)
	p.mu.Lock()
	wfd := p.wfd
	p.mu.Unlock()
	if wfd < 0 {
		t.Fatal("the connection holds no dup")
	}
	nc.Close()
	waitFor(t, 5*time.Second, "the connection closed", func() bool { return gw.lookup(id) == nil })
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wfd != -1 || !p.shutdown {
		t.Errorf("after Closed: wfd=%d shutdown=%v, want -1 true", p.wfd, p.shutdown)
	}
}

// TestDupBudget: no more dups than the budget; a dup given back (closed
// connection, or idle for dupIdleSweeps sweeps) makes room for another.
func TestDupBudget(t *testing.T) {
	f, err := os.Open(os.DevNull) // stands in for a socket: only dup'd and closed
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := &evioTransport{dupMax: 1, peers: make(map[*evioPeer]struct{})}
	a := &evioPeer{t: tr, fd: int(f.Fd()), wfd: -1, proto: &boxStream{}}
	b := &evioPeer{t: tr, fd: int(f.Fd()), wfd: -1, proto: &boxStream{}}
	tr.peers[a], tr.peers[b] = struct{}{}, struct{}{}
	take := func(p *evioPeer) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.takeDupLocked()
		return p.wfd >= 0
	}
	if !take(a) || take(b) {
		t.Fatalf("budget 1: a got one %v, b got one %v; want a only", a.wfd >= 0, b.wfd >= 0)
	}
	for range dupIdleSweeps + 1 {
		tr.lastSweep = time.Time{}
		tr.sweep()
	}
	if a.wfd >= 0 || tr.dups.Load() != 0 {
		t.Fatalf("after %d idle sweeps a still holds fd %d (dups %d)", dupIdleSweeps+1, a.wfd, tr.dups.Load())
	}
	if !take(b) {
		t.Fatal("b got no dup after a gave its back")
	}
	b.mu.Lock()
	b.dropDupLocked()
	b.mu.Unlock()
	if tr.dups.Load() != 0 {
		t.Errorf("dups = %d after all were given back", tr.dups.Load())
	}
}
