package abuse

// Attacks by size: big user ids, frames, pushes and triggers, half-sent
// and malformed frames, and clients that do not read.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/examples/demo"
	"github.com/maple-farm/maple/gateway"
	"github.com/redis/go-redis/v9"
)

// BigUID is attack (b): a login (cmd 2) whose uid is uidLen bytes, then n
// empty frames (echo) on the same connection. A uid repeated in every
// frame's envelope would multiply the attacker's bytes into Redis.
func BigUID(ctx context.Context, addr string, uidLen, n int) Observation {
	t := newTally()
	expect := fmt.Sprintf("the %d-byte uid is refused with a clear error (ret != 0); all %d frames answered; Redis gets about what was sent", uidLen, n)
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		return t.obs(expect)
	}
	defer c.Close()
	replies := make(chan box.Box, n+2)
	done := readFrames(c, func(b box.Box) {
		t.reply(b.Ret)
		b.Body = nil
		select {
		case replies <- b:
		default:
		}
	})
	defer func() { c.Close(); <-done }()
	uid := bytes.Repeat([]byte("u"), uidLen)
	copy(uid, "abuse-uid-")
	if _, err := c.Write(box.Append(nil, demo.CmdLogin, 0, 1, uid)); err != nil {
		t.problemf("write login: %v", err)
		return t.obs(expect)
	}
	t.frames.Add(1)
	select {
	case b := <-replies:
		if b.Ret == box.RetOK {
			t.problemf("a login with a %d-byte uid was accepted (ret 0)", uidLen)
		} else {
			t.sawf("login with a %d-byte uid answered ret %d", uidLen, b.Ret)
		}
	case <-c.closed:
		t.problemf("the gateway closed the connection after the login")
		return t.obs(expect)
	case <-time.After(15 * time.Second):
		t.problemf("login not answered within 15s")
		return t.obs(expect)
	}
	buf := make([]byte, 0, n*box.HeaderLen)
	for sn := 2; sn < n+2; sn++ {
		buf = box.Append(buf, demo.CmdEcho, 0, uint32(sn), nil)
	}
	if _, err := c.Write(buf); err != nil {
		t.problemf("write frames: %v", err)
		return t.obs(expect)
	}
	t.frames.Add(int64(n))
	got := 0
	timeout := time.After(15 * time.Second)
wait:
	for got < n {
		select {
		case <-replies:
			got++
		case <-c.closed:
			t.problemf("the gateway closed the connection after %d of %d replies", got, n)
			break wait
		case <-timeout:
			t.problemf("%d of %d empty frames unanswered after 15s", n-got, n)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	t.sawf("%d of %d empty frames answered (%d ok, %d -10002)", got, n, t.ok.Load(), t.busy.Load())
	return t.obs(expect)
}

// BigSay is attack (d): three players log in and join one group; the first
// says (cmd 6) a text whose push ("<uid>: <text>") is exactly maxFrame
// bytes, which every member (the sender included, docs/protocol.md) must
// receive; then a text of the largest frame a client may send, whose push
// is over maxFrame: the sender must get an error and nobody a push. Nobody
// may be dropped by either.
func BigSay(ctx context.Context, addr string, maxFrame int) Observation {
	t := newTally()
	expect := "a push of --max-frame bytes reaches all three members; a bigger one is refused with an error to the sender; nobody is dropped"
	var ps []*player
	defer func() {
		for _, p := range ps {
			p.Close()
		}
	}()
	for _, name := range []string{"say-a", "say-b", "say-c"} {
		p, err := t.player(ctx, addr, name)
		if err != nil {
			t.problemf("dial: %v", err)
			return t.obs(expect)
		}
		ps = append(ps, p)
		for _, step := range []struct {
			cmd  int32
			body string
		}{{demo.CmdLogin, name}, {demo.CmdJoin, "say-group"}} {
			if b, err := p.request(ctx, 10*time.Second, step.cmd, []byte(step.body)); err != nil || b.Ret != 0 {
				t.problemf("%s: cmd %d answered ret %d, err %v", name, step.cmd, b.Ret, err)
				return t.obs(expect)
			}
		}
	}
	say := func(textLen int, fits bool) {
		for _, p := range ps {
			p.drainPushes()
		}
		sender := ps[0]
		pushLen := box.HeaderLen + len(sender.name) + 2 + textLen
		text := bytes.Repeat([]byte("s"), textLen)
		b, err := sender.request(ctx, 30*time.Second, demo.CmdSay, text)
		switch {
		case err != nil:
			t.problemf("say of %d bytes (push %d): no reply: %v", textLen, pushLen, err)
		case fits && b.Ret != 0:
			t.problemf("say with a push of %d bytes (= --max-frame) answered ret %d", pushLen, b.Ret)
		case !fits && b.Ret == 0:
			t.problemf("say with a push of %d bytes (over --max-frame %d) answered ret 0, no error", pushLen, maxFrame)
		default:
			t.sawf("say with a push of %d bytes answered ret %d", pushLen, b.Ret)
		}
		wait := time.After(10 * time.Second)
		if !fits {
			wait = time.After(3 * time.Second)
		}
		got := make([]int, len(ps)) // push length per player
	collect:
		for {
			all := true
			for i := range ps {
				all = all && got[i] > 0
			}
			if all {
				break
			}
			select {
			case pb := <-ps[0].Pushes():
				got[0] = int(pb.Len)
			case pb := <-ps[1].Pushes():
				got[1] = int(pb.Len)
			case pb := <-ps[2].Pushes():
				got[2] = int(pb.Len)
			case <-wait:
				break collect
			case <-ctx.Done():
				break collect
			}
		}
		for i, p := range ps {
			switch {
			case got[i] > maxFrame:
				t.problemf("%s received a push of %d bytes, over --max-frame %d", p.name, got[i], maxFrame)
			case fits && got[i] == 0:
				t.problemf("%s did not receive the %d-byte push within 10s", p.name, pushLen)
			case fits && got[i] != pushLen:
				t.problemf("%s received a push of %d bytes, want %d", p.name, got[i], pushLen)
			case !fits && got[i] > 0:
				t.problemf("%s received a push of %d bytes", p.name, got[i])
			}
			if err := p.alive(ctx, 10*time.Second); err != nil {
				t.closedCnt.Add(1)
				t.problemf("%s dropped after the %d-byte push: %v", p.name, pushLen, err)
			}
		}
	}
	uidLen := len(ps[0].name)
	say(maxFrame-box.HeaderLen-uidLen-2, true)
	if t.closedCnt.Load() == 0 {
		say(maxFrame-box.HeaderLen, false)
	}
	return t.obs(expect)
}

// BigEcho is attack (e): one connection keeps depth echoes of a largest
// frame (maxFrame bytes) in flight and reads every reply, for rounds
// round trips, at readRate bytes a second (0: as fast as it can) through
// a 64 KiB socket receive buffer, as over a real link. It keeps reading,
// so it must not be dropped as a slow reader.
//
// Another player's frame may wait behind the depth frames the attacker
// has in the farm, as behind NoRead's: in the pusher's pipeline, the
// worker's batch, the gateway's take (how fast the attacker reads its
// replies is its own connection's business: they wait in its output, not
// in anyone else's way). So first it measures, on this machine now, how
// long the farm takes to carry one such window (depth frames of maxFrame
// bytes) for a client that reads at full speed (Observation.InflightWait,
// the median of three); Run allows the steady player's p99 and max that
// much above the targets.
func BigEcho(ctx context.Context, addr string, maxFrame, rounds, depth, readRate int) Observation {
	t := newTally()
	body := make([]byte, maxFrame-box.HeaderLen)
	for i := range body {
		body[i] = byte('A' + i%23)
	}
	t.inflightWait = inflightWindow(ctx, t, addr, box.Append(nil, demo.CmdEcho, 0, 1, body), depth, 3)
	expect := fmt.Sprintf("%d echoes of %d bytes, %d in flight, read at %s, all answered right; the reader is never dropped; nobody else notices beyond waiting behind its frames in flight (steady p99 <= %v, max <= %v, + %v: a window of %d of its frames carried for a client that reads)",
		rounds, maxFrame, depth, rate(readRate), TargetP99, TargetMax, fmtDur(t.inflightWait), depth)
	start := time.Now()
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		return t.obs(expect)
	}
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(64 << 10)
	}
	c.rate = readRate
	credits := make(chan struct{}, depth)
	for range depth {
		credits <- struct{}{}
	}
	var wrong, answered atomic.Int64
	done := readFrames(c, func(b box.Box) {
		t.reply(b.Ret)
		if len(b.Body) != len(body) || binary.BigEndian.Uint32(b.Body[:4]) != b.SN || !bytes.Equal(b.Body[4:], body[4:]) {
			wrong.Add(1)
		}
		answered.Add(1)
		select {
		case credits <- struct{}{}:
		default: // a reply nobody asked for
		}
	})
	// Each round waits for all depth credits and writes depth frames at
	// once, so the replies are produced together and may be handed to
	// the gateway's connection together, as a client pipelining its
	// requests makes them.
	stop := time.After(60 * time.Second)
	frame := make([]byte, 0, depth*maxFrame)
	sent := 0
send:
	for sent < rounds {
		for range min(depth, rounds-sent) {
			select {
			case <-credits:
			case <-c.closed:
				break send
			case <-stop:
				break send
			case <-ctx.Done():
				break send
			}
		}
		frame = frame[:0]
		k := min(depth, rounds-sent)
		for range k {
			sent++
			binary.BigEndian.PutUint32(body[:4], uint32(sent))
			frame = box.Append(frame, demo.CmdEcho, 0, uint32(sent), body)
		}
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(frame); err != nil {
			break
		}
		t.frames.Add(int64(k))
	}
	deadline := time.Now().Add(30 * time.Second)
	for answered.Load() < int64(sent) && !c.isClosed() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	closed := c.isClosed()
	c.Close()
	<-done
	n := answered.Load()
	t.sawf("%d of %d round trips of %d bytes (%d in flight) done in %v", n, rounds, maxFrame, depth, time.Since(start).Round(time.Millisecond))
	if closed {
		t.problemf("dropped by the gateway after %d of %d round trips", n, rounds)
	} else if n < int64(rounds) {
		t.problemf("only %d of %d round trips answered", n, rounds)
	}
	if w := wrong.Load(); w > 0 {
		t.problemf("%d replies with a wrong body", w)
	}
	if t.ok.Load() != n {
		t.problemf("%d of %d replies with ret != 0", n-t.ok.Load(), n)
	}
	return t.obs(expect)
}

// HalfFrames is attack (f): conns connections each send maxFrame-1 bytes of
// a maxFrame-byte frame and hold; then one connection (slowloris) sends a
// frame one byte every 2 s. A started frame must be complete within
// frameTimeout, or its connection is closed.
//
// The gateway times a frame from its reading of the first byte, and
// closes it at most frameTimeout + gateway.FrameSweep after that read.
// Under this attack the read comes well after the write (0.3 to 2 s
// measured on 2 shared cores: one event loop accepts one connection a
// pass while it takes in 200 MiB), so the write cannot start the clock.
// Each connection sends a whole echo frame in the same write as its
// frame's first bytes: the gateway reads them together and can answer the
// echo only after that read, so the reply bounds the start of the
// frame's time from above. The close must follow the reply within that
// bound plus TargetMax, the longest the suite lets the gateway take to act
// for the steady player under attack (here: the loop's wake for the close,
// and this process's reader).
func HalfFrames(ctx context.Context, addr string, conns, maxFrame int, frameTimeout time.Duration) Observation {
	t := newTally()
	sweep := gateway.FrameSweep(frameTimeout)
	bound := frameTimeout + sweep + TargetMax
	expect := fmt.Sprintf("every connection with a frame started is closed within --frame-timeout %v + its sweep %v (+%v) of the gateway's reading the frame's first byte (the reply to an echo sent with it); the partial frames cost the gateway a bounded memory", frameTimeout, sweep, TargetMax)

	type half struct {
		c       *aconn
		start   time.Time    // just before its write
		replied atomic.Int64 // when the echo's reply came (unix ns); 0: not yet
		done    <-chan struct{}
	}
	const echoSN = 1
	echo := box.Append(nil, demo.CmdEcho, 0, echoSN, []byte("half"))
	watch := func(c *aconn) *half {
		h := &half{c: c}
		h.done = readFrames(c, func(b box.Box) {
			t.reply(b.Ret)
			if b.SN == echoSN {
				h.replied.CompareAndSwap(0, time.Now().UnixNano())
			}
		})
		return h
	}

	// The holders: one shared buffer, the echo and maxFrame-1 bytes of a
	// frame.
	part := box.Append(nil, demo.CmdEcho, 0, 2, make([]byte, maxFrame-box.HeaderLen))[:maxFrame-1]
	part = append(slices.Clip(echo), part...)
	hs := make([]*half, conns)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= conns || ctx.Err() != nil {
					return
				}
				c, err := t.dial(ctx, addr)
				if err != nil {
					t.problemf("dial: %v", err)
					continue
				}
				h := watch(c)
				hs[i] = h
				t.frames.Add(2)
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				h.start = time.Now()
				if _, err := c.Write(part); err != nil && !c.isClosed() {
					c.lost() // a write refused: the gateway has closed it
				}
			}
		}()
	}
	wg.Wait()
	sent := time.Since(t.start)
	t.sawf("%d connections sent an echo and %d of %d bytes of a frame each in %v", conns, maxFrame-1, maxFrame, sent.Round(time.Millisecond))

	// The slowloris connection, started last: it holds the newest
	// partial frame, so a budget that closes the oldest ones first spares
	// it, and only --frame-timeout can close it.
	nc, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		for _, h := range hs {
			if h != nil {
				h.c.Close()
			}
		}
		return t.obs(expect)
	}
	sl := watch(nc)
	slFrame := box.Append(nil, demo.CmdEcho, 0, 2, bytes.Repeat([]byte("z"), 64))
	t.frames.Add(2)
	sl.start = time.Now()
	go func() {
		b := append(slices.Clip(echo), slFrame[0]) // one write: read together
		for i := 1; ; i++ {
			if _, err := sl.c.Write(b); err != nil {
				sl.c.lost()
				return
			}
			if i == len(slFrame) {
				return
			}
			b = slFrame[i : i+1]
			select {
			case <-sl.c.closed:
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()

	// Wait until all are closed, or each open one is overdue (its echo
	// answered more than bound ago); one whose echo is never answered, at
	// most 2 x bound.
	all := append(slices.Clip(hs), sl)
	giveUp := time.Now().Add(2 * bound)
	for time.Now().Before(giveUp) && ctx.Err() == nil {
		now, waiting := time.Now(), false
		for _, h := range all {
			if h == nil || h.c.isClosed() {
				continue
			}
			if r := h.replied.Load(); r == 0 || now.Before(time.Unix(0, r).Add(bound)) {
				waiting = true
				break
			}
		}
		if !waiting {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// judge says how h ended: "open", "budget" (closed before its frame
	// could time out), "unanswered" (closed after, its echo not answered:
	// nothing to judge it by), "late" or "ok"; lag is its echo's reply after its write,
	// took its close after the reply.
	judge := func(h *half) (verdict string, lag, took time.Duration) {
		r := h.replied.Load()
		if r != 0 {
			lag = time.Unix(0, r).Sub(h.start)
		}
		switch {
		case !h.c.isClosed():
			return "open", lag, 0
		case h.c.at.Before(h.start.Add(frameTimeout)):
			// The frame timeout closes no earlier than frameTimeout
			// after the read, which follows the write.
			return "budget", lag, 0
		case r == 0:
			return "unanswered", lag, 0
		}
		took = h.c.at.Sub(time.Unix(0, r))
		if took > bound {
			return "late", lag, took
		}
		return "ok", lag, took
	}

	v, lag, took := judge(sl)
	switch v {
	case "open":
		t.problemf("slowloris still open %v after its first byte (echo answered %v after it; --frame-timeout %v)", time.Since(sl.start).Round(10*time.Millisecond), lag.Round(10*time.Millisecond), frameTimeout)
	case "ok", "late":
		t.sawf("slowloris: its echo answered %v after its first byte, closed %v after that", lag.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
		if v == "late" {
			t.problemf("slowloris closed %v after its echo's reply > --frame-timeout %v + %v + %v", took.Round(10*time.Millisecond), frameTimeout, sweep, TargetMax)
		}
	default:
		t.problemf("slowloris closed %v after its first byte: %s", sl.c.at.Sub(sl.start).Round(10*time.Millisecond), v)
	}
	n := map[string]int{}
	var maxLag, minTook, maxTook time.Duration = 0, -1, 0
	for _, h := range hs {
		if h == nil {
			continue
		}
		v, lag, took := judge(h)
		n[v]++
		maxLag = max(maxLag, lag)
		if v == "ok" || v == "late" {
			if minTook < 0 || took < minTook {
				minTook = took
			}
			maxTook = max(maxTook, took)
		}
	}
	t.sawf("holders: %d closed by a memory budget (before --frame-timeout), %d by the timeout %v to %v after their echo's reply, %d later without a reply (not judged); echoes answered up to %v after the write; %d still open",
		n["budget"], n["ok"]+n["late"], minTook.Round(10*time.Millisecond), maxTook.Round(10*time.Millisecond), n["unanswered"], maxLag.Round(10*time.Millisecond), n["open"])
	if n["open"] > 0 {
		t.problemf("%d of %d half-sent frames still held (--frame-timeout %v)", n["open"], conns, frameTimeout)
	}
	if n["late"] > 0 {
		t.problemf("%d half-sent frames closed later than --frame-timeout %v + %v + %v after their echo's reply", n["late"], frameTimeout, sweep, TargetMax)
	}
	for _, h := range all {
		if h != nil {
			h.c.Close()
			<-h.done
		}
	}
	return t.obs(expect)
}

// BigTrigger is attack (h): a broadcast trigger (PUBLISH <prefix>:trigger,
// docs/protocol.md section 4) with a body of size bytes, over what a
// player may receive. Three players (two logged in) are connected besides
// the steady player. It must be refused: no push, nobody dropped.
func BigTrigger(ctx context.Context, addr, redisURL, prefix string, size, maxFrame int) Observation {
	t := newTally()
	expect := fmt.Sprintf("a %d-byte broadcast (over --max-frame %d) is refused: nobody gets it, nobody is dropped", size, maxFrame)
	if prefix == "" {
		prefix = "maple"
	}
	var ps []*player
	defer func() {
		for _, p := range ps {
			p.Close()
		}
	}()
	for i, name := range []string{"trig-a", "trig-b", "trig-c"} {
		p, err := t.player(ctx, addr, name)
		if err != nil {
			t.problemf("dial: %v", err)
			return t.obs(expect)
		}
		ps = append(ps, p)
		if i < 2 {
			if b, err := p.request(ctx, 10*time.Second, demo.CmdLogin, []byte(name)); err != nil || b.Ret != 0 {
				t.problemf("%s: login answered ret %d, err %v", name, b.Ret, err)
				return t.obs(expect)
			}
		}
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.problemf("redis url: %v", err)
		return t.obs(expect)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	payload, _ := json.Marshal(map[string]any{"op": "broadcast", "cmd": 100, "body": strings.Repeat("b", size)})
	channel := prefix + ":trigger"
	// As RESP: *3 $7 PUBLISH $<n> channel $<n> payload.
	t.sent.Add(int64(len(fmt.Sprintf("*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n\r\n", len(channel), channel, len(payload))) + len(payload)))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	n, err := rdb.Publish(pctx, channel, payload).Result()
	cancel()
	if err != nil {
		t.problemf("PUBLISH: %v", err)
		return t.obs(expect)
	}
	t.sawf("PUBLISH of %d bytes reached %d subscriber(s)", len(payload), n)
	sleepCtx(ctx, 3*time.Second)
	for _, p := range ps {
		for {
			var pb box.Box
			select {
			case pb = <-p.Pushes():
			default:
			}
			if pb.Len == 0 {
				break
			}
			t.problemf("%s received a push of %d bytes (cmd %d)", p.name, pb.Len, pb.Cmd)
		}
		if err := p.alive(ctx, 10*time.Second); err != nil {
			t.closedCnt.Add(1)
			t.problemf("%s dropped: %v", p.name, err)
		}
	}
	return t.obs(expect)
}

// Malformed is an added attack: conns connections in turn (parallel at a
// time) each send one bad header: a wrong magic, a packet_len under 24, a
// packet_len over maxFrame. Each must be closed at once; the gateway's log
// must not grow by a line per bad frame without bound.
func Malformed(ctx context.Context, addr string, conns, parallel, maxFrame int) Observation {
	t := newTally()
	expect := fmt.Sprintf("each of %d connections with a bad header closed within 2s; the gateway's log rate-limited", conns)
	good := box.Append(nil, demo.CmdEcho, 0, 1, nil)
	bad := make([][]byte, 3)
	for i := range bad {
		bad[i] = append([]byte(nil), good...)
	}
	binary.BigEndian.PutUint32(bad[0][0:4], 0xDEADBEEF)
	binary.BigEndian.PutUint32(bad[1][8:12], 8)
	binary.BigEndian.PutUint32(bad[2][8:12], uint32(maxFrame+1))
	var next, notClosed, dialErrs atomic.Int64
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf [64]byte
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(conns) {
					return
				}
				c, err := t.dial(ctx, addr)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				t.frames.Add(1)
				_, err = c.Write(bad[i%3])
				if err == nil {
					// Anything the gateway answers is read and ignored;
					// what counts is that the read ends before 2 s.
					_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
					_, err = io.ReadFull(c.Conn, buf[:])
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					notClosed.Add(1)
				} else {
					t.closedCnt.Add(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	t.sawf("%d bad headers sent in %v: %d connections closed by the gateway, %d still open after 2s, %d dial errors",
		t.frames.Load(), time.Since(t.start).Round(time.Millisecond), t.closedCnt.Load(), notClosed.Load(), dialErrs.Load())
	if n := notClosed.Load(); n > 0 {
		t.problemf("%d connections with a bad header not closed within 2s", n)
	}
	return t.obs(expect)
}

// NoRead is an added attack: one connection writes echoes of size bytes
// for as long as the gateway takes them and never reads a reply. Its
// output piles up; the gateway must drop it as not reading (--out-buffer,
// or --write-stall once its output stops moving) and stay responsive
// meanwhile.
//
// Until then the attacker has up to inflight frames in the farm (the
// gateway's --max-inflight: their replies are counted out as they reach
// its output queue), and another player's frame may wait behind all of
// them: in the pusher's pipeline, the worker's batch, the gateway's take.
// So first it measures, on this machine now, how long the farm takes to
// carry one such window for a client that reads (Observation.InflightWait,
// the median of three); Run allows the steady player's p99 and max that
// much above the targets.
func NoRead(ctx context.Context, addr string, size, inflight int, writeStall time.Duration) Observation {
	t := newTally()
	const slack = 3 * time.Second
	frame := box.Append(nil, demo.CmdEcho, 0, 1, bytes.Repeat([]byte("n"), size))
	t.inflightWait = inflightWindow(ctx, t, addr, frame, inflight, 3)
	expect := fmt.Sprintf("a client that never reads is closed within --write-stall %v (+%v) of its last write; nobody else notices beyond waiting behind its frames in flight (steady p99 <= %v, max <= %v, + %v: a window of %d of its frames carried for a client that reads)",
		writeStall, slack, TargetP99, TargetMax, fmtDur(t.inflightWait), inflight)
	frames0, sent0 := t.frames.Load(), t.sent.Load()
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		return t.obs(expect)
	}
	defer c.Close()
	start := time.Now()
	lastWrite := time.Now()
	stop := time.Now().Add(10 * time.Second) // at most this long writing
	for time.Now().Before(stop) && ctx.Err() == nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := c.Write(frame)
		if n > 0 {
			lastWrite = time.Now()
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				c.lost()
			}
			break // the gateway stopped taking them (or closed)
		}
		t.frames.Add(1)
	}
	t.sawf("wrote %d frames (%d MiB) in %v without reading", t.frames.Load()-frames0, (t.sent.Load()-sent0)>>20, time.Since(start).Round(time.Millisecond))
	deadline := lastWrite.Add(writeStall + slack)
	for !c.isClosed() && time.Now().Before(deadline) && ctx.Err() == nil {
		if tcpClosed(c.Conn) {
			c.lost()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.isClosed() {
		t.sawf("closed by the gateway %v after its last write", max(0, c.at.Sub(lastWrite)).Round(10*time.Millisecond))
	} else {
		t.problemf("not closed %v after its last write (--write-stall %v)", writeStall+slack, writeStall)
	}
	return t.obs(expect)
}

// inflightWindow returns the median of runs measures of how long the farm
// takes to answer n frames written at once by a client that reads them:
// from the write to the last reply.
func inflightWindow(ctx context.Context, t *tally, addr string, frame []byte, n, runs int) time.Duration {
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("window: dial: %v", err)
		return 0
	}
	defer c.Close()
	replies := make(chan struct{}, n)
	done := readFrames(c, func(b box.Box) { replies <- struct{}{} })
	defer func() { c.Close(); <-done }()
	burst := bytes.Repeat(frame, n)
	var took []time.Duration
	for range runs {
		start := time.Now()
		_ = c.SetWriteDeadline(start.Add(10 * time.Second))
		if _, err := c.Write(burst); err != nil {
			t.problemf("window: write: %v", err)
			return 0
		}
		for range n {
			select {
			case <-replies:
			case <-done:
				t.problemf("window: a client that reads was dropped")
				return 0
			case <-ctx.Done():
				return 0
			}
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.sawf("a window of %d frames of %d bytes, written at once by a client that reads, answered in %v", n, len(frame), took)
	return took[len(took)/2]
}
