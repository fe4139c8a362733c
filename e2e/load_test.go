package e2e

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
)

// load is a set of clients sending echo and counter requests until stopped.
type load struct {
	counter string
	stop    chan struct{}
	wg      sync.WaitGroup

	sent, answered, busy, increments atomic.Int64
	worstNs                          atomic.Int64 // the longest a request waited for its reply
	mu                               sync.Mutex
	errs                             []error
	conns                            []*client.Conn
}

// startLoad connects n clients to addr; each keeps depth requests in
// flight, alternating echo and counter (counter name counter).
func startLoad(t *testing.T, addr string, n, depth int, counter string) *load {
	t.Helper()
	l := &load{counter: counter, stop: make(chan struct{})}
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
			go l.run(c, i, j)
		}
	}
	return l
}

func (l *load) fail(err error) {
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, err)
	}
	l.mu.Unlock()
}

func (l *load) run(c *client.Conn, i, j int) {
	defer l.wg.Done()
	for k := 0; ; k++ {
		select {
		case <-l.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var cmd int32 = demo.CmdEcho
		body := fmt.Sprintf("c%d.%d.%d", i, j, k)
		if k%2 == 1 {
			cmd, body = demo.CmdCounter, l.counter
		}
		l.sent.Add(1)
		start := time.Now()
		r, err := c.Request(ctx, cmd, []byte(body))
		cancel()
		if took := int64(time.Since(start)); took > l.worstNs.Load() {
			l.worstNs.Store(took) // racy max: fine for a figure, off by one update at most
		}
		if err != nil {
			if cmd == demo.CmdCounter {
				l.increments.Add(1) // it may have run
			}
			l.fail(fmt.Errorf("client %d: cmd %d: %w", i, cmd, err))
			return
		}
		l.answered.Add(1)
		switch {
		case r.Ret == box.RetBusy:
			l.busy.Add(1)
		case r.Ret != 0:
			l.fail(fmt.Errorf("client %d: cmd %d: ret %d", i, cmd, r.Ret))
		case cmd == demo.CmdEcho && string(r.Body) != body:
			l.fail(fmt.Errorf("client %d: echo %q, want %q", i, r.Body, body))
		case cmd == demo.CmdCounter:
			l.increments.Add(1)
			if _, err := strconv.Atoi(string(r.Body)); err != nil {
				l.fail(fmt.Errorf("client %d: counter reply %q", i, r.Body))
			}
		}
	}
}

// finish stops sending, waits for every request in flight, and returns the
// errors seen; disconnected clients count as errors.
func (l *load) finish(t *testing.T) []error {
	t.Helper()
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("requests still unanswered 90s after the load stopped")
	}
	for i, c := range l.conns {
		select {
		case <-c.Done():
			l.fail(fmt.Errorf("client %d was disconnected: %v", i, c.Err()))
		default:
		}
	}
	return l.errs
}

// duplicates counts replies that arrived for requests already answered
// (they land on Pushes since nobody waits for their sn).
func (l *load) duplicates() int {
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

var errNone = errors.New("none")
