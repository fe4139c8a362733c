package abuse

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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
)

// AttackerIP is the source address of the attackers' raw connections when
// the gateway listens on loopback. The steady player and the checks come
// from 127.0.0.1, so a per-address limit tells the attacker apart from the
// players it must not hurt, as it would on the internet.
const AttackerIP = "127.0.0.2"

// ConnWireBytes is what opening and closing one TCP connection costs the
// attacker on the wire: the IPv4+TCP headers of the segments it sends
// (SYN 60 bytes, ACK 52, FIN 52, ACK 52). Observation.WireBytes counts it
// per connection, so an attack of connections without payload (churn) is
// not measured against zero bytes.
const ConnWireBytes = 216

// Observation is what one attack did and saw.
type Observation struct {
	Sent   int64 // payload bytes the attacker wrote (TCP) or published (trigger, as RESP)
	Conns  int64 // TCP connections it opened
	Frames int64 // frames it sent, whole or in part
	// Replies to its frames, by ret.
	OK, Busy, Failed, OtherRet int64 // 0, -10002, -10001, anything else
	Closed                     int64 // its connections the gateway closed (not the attacker)
	Expect                     string
	Saw                        []string // what it saw, one fact a line
	Problems                   []string // where what it saw is not what it expected
	Dur                        time.Duration
}

// WireBytes is Sent plus ConnWireBytes per connection: the attacker's
// bytes against which the bytes into Redis are measured.
func (o Observation) WireBytes() int64 { return o.Sent + o.Conns*ConnWireBytes }

// tally collects an Observation from an attack's goroutines.
type tally struct {
	start                                                   time.Time
	sent, conns, frames, ok, busy, failed, other, closedCnt atomic.Int64
	mu                                                      sync.Mutex
	saw, problems                                           []string
}

func newTally() *tally { return &tally{start: time.Now()} }

func (t *tally) reply(ret int32) {
	switch ret {
	case box.RetOK:
		t.ok.Add(1)
	case box.RetBusy:
		t.busy.Add(1)
	case box.RetHandlerFailed:
		t.failed.Add(1)
	default:
		t.other.Add(1)
	}
}

func (t *tally) sawf(format string, args ...any) {
	t.mu.Lock()
	t.saw = append(t.saw, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}

func (t *tally) problemf(format string, args ...any) {
	t.mu.Lock()
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}

func (t *tally) obs(expect string) Observation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Observation{
		Sent: t.sent.Load(), Conns: t.conns.Load(), Frames: t.frames.Load(),
		OK: t.ok.Load(), Busy: t.busy.Load(), Failed: t.failed.Load(), OtherRet: t.other.Load(),
		Closed: t.closedCnt.Load(), Expect: expect,
		Saw: append([]string(nil), t.saw...), Problems: append([]string(nil), t.problems...),
		Dur: time.Since(t.start),
	}
}

// aconn is an attacker's connection: it counts what it writes, and
// whether the gateway closed it.
type aconn struct {
	net.Conn
	t      *tally
	rate   int         // bytes a second readFrames reads at; 0: as fast as it can
	mine   atomic.Bool // closed by the attacker
	closed chan struct{}
	once   sync.Once
	at     time.Time // when the gateway's close was seen
}

func (c *aconn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.sent.Add(int64(n))
	return n, err
}

// Close closes the connection on the attacker's behalf.
func (c *aconn) Close() error {
	c.mine.Store(true)
	return c.Conn.Close()
}

// lost records that the connection ended by the gateway's doing, once.
func (c *aconn) lost() {
	c.once.Do(func() {
		c.at = time.Now()
		if !c.mine.Load() {
			c.t.closedCnt.Add(1)
		}
		close(c.closed)
	})
}

// isClosed reports whether the gateway's close was seen.
func (c *aconn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// dial opens an attacker's connection to addr, from AttackerIP when addr
// is on loopback.
func (t *tally) dial(ctx context.Context, addr string) (*aconn, error) {
	nc, err := attackerDialer(addr).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	t.conns.Add(1)
	return &aconn{Conn: nc, t: t, closed: make(chan struct{})}, nil
}

func attackerDialer(addr string) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() && ip.To4() != nil {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(AttackerIP)}
		// Choose the port at connect(), by the whole 4-tuple, not at
		// bind(): thousands of short connections from one bound address
		// would otherwise run out of ports while closed ones linger in
		// TIME_WAIT.
		d.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return d
}

// readFrames reads frames from c until it ends, calling f for each (on
// the reading goroutine). The returned channel is closed when reading has
// stopped; a close by the gateway is recorded on c.
func readFrames(c *aconn, f func(box.Box)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var src io.Reader = c.Conn
		if c.rate > 0 {
			src = &slowReader{r: c.Conn, rate: c.rate, start: time.Now()}
		}
		r := box.NewReader(src, readMax)
		for {
			b, err := r.Next()
			if err != nil {
				if !c.mine.Load() && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
					c.lost()
				}
				return
			}
			if f != nil {
				f(b)
			}
		}
	}()
	return done
}

// slowReader reads from r at about rate bytes a second.
type slowReader struct {
	r     io.Reader
	rate  int
	start time.Time
	n     int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	// Wait until the bytes read so far are due at the rate.
	if due := s.start.Add(time.Duration(float64(s.n) / float64(s.rate) * float64(time.Second))); time.Until(due) > 0 {
		time.Sleep(time.Until(due))
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	return n, err
}

func rate(bps int) string {
	if bps <= 0 {
		return "full speed"
	}
	return fmt.Sprintf("%d MiB/s", bps>>20)
}

func frames(cmd int32, n int, body []byte) []byte {
	buf := make([]byte, 0, n*(box.HeaderLen+len(body)))
	for sn := 1; sn <= n; sn++ {
		buf = box.Append(buf, cmd, 0, uint32(sn), body)
	}
	return buf
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

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

// player is a client.Conn of an attack, with the bytes it sent counted.
type player struct {
	*client.Conn
	name string
	t    *tally
}

func (t *tally) player(ctx context.Context, addr, name string) (*player, error) {
	c, err := client.Dial(ctx, addr, client.Options{MaxFrame: readMax, PushBuffer: 16})
	if err != nil {
		return nil, err
	}
	t.conns.Add(1)
	return &player{Conn: c, name: name, t: t}, nil
}

func (p *player) request(ctx context.Context, d time.Duration, cmd int32, body []byte) (box.Box, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	p.t.sent.Add(int64(box.HeaderLen + len(body)))
	p.t.frames.Add(1)
	b, err := p.Request(ctx, cmd, body)
	if err == nil {
		p.t.reply(b.Ret)
	}
	return b, err
}

// alive checks the player still gets an echo answered within d.
func (p *player) alive(ctx context.Context, d time.Duration) error {
	b, err := p.request(ctx, d, demo.CmdEcho, []byte("alive?"))
	switch {
	case err != nil:
		return err
	case b.Ret != 0 || string(b.Body) != "alive?":
		return fmt.Errorf("echo answered ret %d body %q", b.Ret, b.Body)
	}
	return nil
}

// drainPushes empties p's push channel.
func (p *player) drainPushes() {
	for {
		select {
		case <-p.Pushes():
		default:
			return
		}
	}
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
// a 256 KiB socket receive buffer, as over a real link. It keeps reading,
// so it must not be dropped as a slow reader.
func BigEcho(ctx context.Context, addr string, maxFrame, rounds, depth, readRate int) Observation {
	t := newTally()
	expect := fmt.Sprintf("%d echoes of %d bytes, %d in flight, read at %s, all answered right; the reader is never dropped", rounds, maxFrame, depth, rate(readRate))
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		return t.obs(expect)
	}
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(64 << 10)
	}
	c.rate = readRate
	body := make([]byte, maxFrame-box.HeaderLen)
	for i := range body {
		body[i] = byte('A' + i%23)
	}
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
	t.sawf("%d of %d round trips of %d bytes (%d in flight) done in %v", n, rounds, maxFrame, depth, time.Since(t.start).Round(time.Millisecond))
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
func HalfFrames(ctx context.Context, addr string, conns, maxFrame int, frameTimeout time.Duration) Observation {
	t := newTally()
	const slack = 2 * time.Second // a timeout sweep's period and a busy machine
	expect := fmt.Sprintf("every connection with a frame started is closed within --frame-timeout %v (+%v); the partial frames cost the gateway a bounded memory", frameTimeout, slack)

	// The holders: one shared buffer, maxFrame-1 bytes of a frame.
	part := box.Append(nil, demo.CmdEcho, 0, 1, make([]byte, maxFrame-box.HeaderLen))[:maxFrame-1]
	type holder struct {
		c     *aconn
		start time.Time
		done  <-chan struct{}
	}
	hs := make([]*holder, conns)
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
				h := &holder{c: c, start: time.Now(), done: readFrames(c, nil)}
				hs[i] = h
				t.frames.Add(1)
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(part); err != nil && !c.isClosed() {
					c.lost() // a write refused: the gateway has closed it
				}
			}
		}()
	}
	wg.Wait()
	sent := time.Since(t.start)
	t.sawf("%d connections sent %d of %d bytes of a frame each in %v", conns, maxFrame-1, maxFrame, sent.Round(time.Millisecond))

	// The slowloris connection, started last: it holds the newest
	// partial frame, so a budget that closes the oldest ones first spares
	// it, and only --frame-timeout can close it.
	sl, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		for _, h := range hs {
			if h != nil {
				h.c.Close()
			}
		}
		return t.obs(expect)
	}
	slDone := readFrames(sl, nil)
	slFrame := box.Append(nil, demo.CmdEcho, 0, 1, bytes.Repeat([]byte("z"), 64))
	slStart := time.Now()
	t.frames.Add(1)
	go func() {
		for i := 0; i < len(slFrame); i++ {
			if _, err := sl.Write(slFrame[i : i+1]); err != nil {
				sl.lost()
				return
			}
			select {
			case <-sl.closed:
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()

	// Wait until all are closed, or the last one is overdue.
	var last time.Time
	for _, h := range hs {
		if h != nil && h.start.After(last) {
			last = h.start
		}
	}
	deadline := last.Add(frameTimeout + slack)
	if d := slStart.Add(frameTimeout + slack); d.After(deadline) {
		deadline = d
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := sl.isClosed()
		for _, h := range hs {
			all = all && (h == nil || h.c.isClosed())
		}
		if all {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	if sl.isClosed() {
		d := sl.at.Sub(slStart)
		t.sawf("slowloris closed %v after its first byte", d.Round(10*time.Millisecond))
		if d > frameTimeout+slack {
			t.problemf("slowloris closed only %v after its first byte (--frame-timeout %v)", d.Round(10*time.Millisecond), frameTimeout)
		}
	} else {
		t.problemf("slowloris still open %v after its first byte (--frame-timeout %v)", time.Since(slStart).Round(10*time.Millisecond), frameTimeout)
	}
	var open, early, late int
	var firstClose, lastClose time.Duration = -1, 0
	for _, h := range hs {
		if h == nil {
			continue
		}
		if !h.c.isClosed() {
			open++
			continue
		}
		d := h.c.at.Sub(h.start)
		if firstClose < 0 || d < firstClose {
			firstClose = d
		}
		lastClose = max(lastClose, d)
		switch {
		case d < frameTimeout-slack/2:
			early++
		case d > frameTimeout+slack:
			late++
		}
	}
	t.sawf("holders: %d closed (%d well before --frame-timeout, by a memory budget; first %v, last %v after their first byte), %d still open",
		conns-open, early, firstClose.Round(10*time.Millisecond), lastClose.Round(10*time.Millisecond), open)
	if open > 0 {
		t.problemf("%d of %d half-sent frames still held %v after their first byte (--frame-timeout %v)", open, conns, frameTimeout+slack, frameTimeout)
	}
	if late > 0 {
		t.problemf("%d half-sent frames closed later than --frame-timeout %v + %v", late, frameTimeout, slack)
	}
	sl.Close()
	<-slDone
	for _, h := range hs {
		if h != nil {
			h.c.Close()
			<-h.done
		}
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

// echoFrom sends one echo from the attacker's address.
func echoFrom(ctx context.Context, t *tally, addr string, d time.Duration) error {
	c, err := t.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write(box.Append(nil, demo.CmdEcho, 0, 1, []byte("again"))); err != nil {
		return err
	}
	b, err := box.NewReader(c.Conn, readMax).Next()
	if err != nil {
		return err
	}
	if b.Ret != 0 {
		return fmt.Errorf("ret %d", b.Ret)
	}
	return nil
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

// NoRead is an added attack: one connection writes echoes of size bytes
// for as long as the gateway takes them and never reads a reply. Its
// output piles up; the gateway must drop it as not reading (--out-buffer,
// or --write-stall once its output stops moving) and stay responsive
// meanwhile.
func NoRead(ctx context.Context, addr string, size int, writeStall time.Duration) Observation {
	t := newTally()
	const slack = 3 * time.Second
	expect := fmt.Sprintf("a client that never reads is closed within --write-stall %v (+%v) of its last write; nobody else notices", writeStall, slack)
	c, err := t.dial(ctx, addr)
	if err != nil {
		t.problemf("dial: %v", err)
		return t.obs(expect)
	}
	defer c.Close()
	frame := box.Append(nil, demo.CmdEcho, 0, 1, bytes.Repeat([]byte("n"), size))
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
	t.sawf("wrote %d frames (%d MiB) in %v without reading", t.frames.Load(), t.sent.Load()>>20, time.Since(t.start).Round(time.Millisecond))
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

// tcpClosed reports whether the peer has closed or reset nc, without
// reading from it: the socket has left ESTABLISHED.
func tcpClosed(nc net.Conn) bool {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err != nil || info.State != unix.BPF_TCP_ESTABLISHED
	})
	return closed
}
