package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/wsframe"
)

// These tests pin wsConn's frame reader (ws.go) on its own, without a
// network: messages cut out of any chunking of the stream alike, control
// frames, fragments, limits, and the close handshake. ws_test.go runs it
// behind a real listener against github.com/coder/websocket.

// recEvents records what a wsConn reports to the core. message refuses a
// message starting with 0xFF, as the core refuses one that is not a frame.
type recEvents struct {
	msgs  [][]byte
	held  int // last n partial reported
	opens int
	ends  []error
}

func (e *recEvents) opened(p peer) (*conn, error) { e.opens++; return &conn{id: "c", peer: p}, nil }
func (e *recEvents) data(*conn, []byte) error     { return errors.New("data on a WebSocket") }
func (e *recEvents) message(_ *conn, msg []byte) error {
	if len(msg) > 0 && msg[0] == 0xFF {
		return fmt.Errorf("%w: refused", errBadFrame)
	}
	e.msgs = append(e.msgs, append([]byte(nil), msg...))
	return nil
}
func (e *recEvents) closed(_ *conn, err error) { e.ends = append(e.ends, err) }
func (e *recEvents) partial(_ *conn, n int) {
	if n < 0 {
		panic("negative partial")
	}
	e.held = n
}

type nopPeer struct{}

func (nopPeer) send([]byte)        {}
func (nopPeer) close()             {}
func (nopPeer) abort(error)        {}
func (nopPeer) remoteAddr() string { return "192.0.2.1:1234" }

// newTestWS returns an upgraded wsConn on ev.
func newTestWS(ev *recEvents, maxFrame int) *wsConn {
	cfg := &wsConfig{path: DefaultWSPath, maxFrame: maxFrame, ev: ev, log: testLogger()}
	w := &wsConn{cfg: cfg, p: nopPeer{}, since: time.Now(), c: &conn{id: "c"}}
	w.up.Store(true)
	return w
}

// clientFrame is a masked frame as a client sends it.
func clientFrame(fin bool, op wsframe.Opcode, payload []byte, key uint32) []byte {
	h := wsframe.Header{Fin: fin, Op: op, Masked: true, Len: uint64(len(payload))}
	binary.BigEndian.PutUint32(h.Mask[:], key)
	f := wsframe.AppendHeader(nil, h)
	start := len(f)
	f = append(f, payload...)
	wsframe.Mask(f[start:], h.Mask, 0)
	return f
}

// wsOutcome is what feeding a stream to a wsConn gave.
type wsOutcome struct {
	msgs   [][]byte
	out    []byte // all it wrote: pongs, close frames
	next   after  // keepOpen unless it ended
	bad    bool   // the reason wraps errBadFrame
	held   bool   // a message under way is counted in partial frames
	events *recEvents
}

// feed gives stream to a fresh wsConn in chunks of sizes next() returns.
func feed(stream []byte, maxFrame int, next func() int) wsOutcome {
	ev := &recEvents{}
	w := newTestWS(ev, maxFrame)
	s := append([]byte(nil), stream...) // unmasked in place
	var o wsOutcome
	for len(s) > 0 && o.next == keepOpen {
		n := min(next(), len(s))
		// The loop reuses its input buffer: hand over a copy that is then
		// scribbled over, so nothing may keep it.
		chunk := append([]byte(nil), s[:n]...)
		s = s[n:]
		out, after, reason := w.read(chunk)
		for i := range chunk {
			chunk[i] = 0xEE
		}
		o.out = append(o.out, out...)
		o.next = after
		o.bad = errors.Is(reason, errBadFrame)
	}
	o.msgs, o.held, o.events = ev.msgs, ev.held > 0, ev
	w.closed(nil)
	return o
}

// TestWSFramesChunked: fragments, pings and pongs between them, and
// masks at every offset, read in one piece or byte by byte, give the
// same messages, and a ping is answered.
func TestWSFramesChunked(t *testing.T) {
	m1 := box.Append(nil, 1, 0, 1, []byte("hello"))
	m2 := box.Append(nil, 2, 0, 2, bytes.Repeat([]byte("x"), 300)) // 16-bit length
	var s []byte
	s = append(s, clientFrame(true, wsframe.OpBinary, m1, 0x01020304)...)
	s = append(s, clientFrame(false, wsframe.OpBinary, m2[:100], 0xA0B0C0D0)...)
	s = append(s, clientFrame(true, wsframe.OpPing, []byte("are you there"), 7)...)
	s = append(s, clientFrame(false, wsframe.OpContinuation, m2[100:101], 9)...)
	s = append(s, clientFrame(true, wsframe.OpPong, nil, 11)...)
	s = append(s, clientFrame(true, wsframe.OpContinuation, m2[101:], 13)...)
	s = append(s, clientFrame(true, wsframe.OpBinary, nil, 15)...)
	for _, step := range []int{len(s), 1, 2, 3, 7, 64} {
		o := feed(s, 4096, func() int { return step })
		if o.next != keepOpen || len(o.msgs) != 3 || !bytes.Equal(o.msgs[0], m1) || !bytes.Equal(o.msgs[1], m2) || len(o.msgs[2]) != 0 {
			t.Fatalf("chunks of %d: next %v, %d messages", step, o.next, len(o.msgs))
		}
		if want := wsframe.AppendFrame(nil, wsframe.OpPong, []byte("are you there")); !bytes.Equal(o.out, want) {
			t.Fatalf("chunks of %d: wrote % x, want the pong % x", step, o.out, want)
		}
		if o.held {
			t.Fatalf("chunks of %d: partial frames still counted", step)
		}
	}
}

// TestWSFramesRefused: what ends a connection, and with which close code.
func TestWSFramesRefused(t *testing.T) {
	frame := box.Append(nil, 1, 0, 1, []byte("hi"))
	unmasked := wsframe.AppendFrame(nil, wsframe.OpBinary, frame)
	rsv := clientFrame(true, wsframe.OpBinary, frame, 1)
	rsv[0] |= 0x40
	tests := []struct {
		name   string
		stream []byte
		next   after
		code   uint16 // of the close frame written; 0: none
		bad    bool
	}{
		{"text", clientFrame(true, wsframe.OpText, []byte("hi"), 1), lingerAfter, WSCloseText, true},
		{"unmasked", unmasked, lingerAfter, WSCloseProtocol, true},
		{"reserved bits", rsv, lingerAfter, WSCloseProtocol, true},
		{"continuation of nothing", clientFrame(true, wsframe.OpContinuation, frame, 1), lingerAfter, WSCloseProtocol, true},
		{"binary inside a fragmented message", append(clientFrame(false, wsframe.OpBinary, frame[:3], 1), clientFrame(true, wsframe.OpBinary, frame, 1)...), lingerAfter, WSCloseProtocol, true},
		{"too big", clientFrame(true, wsframe.OpBinary, make([]byte, 101), 1)[:8], lingerAfter, WSCloseTooBig, true},
		{"too big in fragments", append(clientFrame(false, wsframe.OpBinary, make([]byte, 60), 1), clientFrame(true, wsframe.OpContinuation, make([]byte, 41), 1)...), lingerAfter, WSCloseTooBig, true},
		{"refused by the core", clientFrame(true, wsframe.OpBinary, []byte{0xFF, 1}, 1), lingerAfter, WSCloseBadFrame, true},
		{"reserved opcode", []byte{0x83, 0x80, 0, 0, 0, 0}, lingerAfter, WSCloseProtocol, true},
		{"close", clientFrame(true, wsframe.OpClose, []byte{0x03, 0xE8, 'b', 'y', 'e'}, 1), closeAfter, WSCloseNormal, false},
		{"close with no code", clientFrame(true, wsframe.OpClose, nil, 1), closeAfter, 0, false},
		{"close with a reserved code", clientFrame(true, wsframe.OpClose, []byte{0x03, 0xEE}, 1), closeAfter, WSCloseProtocol, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := feed(tt.stream, 100, func() int { return len(tt.stream) })
			if o.next != tt.next || o.bad != tt.bad {
				t.Fatalf("next %v bad %v, want %v %v", o.next, o.bad, tt.next, tt.bad)
			}
			h, n, err := wsframe.Parse(o.out)
			if err != nil || n == 0 || h.Op != wsframe.OpClose || h.Masked || int(h.Len) != len(o.out)-n {
				t.Fatalf("wrote % x, want one close frame", o.out)
			}
			code, _ := wsframe.CloseCode(o.out[n:])
			if tt.code == 0 && code != wsframe.CloseNoStatus || tt.code != 0 && code != tt.code {
				t.Fatalf("close code %d, want %d", code, tt.code)
			}
			if o.held {
				t.Fatal("partial frames still counted after the close")
			}
		})
	}
}

// TestWSFramesAfterGoodbye: once our close frame is out, the client's
// messages are dropped, pings go unanswered, and its close frame ends the
// connection, however its frames are cut.
func TestWSFramesAfterGoodbye(t *testing.T) {
	frame := box.Append(nil, 1, 0, 1, []byte("late"))
	var s []byte
	s = append(s, clientFrame(true, wsframe.OpBinary, frame, 5)...)
	s = append(s, clientFrame(true, wsframe.OpPing, nil, 6)...)
	s = append(s, clientFrame(true, wsframe.OpBinary, make([]byte, 70<<10), 7)...)
	s = append(s, clientFrame(true, wsframe.OpClose, []byte{0x03, 0xE8}, 8)...)
	for _, step := range []int{len(s), 1, 5, 4096} {
		ev := &recEvents{}
		w := newTestWS(ev, 1<<20)
		if bye := w.goodbye(nil); bye == nil {
			t.Fatal("no goodbye for a close by the farm")
		}
		var got after
		rest := append([]byte(nil), s...)
		for len(rest) > 0 && got == keepOpen {
			n := min(step, len(rest))
			out, next, _ := w.read(append([]byte(nil), rest[:n]...))
			rest = rest[n:]
			if len(out) > 0 {
				t.Fatalf("chunks of %d: wrote % x after the goodbye", step, out)
			}
			got = next
		}
		if got != closeAfter || len(rest) != 0 || len(ev.msgs) != 0 {
			t.Fatalf("chunks of %d: next %v with %d bytes left, %d messages", step, got, len(rest), len(ev.msgs))
		}
	}
}

// TestWSLargeMessageMapped: a message of 64 KiB and more that arrives in
// pieces is gathered in its own mapping (inbuf.go) and counted in the
// partial frames while it arrives.
func TestWSLargeMessageMapped(t *testing.T) {
	body := make([]byte, 200<<10)
	for i := range body {
		body[i] = byte(i)
	}
	m := box.Append(nil, 1, 0, 1, body)
	s := clientFrame(true, wsframe.OpBinary, m, 0xDEADBEEF)
	ev := &recEvents{}
	w := newTestWS(ev, 1<<20)
	for off := 0; off < len(s); off += 16 << 10 {
		chunk := append([]byte(nil), s[off:min(off+16<<10, len(s))]...)
		if _, next, err := w.read(chunk); next != keepOpen || err != nil {
			t.Fatalf("at %d: %v %v", off, next, err)
		}
		if off+16<<10 < len(s) {
			if w.in.mapped == nil {
				t.Fatalf("at %d: a large frame gathered on the heap", off)
			}
			if ev.held < off {
				t.Fatalf("at %d: %d bytes counted as partial", off, ev.held)
			}
		}
	}
	if len(ev.msgs) != 1 || !bytes.Equal(ev.msgs[0], m) || ev.held != 0 || w.in.mapped != nil {
		t.Fatalf("%d messages, partial %d, mapping kept %v", len(ev.msgs), ev.held, w.in.mapped != nil)
	}
}

// FuzzWSFrames: whatever a client sends, the frame reader never panics,
// delivers messages within the limit, and gives the same messages, output
// and end however the stream is cut into reads.
func FuzzWSFrames(f *testing.F) {
	m := box.Append(nil, 1, 0, 1, []byte("hello"))
	f.Add(clientFrame(true, wsframe.OpBinary, m, 1), uint64(1))
	f.Add(append(clientFrame(false, wsframe.OpBinary, m[:5], 2), append(clientFrame(true, wsframe.OpPing, []byte("p"), 3),
		clientFrame(true, wsframe.OpContinuation, m[5:], 4)...)...), uint64(2))
	f.Add(append(clientFrame(true, wsframe.OpBinary, make([]byte, 300), 5), clientFrame(true, wsframe.OpClose, []byte{3, 232}, 6)...), uint64(3))
	f.Add(clientFrame(true, wsframe.OpBinary, make([]byte, 70000), 7), uint64(4))
	f.Add([]byte{0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4}, uint64(5))
	const maxFrame = 1000
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		whole := feed(stream, maxFrame, func() int { return len(stream) })
		for _, m := range whole.msgs {
			if len(m) > maxFrame {
				t.Fatalf("message of %d bytes over the %d limit", len(m), maxFrame)
			}
		}
		rng := rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
		for name, next := range map[string]func() int{
			"byte by byte": func() int { return 1 },
			"random":       func() int { return 1 + rng.IntN(40) },
		} {
			o := feed(stream, maxFrame, next)
			if o.next != whole.next || o.bad != whole.bad || !bytes.Equal(o.out, whole.out) || len(o.msgs) != len(whole.msgs) {
				t.Fatalf("%s: next %v bad %v out % x, %d messages; whole: %v %v % x, %d", name, o.next, o.bad, o.out, len(o.msgs),
					whole.next, whole.bad, whole.out, len(whole.msgs))
			}
			for i := range o.msgs {
				if !bytes.Equal(o.msgs[i], whole.msgs[i]) {
					t.Fatalf("%s: message %d differs", name, i)
				}
			}
			if o.next == keepOpen && o.held != whole.held && (len(stream) > 0) {
				// Whether a message is under way depends on the bytes,
				// not on the reads.
				t.Fatalf("%s: partial frames counted %v, whole %v", name, o.held, whole.held)
			}
		}
	})
}

// handshakeReq is a browser's handshake for path.
func handshakeReq(path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: play.example:28080\r\nConnection: keep-alive, Upgrade\r\n" +
		"Upgrade: websocket\r\nOrigin: https://play.example:28080\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + strings.Join(extra, "") + "\r\n"
}

// TestWSHandshake: answers to handshake requests, read in any chunks.
func TestWSHandshake(t *testing.T) {
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	tests := []struct {
		name    string
		req     string
		web     bool
		origins []string
		status  string // start of the answer
		next    after
	}{
		{"browser", handshakeReq("/ws"), false, nil, ok, keepOpen},
		{"query", handshakeReq("/ws?token=1"), false, nil, ok, keepOpen},
		{"escaped path", handshakeReq("/w%73"), false, nil, ok, keepOpen},
		{"bare LF", strings.ReplaceAll(handshakeReq("/ws"), "\r\n", "\n"), false, nil, ok, keepOpen},
		{"blank line first", "\r\n" + handshakeReq("/ws"), false, nil, ok, keepOpen},
		{"foreign origin", strings.Replace(handshakeReq("/ws"), "https://play.example:28080", "https://evil.example", 1), false, nil, "HTTP/1.1 403 ", closeAfter},
		{"allowed origin", strings.Replace(handshakeReq("/ws"), "https://play.example:28080", "https://a.game.example", 1), false, []string{"*.game.example"}, ok, keepOpen},
		{"no origin", strings.Replace(handshakeReq("/ws"), "Origin: https://play.example:28080\r\n", "", 1), false, nil, ok, keepOpen},
		{"plain GET", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", false, nil, "HTTP/1.1 426 ", closeAfter},
		{"POST", strings.Replace(handshakeReq("/ws"), "GET", "POST", 1), false, nil, "HTTP/1.1 405 ", closeAfter},
		{"version 8", strings.Replace(handshakeReq("/ws"), "Version: 13", "Version: 8", 1), false, nil, "HTTP/1.1 400 ", closeAfter},
		{"no key", strings.Replace(handshakeReq("/ws"), "Sec-WebSocket-Key", "X-Key", 1), false, nil, "HTTP/1.1 400 ", closeAfter},
		{"two keys", handshakeReq("/ws", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), false, nil, "HTTP/1.1 400 ", closeAfter},
		{"short key", strings.Replace(handshakeReq("/ws"), "dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1), false, nil, "HTTP/1.1 400 ", closeAfter},
		{"HTTP/1.0", strings.Replace(handshakeReq("/ws"), "HTTP/1.1", "HTTP/1.0", 1), false, nil, "HTTP/1.1 426 ", closeAfter},
		{"no host", strings.Replace(handshakeReq("/ws"), "Host: play.example:28080\r\n", "", 1), false, nil, "HTTP/1.1 400 ", closeAfter},
		{"bad header", handshakeReq("/ws", "Bad Header: x\r\n"), false, nil, "HTTP/1.1 400 ", closeAfter},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", false, nil, "HTTP/1.1 400 ", closeAfter},
		{"other path, no page", handshakeReq("/index.html"), false, nil, "HTTP/1.1 404 ", closeAfter},
		{"other path, a page", handshakeReq("/index.html"), true, nil, "", handOver},
		{"too large", "GET /ws HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", wsMaxRequest) + "\r\n\r\n", false, nil, "HTTP/1.1 431 ", closeAfter},
	}
	for _, tt := range tests {
		for _, step := range []int{len(tt.req), 1, 17} {
			t.Run(fmt.Sprintf("%s/%d", tt.name, step), func(t *testing.T) {
				ev := &recEvents{}
				w := newTestWS(ev, 1<<20)
				w.up.Store(false)
				w.cfg.origins = tt.origins
				if tt.web {
					w.cfg.web = &webServer{}
				}
				var out []byte
				next := keepOpen
				for rest := []byte(tt.req); len(rest) > 0 && next == keepOpen; {
					n := min(step, len(rest))
					var o []byte
					o, next, _ = w.read(append([]byte(nil), rest[:n]...))
					out = append(out, o...)
					rest = rest[n:]
				}
				if next != tt.next || !strings.HasPrefix(string(out), tt.status) || tt.status == ok && string(out) != ok {
					t.Fatalf("next %v, answer %q; want %v, %q", next, out, tt.next, tt.status)
				}
				if up := tt.status == ok; w.up.Load() != up || ev.opens != map[bool]int{true: 1}[up] {
					t.Fatalf("upgraded %v, opened %d times", w.up.Load(), ev.opens)
				}
				if tt.web && string(w.req) != tt.req[:len(w.req)] {
					t.Fatalf("handed over with %q", w.req)
				}
			})
		}
	}
}

// TestWSHandshakeThenFrames: frames sent right behind the request, in the
// same read, are read too.
func TestWSHandshakeThenFrames(t *testing.T) {
	m := box.Append(nil, 1, 0, 1, []byte("eager"))
	ev := &recEvents{}
	w := newTestWS(ev, 1<<20)
	w.up.Store(false)
	out, next, err := w.read(append([]byte(handshakeReq("/ws")), clientFrame(true, wsframe.OpBinary, m, 3)...))
	if next != keepOpen || err != nil || !strings.HasPrefix(string(out), "HTTP/1.1 101 ") || len(ev.msgs) != 1 || !bytes.Equal(ev.msgs[0], m) {
		t.Fatalf("next %v err %v answer %q, %d messages", next, err, out, len(ev.msgs))
	}
}

// FuzzWSHandshake: the request parser never panics, and a request gets
// the same answer however it is cut into reads.
func FuzzWSHandshake(f *testing.F) {
	f.Add([]byte(handshakeReq("/ws")), uint64(1))
	f.Add([]byte(strings.ReplaceAll(handshakeReq("/ws?x=%20"), "\r\n", "\n")), uint64(2))
	f.Add([]byte("GET http://h/ws HTTP/1.1\r\nHost: h\r\n\r\n"), uint64(3))
	f.Fuzz(func(t *testing.T, req []byte, seed uint64) {
		run := func(next func() int) ([]byte, after) {
			w := newTestWS(&recEvents{}, 1<<20)
			w.up.Store(false)
			var out []byte
			a := keepOpen
			for rest := req; len(rest) > 0 && a == keepOpen; {
				n := min(next(), len(rest))
				var o []byte
				o, a, _ = w.read(append([]byte(nil), rest[:n]...))
				out = append(out, o...)
				rest = rest[n:]
			}
			return out, a
		}
		wholeOut, whole := run(func() int { return len(req) })
		rng := rand.New(rand.NewPCG(seed, seed))
		out, a := run(func() int { return 1 + rng.IntN(50) })
		if a != whole || !bytes.Equal(out, wholeOut) {
			t.Fatalf("in pieces: %v %q; whole: %v %q", a, out, whole, wholeOut)
		}
	})
}
