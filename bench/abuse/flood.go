package abuse

// Attacks by numbers: many frames, slow frames, panics, connections.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/examples/demo"
)

// Pipeline is attack (a): one connection pipelines n frames of cmd 7
// sleeping ms milliseconds each, and closes after closeAfter. The
// connection's serial backlog must not delay anyone else, and its frames
// must not keep running against everyone else's after it left.
func Pipeline(ctx context.Context, addr string, n, ms int, closeAfter time.Duration) Observation {
	t := newTally()
	expect := fmt.Sprintf("its %d x %d ms backlog delays nobody else; frames past --max-inflight answered -10002 at once", n, ms)
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		return t.obs(expect)
	}
	done := readFrames(c, func(b box.Box) { t.reply(b.Ret) })
	if _, err := c.Write(frames(demo.CmdSleep, n, []byte(fmt.Sprint(ms)))); err != nil {
		t.problemf("write: %v", err)
	}
	t.frames.Add(int64(n))
	select {
	case <-time.After(closeAfter):
	case <-c.closed:
	case <-ctx.Done():
	}
	closedByGW := c.isClosed()
	c.Close()
	<-done
	t.sawf("%d of %d frames answered in %v (%d ok, %d -10002); closed by the gateway: %v",
		t.ok.Load()+t.busy.Load()+t.failed.Load()+t.other.Load(), n, closeAfter, t.ok.Load(), t.busy.Load(), closedByGW)
	return t.obs(expect)
}

// QueueFlood is attack (c): n frames of cmd 7 sleeping ms each, perConn
// per connection (what --max-inflight lets one connection hold), all sent
// at once; after hold the attacker leaves. Run it against a gateway with
// --queue-bound n.
func QueueFlood(ctx context.Context, addr string, n, perConn, ms int, hold time.Duration) Observation {
	t := newTally()
	perConn = max(perConn, 1)
	nconns := (n + perConn - 1) / perConn
	expect := fmt.Sprintf("%d frames of %d ms over %d connections: past its share the attacker gets -10002, nobody else does; once it left the gateway serves at once", n, ms, nconns)
	var (
		conns []*aconn
		dones []<-chan struct{}
	)
	body := []byte(fmt.Sprint(ms))
	for left := n; left > 0; left -= perConn {
		c, err := t.dial(ctx, addr)
		if err != nil {
			t.problemf("dial: %v", err)
			break
		}
		conns = append(conns, c)
		dones = append(dones, readFrames(c, func(b box.Box) { t.reply(b.Ret) }))
		k := min(left, perConn)
		if _, err := c.Write(frames(demo.CmdSleep, k, body)); err != nil {
			t.problemf("write: %v", err)
		}
		t.frames.Add(int64(k))
	}
	sleepCtx(ctx, hold)
	t.sawf("in %v: %d -10002, %d ok, %d other; %d of %d connections closed by the gateway",
		hold, t.busy.Load(), t.ok.Load(), t.failed.Load()+t.other.Load(), t.closedCnt.Load(), len(conns))
	for i, c := range conns {
		c.Close()
		<-dones[i]
	}
	return t.obs(expect)
}

// Panics is attack (g): n frames of cmd 8 (its handler panics), as fast as
// conns connections with window frames in flight each get them answered.
// Frames answered -10002 are sent again, so n handlers do panic.
func Panics(ctx context.Context, addr string, n, conns, window int) Observation {
	t := newTally()
	expect := fmt.Sprintf("%d panics answered -10001; the worker's log grows by a bounded amount (rate-limited stack traces)", n)
	var budget atomic.Int64 // frames still to send
	budget.Store(int64(n))
	finished := make(chan struct{})
	var finishOnce sync.Once
	finish := func() { finishOnce.Do(func() { close(finished) }) }
	claim := func(k int64) int64 {
		for {
			b := budget.Load()
			if b <= 0 {
				return 0
			}
			k = min(k, b)
			if budget.CompareAndSwap(b, b-k) {
				return k
			}
		}
	}
	limit := time.After(60 * time.Second)
	var wg sync.WaitGroup
	var cs []*aconn
	var dones []<-chan struct{}
	for range conns {
		c, err := t.dial(ctx, addr)
		if err != nil {
			t.problemf("dial: %v", err)
			break
		}
		credits := make(chan struct{}, window)
		for range window {
			credits <- struct{}{}
		}
		cs = append(cs, c)
		dones = append(dones, readFrames(c, func(b box.Box) {
			t.reply(b.Ret)
			if b.Ret == box.RetBusy {
				budget.Add(1) // send it again: n handlers must panic
			}
			if t.failed.Load()+t.other.Load()+t.ok.Load() >= int64(n) {
				finish()
			}
			select {
			case credits <- struct{}{}:
			default: // a reply nobody asked for
			}
		}))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sn uint32
			buf := make([]byte, 0, window*box.HeaderLen)
			for {
				select {
				case <-credits:
				case <-finished:
					return
				case <-c.closed:
					return
				}
				k := int64(1)
			gather:
				for k < int64(window) {
					select {
					case <-credits:
						k++
					default:
						break gather
					}
				}
				got := claim(k)
				for range k - got {
					credits <- struct{}{}
				}
				if got == 0 {
					select {
					case <-finished:
						return
					case <-time.After(5 * time.Millisecond):
					}
					continue
				}
				buf = buf[:0]
				for range got {
					sn++
					if sn == 0 {
						sn = 1
					}
					buf = box.Append(buf, demo.CmdPanic, 0, sn, nil)
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
				t.frames.Add(got)
			}
		}()
	}
	select {
	case <-finished:
	case <-limit:
		t.problemf("only %d of %d panics answered within 60s", t.failed.Load(), n)
	case <-ctx.Done():
	}
	finish()
	wg.Wait()
	for i, c := range cs {
		c.Close()
		<-dones[i]
	}
	t.sawf("%d frames answered -10001 in %v (%d -10002 sent again, %d other); %d connections closed by the gateway",
		t.failed.Load(), time.Since(t.start).Round(time.Millisecond), t.busy.Load(), t.ok.Load()+t.other.Load(), t.closedCnt.Load())
	if t.ok.Load()+t.other.Load() > 0 {
		t.problemf("%d replies to cmd 8 not -10001 or -10002", t.ok.Load()+t.other.Load())
	}
	return t.obs(expect)
}

// ConnsPerIP is attack (i): conns connections from one address (each
// sends an echo), against a gateway with --max-conns-per-ip limit. Exactly
// limit of them are served; once they are closed the address may connect
// again.
func ConnsPerIP(ctx context.Context, addr string, conns, limit int) Observation {
	t := newTally()
	expect := fmt.Sprintf("of %d connections from %s, %d (--max-conns-per-ip) are served, the rest refused; players from other addresses unaffected; the address is served again once it closed them", conns, AttackerIP, limit)
	var (
		cs     []*aconn
		dones  []<-chan struct{}
		served atomic.Int64
	)
	dialErrs := 0
	for range conns {
		c, err := t.dial(ctx, addr)
		if err != nil {
			dialErrs++
			continue
		}
		var once sync.Once
		cs = append(cs, c)
		dones = append(dones, readFrames(c, func(b box.Box) {
			t.reply(b.Ret)
			once.Do(func() { served.Add(1) })
		}))
	}
	echo := box.Append(nil, demo.CmdEcho, 0, 1, []byte("me too"))
	for _, c := range cs {
		if _, err := c.Write(echo); err == nil {
			t.frames.Add(1)
		}
	}
	// Every connection answered or closed, or 5 s.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if served.Load()+t.closedCnt.Load() >= int64(len(cs)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := served.Load()
	t.sawf("%d connections opened (%d dial errors): %d served, %d closed by the gateway, %d neither within 5s",
		len(cs), dialErrs, s, t.closedCnt.Load(), int64(len(cs))-s-t.closedCnt.Load())
	switch {
	case s > int64(limit):
		t.problemf("%d connections from one address served; --max-conns-per-ip %d", s, limit)
	case s < int64(limit):
		t.problemf("only %d connections from one address served; --max-conns-per-ip %d allows %d", s, limit, limit)
	}
	for i, c := range cs {
		c.Close()
		<-dones[i]
	}
	// The address is welcome again.
	var err error
	again := time.Now().Add(5 * time.Second)
	for {
		if err = echoFrom(ctx, t, addr, 2*time.Second); err == nil || time.Now().After(again) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.problemf("after closing its connections, %s is still refused: %v", AttackerIP, err)
	} else {
		t.sawf("after closing them, a new connection from %s is served", AttackerIP)
	}
	return t.obs(expect)
}

// Churn is an added attack: conns connections opened and closed at once,
// parallel at a time, with no payload. Each costs the farm an open and a
// close event; the gateway and the steady player must shrug it off.
func Churn(ctx context.Context, addr string, conns, parallel int) Observation {
	t := newTally()
	expect := fmt.Sprintf("%d connect/close cycles: nobody else notices; Redis gets a bounded amount per connection", conns)
	var next, dialErrs atomic.Int64
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if next.Add(1) > int64(conns) {
					return
				}
				c, err := t.dial(ctx, addr)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	t.sawf("%d connections opened and closed in %v (%d dial errors)", t.conns.Load(), time.Since(t.start).Round(time.Millisecond), dialErrs.Load())
	return t.obs(expect)
}
