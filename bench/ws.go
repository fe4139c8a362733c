package bench

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/wsframe"
)

// The WebSocket side of the bench (Options.WS): the gateway's WebSocket
// players carry one Box frame per binary message, both ways
// (docs/tictactoe.md). A connection opens with the HTTP handshake, then its
// writer masks each request into its own message, several messages per
// write as for TCP, and its reader checks that every message the gateway
// sends is exactly one frame before the usual checks of the reply. Pings
// are answered, so connections may stay idle as long as they like.

// DefaultWSPath is the gateway's WebSocket endpoint unless told.
const DefaultWSPath = "/ws"

// errNotOneFrame is a message from the server that is not exactly one
// Box frame: a broken connection for the bench.
var errNotOneFrame = errors.New("bench: websocket message is not exactly one frame")

// dialWS opens a WebSocket on nc: it sends the handshake for path and
// reads the answer. It returns the reader to go on with (it may hold the
// first frames already).
func dialWS(nc net.Conn, host, path string, timeout time.Duration) (*bufio.Reader, error) {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	nc.SetDeadline(time.Now().Add(timeout))
	defer nc.SetDeadline(time.Time{})
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: websocket handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("bench: websocket handshake: %s", resp.Status)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsframe.AcceptKey(key) {
		return nil, fmt.Errorf("bench: websocket handshake: Sec-WebSocket-Accept %q, want %q", got, wsframe.AcceptKey(key))
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		return nil, fmt.Errorf("bench: websocket handshake: Upgrade %q", resp.Header.Get("Upgrade"))
	}
	return br, nil
}

// appendMasked appends frame to dst as one masked binary message, as a
// client must send it.
func appendMasked(dst, frame []byte) []byte {
	h := wsframe.Header{Fin: true, Op: wsframe.OpBinary, Masked: true, Len: uint64(len(frame))}
	k := mrand.Uint32()
	h.Mask = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
	dst = wsframe.AppendHeader(dst, h)
	start := len(dst)
	dst = append(dst, frame...)
	wsframe.Mask(dst[start:], h.Mask, 0)
	return dst
}

// wsReader reads the server's messages, answering pings, and returns the
// frame each holds.
type wsReader struct {
	br   *bufio.Reader
	msg  []byte
	max  int
	pong func(payload []byte) error // writes a pong
}

func newWSReader(br *bufio.Reader, pong func([]byte) error) *wsReader {
	return &wsReader{br: br, max: 64 << 20, pong: pong}
}

// Next returns the next message's frame; io.EOF after the server's close.
func (r *wsReader) Next() (box.Box, error) {
	r.msg = r.msg[:0]
	var msgOp wsframe.Opcode
	for {
		hb, err := r.br.Peek(2)
		if err != nil {
			return box.Box{}, err
		}
		need := 2
		switch hb[1] & 0x7F {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if hb[1]&0x80 != 0 {
			need += 4
		}
		if hb, err = r.br.Peek(need); err != nil {
			return box.Box{}, err
		}
		h, n, err := wsframe.Parse(hb)
		if err != nil {
			return box.Box{}, err
		}
		r.br.Discard(n)
		if h.Masked || h.Rsv != 0 {
			return box.Box{}, fmt.Errorf("bench: websocket frame from the server masked or with reserved bits: %+v", h)
		}
		if h.Len > uint64(r.max-len(r.msg)) {
			return box.Box{}, fmt.Errorf("bench: websocket message over %d bytes", r.max)
		}
		start := len(r.msg)
		r.msg = append(r.msg, make([]byte, h.Len)...)
		if _, err := io.ReadFull(r.br, r.msg[start:]); err != nil {
			return box.Box{}, err
		}
		switch h.Op {
		case wsframe.OpPing:
			p := append([]byte(nil), r.msg[start:]...)
			r.msg = r.msg[:start]
			if err := r.pong(p); err != nil {
				return box.Box{}, err
			}
			continue
		case wsframe.OpPong:
			r.msg = r.msg[:start]
			continue
		case wsframe.OpClose:
			code, _ := wsframe.CloseCode(r.msg[start:])
			return box.Box{}, fmt.Errorf("bench: websocket closed by the server with code %d: %w", code, io.EOF)
		case wsframe.OpText:
			return box.Box{}, errors.New("bench: websocket text message from the server")
		case wsframe.OpBinary:
			if msgOp != 0 {
				return box.Box{}, errors.New("bench: websocket message inside a fragmented one")
			}
			msgOp = h.Op
		case wsframe.OpContinuation:
			if msgOp == 0 {
				return box.Box{}, errors.New("bench: websocket continuation without a message")
			}
		}
		if !h.Fin {
			continue
		}
		b, err := box.Decode(r.msg)
		if err != nil {
			return box.Box{}, fmt.Errorf("%w: %w", errNotOneFrame, err)
		}
		return b, nil
	}
}

// wsWriter writes to a WebSocket connection: the bench's writer and the
// reader's pongs share it.
type wsWriter struct {
	mu sync.Mutex
	nc net.Conn
}

func (w *wsWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nc.Write(b)
}

func (w *wsWriter) pong(payload []byte) error {
	h := wsframe.Header{Fin: true, Op: wsframe.OpPong, Masked: true, Len: uint64(len(payload))}
	k := mrand.Uint32()
	h.Mask = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
	f := wsframe.AppendHeader(nil, h)
	start := len(f)
	f = append(f, payload...)
	wsframe.Mask(f[start:], h.Mask, 0)
	_, err := w.Write(f)
	return err
}
