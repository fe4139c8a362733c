package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/wsframe"
)

// This file is the WebSocket protocol (Options.WSListen): players in
// browsers and mini-programs, who cannot open raw TCP sockets, join the
// same farm through it. Its connections live on the same event loop as
// TCP players (evio.go) and share everything but the bytes on the wire
// (transport.go): a WebSocket player costs what a TCP player does, with
// no goroutine or buffer of its own while it is idle.
//
// A connection on the WebSocket listener starts with an HTTP request. A
// request for WSPath must be a WebSocket handshake (RFC 6455 section 4):
// it is checked and answered here, on the loop, and the connection is a
// player from then on. Any other request goes to Options.Web, a game's
// page: the loop hands the connection over to a net/http server
// (wsweb.go), which answers that one request and closes it.
//
// The wire: each binary message carries exactly one Box frame, both ways.
// A text message, a message holding part of a frame or several frames, or
// a bad frame closes that connection with a close code, and counts as a
// bad frame. Messages are capped at MaxFrame bytes (close code 1009 past
// it). The gateway pings a client from which nothing came for WSPing and
// closes one from which nothing, not even a pong, came for WSIdleTimeout.

// Defaults of the WebSocket options.
const (
	DefaultWSPath        = "/ws"
	DefaultWSPing        = 20 * time.Second
	DefaultWSIdleTimeout = 60 * time.Second
)

// Close codes a WebSocket client sees (RFC 6455 section 7.4.1).
const (
	WSCloseNormal    = wsframe.CloseNormal        // 1000: closed by the farm (kick, close_users, drain)
	WSCloseGoingAway = wsframe.CloseGoingAway     // 1001: the gateway stops
	WSCloseProtocol  = wsframe.CloseProtocolError // 1002: not a valid WebSocket frame (unmasked, reserved bits...)
	WSCloseText      = wsframe.CloseUnsupported   // 1003: a text message
	WSCloseBadFrame  = wsframe.ClosePolicy        // 1008: not exactly one valid Box frame
	WSCloseTooBig    = wsframe.CloseTooBig        // 1009: a message over MaxFrame
	WSCloseFull      = wsframe.CloseTryAgainLater // 1013: at MaxConns
)

// Limits of the opening handshake.
const (
	// wsHandshakeTimeout bounds the wait for a whole request.
	wsHandshakeTimeout = 10 * time.Second
	// wsMaxRequest bounds a handshake request's size.
	wsMaxRequest = 16 << 10
)

// Why a WebSocket connection was refused or closed.
var (
	errWSText             = errors.New("gateway: websocket text message (binary Box frames only)")
	errWSPartial          = errors.New("gateway: websocket message holds part of a frame")
	errWSSeveral          = errors.New("gateway: websocket message holds more than one frame")
	errWSHandshakeTimeout = errors.New("gateway: websocket handshake not complete within its timeout")
)

// wsConfig is what the WebSocket connections of a listener share.
type wsConfig struct {
	path     string
	origins  []string
	maxFrame int
	ping     time.Duration // 0: no pings
	idle     time.Duration // 0: never idle
	ev       events
	log      *slog.Logger
	web      *webServer // nil: no page (Options.Web)
	pingMsg  []byte
}

func newWSConfig(o Options, ev events, log *slog.Logger) *wsConfig {
	w := &wsConfig{
		path: o.WSPath, origins: o.WSOrigins, maxFrame: o.MaxFrame,
		ping: o.WSPing, idle: o.WSIdleTimeout, ev: ev, log: log,
		pingMsg: wsframe.AppendFrame(nil, wsframe.OpPing, nil),
	}
	if w.path == "" {
		w.path = DefaultWSPath
	}
	switch {
	case w.ping == 0:
		w.ping = DefaultWSPing
	case w.ping < 0:
		w.ping = 0
	}
	switch {
	case w.idle == 0:
		w.idle = DefaultWSIdleTimeout
	case w.idle < 0:
		w.idle = 0
	}
	if o.Web != nil {
		w.web = newWebServer(o.Web, log)
	}
	return w
}

// sweepEvery is how often the connections need looking at: to ping them,
// and to find the idle ones in time.
func (w *wsConfig) sweepEvery() time.Duration {
	every := wsHandshakeTimeout / 4
	if w.ping > 0 {
		every = min(every, w.ping)
	}
	if w.idle > 0 {
		every = min(every, w.idle/4)
	}
	return every
}

// open returns the protocol of a connection just accepted.
func (w *wsConfig) open(p peer) protocol {
	return &wsConn{cfg: w, p: p, since: time.Now()}
}

// stop ends the page server once the event loop has stopped.
func (w *wsConfig) stop() {
	if w.web != nil {
		w.web.close()
	}
}

// wsConn is the WebSocket protocol of one connection (server side): the
// handshake, then frames. Its fields are its event goroutine's, except
// where said.
type wsConn struct {
	cfg   *wsConfig
	p     peer
	c     *conn       // the core's, once upgraded
	up    atomic.Bool // upgraded: the sweep reads it
	bye   atomic.Bool // our close frame is sent: waiting for the client's
	since time.Time   // accepted; read by the sweep
	// lastPing is the sweep's.
	lastPing time.Time

	req    []byte // the handshake request so far; nil once upgraded
	lineOK bool   // its request line was for the WebSocket path
	in     inBuf  // a frame not whole yet, as received (masked)
	msg    []byte // a fragmented message so far, unmasked
	msgOn  bool   // a fragmented message is under way
	held   bool   // bytes of a message are counted in the core's partial frames
	skip   uint64 // after bye: payload bytes of a frame still to drop
}

// start waits for the handshake: the core opens the connection once it is
// upgraded.
func (w *wsConn) start() error { return nil }

func (w *wsConn) read(in []byte) ([]byte, after, error) {
	switch {
	case !w.up.Load():
		return w.handshake(in)
	case w.bye.Load():
		return w.discard(in)
	}
	return w.frames(nil, in)
}

// appendFrames wraps each frame in a binary message. The core checked the
// frames: their packet_len only says where each ends.
func (w *wsConn) appendFrames(dst, frames []byte) []byte {
	for len(frames) > 0 {
		n, ok := box.PacketLen(frames)
		if !ok || n < box.HeaderLen || n > len(frames) {
			n = len(frames) // not whole frames: the core never sends them
		}
		dst = wsframe.AppendFrame(dst, wsframe.OpBinary, frames[:n])
		frames = frames[n:]
	}
	return dst
}

// goodbye is a close frame: 1000 when the farm closes the connection, 1001
// when the gateway stops. A client that does not read or answer (slow,
// idle) is cut off without one, as is one still in its handshake.
func (w *wsConn) goodbye(reason error) []byte {
	if !w.up.Load() {
		return nil
	}
	var code uint16
	switch {
	case reason == nil:
		code = WSCloseNormal
	case errors.Is(reason, errShutdown):
		code = WSCloseGoingAway
	default:
		return nil
	}
	w.bye.Store(true)
	return wsframe.AppendClose(nil, code, "")
}

func (w *wsConn) due(now, lastIn time.Time) ([]byte, error) {
	if !w.up.Load() {
		if now.Sub(w.since) > wsHandshakeTimeout {
			return nil, errWSHandshakeTimeout
		}
		return nil, nil
	}
	if w.cfg.idle > 0 && now.Sub(lastIn) > w.cfg.idle {
		return nil, errIdle
	}
	if w.cfg.ping > 0 && now.Sub(lastIn) >= w.cfg.ping && now.Sub(w.lastPing) >= w.cfg.ping {
		w.lastPing = now
		return w.cfg.pingMsg, nil
	}
	return nil, nil
}

// handOver gives a page request's connection to the page server.
func (w *wsConn) handOver(nc net.Conn) {
	req := w.req
	w.req = nil
	w.cfg.web.serve(nc, req)
}

func (w *wsConn) closed(reason error) {
	w.in.release()
	w.msg, w.req = nil, nil
	if w.c != nil {
		w.cfg.ev.closed(w.c, reason)
	}
}

// handshake gathers the HTTP request and answers it: a page request is
// handed over, a WebSocket handshake upgrades the connection, anything
// else gets an HTTP error. A request that comes in one read, as they
// usually do, is parsed where it lies.
func (w *wsConn) handshake(in []byte) ([]byte, after, error) {
	head := in
	if len(w.req) > 0 {
		w.req = append(w.req, in...)
		head = w.req
	}
	if !w.lineOK {
		eol := bytes.IndexByte(bytes.TrimLeft(head, "\r\n"), '\n')
		if eol < 0 {
			return w.await(head, "request line too long")
		}
		if _, target, _, ok := requestLine(bytes.TrimLeft(head, "\r\n")); w.cfg.web != nil && (!ok || !isPath(target, w.cfg.path)) {
			w.req = append(w.req[:0:0], head...) // the page server reads it again
			return nil, handOver, nil
		}
		w.lineOK = true
	}
	end := headEnd(head)
	if end == 0 || end > wsMaxRequest {
		return w.await(head, "request headers too large")
	}
	rest := head[end:]
	r, err := parseRequest(head[:end])
	if err == nil && !isPath(r.target, w.cfg.path) {
		err = httpError(http.StatusNotFound, "", "404 page not found")
	}
	if err == nil {
		if err = checkUpgrade(&r); err == nil {
			err = checkOrigin(&r, w.cfg.origins)
		}
		if err != nil {
			w.cfg.log.Info("websocket handshake refused", "addr", w.p.remoteAddr(), "origin", string(r.origin), "err", err)
		}
	}
	if err != nil {
		w.req = nil
		return appendHTTPError(nil, err), closeAfter, nil
	}
	out := appendSwitching(make([]byte, 0, 160), r.key)
	w.req, w.lineOK = nil, false
	c, err := w.cfg.ev.opened(w.p)
	if err != nil {
		// Refused (MaxConns): the core never had it, so nothing to report.
		return wsframe.AppendClose(out, WSCloseFull, "too many connections"), closeAfter, nil
	}
	w.c = c
	w.up.Store(true)
	if len(rest) == 0 {
		return out, keepOpen, nil
	}
	return w.frames(out, rest)
}

// await keeps the part of a request read so far, up to wsMaxRequest.
func (w *wsConn) await(head []byte, tooLarge string) ([]byte, after, error) {
	if len(head) > wsMaxRequest {
		w.req = nil
		return appendHTTPError(nil, httpError(http.StatusRequestHeaderFieldsTooLarge, "", "%s", tooLarge)), closeAfter, nil
	}
	if len(w.req) == 0 {
		w.req = append(make([]byte, 0, max(len(head), 512)), head...) // the loop reuses its input buffer
	}
	return nil, keepOpen, nil
}

// frames parses the frames in what was read, after what is held. Whole
// messages go to the core; a ping is answered (in out); a close is
// answered and ends the connection; what is not whole yet is kept, and
// counted in the core's partial frames.
func (w *wsConn) frames(out, in []byte) ([]byte, after, error) {
	buf := in
	if len(w.in.b) > 0 {
		w.in.add(in)
		buf = w.in.b
	}
	done := false // a message ended in this read
	want := 0     // bytes of the frame not whole yet, if known
	for len(buf) > 0 {
		h, n, err := wsframe.Parse(buf)
		if err != nil {
			return w.refuse(out, WSCloseProtocol, "protocol error", err)
		}
		if n == 0 {
			break
		}
		switch {
		case !h.Masked:
			return w.refuse(out, WSCloseProtocol, "protocol error", fmt.Errorf("%w: unmasked frame from a client", wsframe.ErrProtocol))
		case h.Rsv != 0:
			return w.refuse(out, WSCloseProtocol, "protocol error", fmt.Errorf("%w: reserved bits with no extension", wsframe.ErrProtocol))
		case h.Op == wsframe.OpText:
			return w.refuse(out, WSCloseText, "binary Box frames only", errWSText)
		case h.Op == wsframe.OpBinary && w.msgOn:
			return w.refuse(out, WSCloseProtocol, "protocol error", fmt.Errorf("%w: a message inside a fragmented one", wsframe.ErrProtocol))
		case h.Op == wsframe.OpContinuation && !w.msgOn:
			return w.refuse(out, WSCloseProtocol, "protocol error", fmt.Errorf("%w: continuation of no message", wsframe.ErrProtocol))
		case !h.Op.Control() && h.Len > uint64(w.cfg.maxFrame-len(w.msg)):
			return w.refuse(out, WSCloseTooBig, "message too big", fmt.Errorf("%w: websocket message over %d bytes", box.ErrTooLarge, w.cfg.maxFrame))
		}
		size := n + int(h.Len)
		if len(buf) < size {
			want = size
			break
		}
		payload := buf[n:size]
		wsframe.Mask(payload, h.Mask, 0)
		buf = buf[size:]
		switch h.Op {
		case wsframe.OpPing:
			out = wsframe.AppendFrame(out, wsframe.OpPong, payload)
		case wsframe.OpPong:
		case wsframe.OpClose:
			// Answered with the client's code; the connection ends once
			// the answer is written.
			code, ok := wsframe.CloseCode(payload)
			switch {
			case !ok:
				code = WSCloseProtocol
			case code == wsframe.CloseNoStatus:
				code = 0
			}
			return wsframe.AppendClose(out, code, ""), closeAfter, nil
		default:
			msg := payload
			if !h.Fin || w.msgOn {
				w.msg = append(w.msg, payload...)
				w.msgOn = true
				if !h.Fin {
					continue
				}
				msg = w.msg
			}
			err := w.cfg.ev.message(w.c, msg)
			w.msgOn = false
			if w.msg = w.msg[:0]; cap(w.msg) > 4<<10 {
				w.msg = nil
			}
			done = true
			if err != nil {
				return w.refuse(out, WSCloseBadFrame, "one whole Box frame per message", err)
			}
		}
	}
	// Keep the unparsed tail; the loop reuses its input buffer, so copy it.
	switch {
	case len(buf) == 0:
		w.in.reset()
	case len(w.in.b) == 0 || &buf[0] != &w.in.b[0]:
		w.in.keepSized(buf, want)
	}
	w.countPartial(done)
	return out, keepOpen, nil
}

// countPartial tells the core how much of a message is held; done: a
// message ended in this read, so what is held now started in it.
func (w *wsConn) countPartial(done bool) {
	if len(w.in.b) == 0 && !w.msgOn {
		if w.held {
			w.held = false
			w.cfg.ev.partial(w.c, 0)
		}
		return
	}
	if done && w.held {
		w.cfg.ev.partial(w.c, 0) // a new message: its frame timeout starts now
	}
	w.held = true
	w.cfg.ev.partial(w.c, w.in.held()+cap(w.msg))
}

// refuse closes the connection with a close code for what the client sent.
func (w *wsConn) refuse(out []byte, code uint16, reason string, err error) ([]byte, after, error) {
	if !errors.Is(err, errBadFrame) {
		err = fmt.Errorf("%w: %w", errBadFrame, err)
	}
	w.bye.Store(true)
	w.forget()
	return wsframe.AppendClose(out, code, reason), lingerAfter, err
}

// forget drops a message under way: the connection is closing.
func (w *wsConn) forget() {
	w.msg, w.msgOn = nil, false
	if w.held {
		w.held = false
		w.cfg.ev.partial(w.c, 0)
	}
}

// discard reads what a client sends after our close frame, until its own
// close frame: data is dropped, nothing is answered.
func (w *wsConn) discard(in []byte) ([]byte, after, error) {
	if w.msgOn || w.held {
		w.forget()
	}
	buf := in
	if len(w.in.b) > 0 {
		w.in.add(in)
		buf = w.in.b
	}
	for len(buf) > 0 {
		if w.skip > 0 {
			n := int(min(w.skip, uint64(len(buf))))
			w.skip -= uint64(n)
			buf = buf[n:]
			continue
		}
		h, n, err := wsframe.Parse(buf)
		if err != nil {
			return nil, closeNow, nil
		}
		if n == 0 {
			break
		}
		if h.Op == wsframe.OpClose {
			if uint64(len(buf)-n) < h.Len {
				break // its payload, so that nothing is left unread
			}
			return nil, closeAfter, nil
		}
		buf, w.skip = buf[n:], h.Len
	}
	if len(buf) == 0 {
		w.in.release()
	} else {
		w.in.keepSized(buf, 0) // part of a header
	}
	return nil, keepOpen, nil
}
