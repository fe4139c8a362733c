package abuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	// InflightWait, if set, is how long the farm took in this run to
	// carry one window of the attack's frames in flight (noread: its
	// --max-inflight; bigecho: the two it keeps) for a client that reads:
	// the wait behind them the design lets another player's frame have.
	// Run adds it to the steady p99 and max targets (Result.P99Limit).
	InflightWait time.Duration
	Saw          []string // what it saw, one fact a line
	Problems     []string // where what it saw is not what it expected
	Dur          time.Duration
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
	inflightWait                                            time.Duration
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
		Closed: t.closedCnt.Load(), Expect: expect, InflightWait: t.inflightWait,
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
