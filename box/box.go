// Package box is the frame codec of the maple wire protocol: the 24-byte
// big-endian "Box" header followed by a body (docs/protocol.md section 1).
//
// It is the only place that knows the frame layout. Split cuts frames out of
// a byte stream without copying, so the gateway's event loop can parse
// partial and coalesced reads; Reader does the same over an io.Reader for
// clients; Append encodes.
package box

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
)

// Magic is the first field of every frame.
const Magic uint32 = 0x7978AECF // 2037952207

// HeaderLen is the size of the fixed header; packet_len is never below it.
const HeaderLen = 24

// DefaultMaxFrame is the default largest packet_len a gateway accepts (1 MiB).
const DefaultMaxFrame = 1 << 20

// Result codes carried in the ret field (docs/protocol.md section 2).
const (
	RetOK            int32 = 0
	RetNoRoute       int32 = -10000 // unknown cmd
	RetHandlerFailed int32 = -10001 // handler returned an error or panicked
	RetBusy          int32 = -10002 // frame not queued: queue full or Redis unreachable
	RetLoginRequired int32 = -10004 // the route needs a logged-in user
)

// Farm additions beyond the handed-over wire contract (docs/protocol.md
// does not list them; docs/operations.md, "What a client sees during a
// gateway roll", does). A gateway that is stopping sends each of its
// connections the move push, then stops taking work from them, answers
// what it took and closes them. The Go client (package client) and the
// JavaScript client (clients/js/maple.js) follow both.
const (
	// CmdMove is the cmd of the push (sn 0, empty body) that means "this
	// gateway is stopping: reconnect at a quiet moment". No game route
	// may use it, and workers must not push it.
	CmdMove int32 = -1
	// RetMoved answers a frame that a stopping gateway did not take: it
	// was not queued and never runs; reconnect and send it again.
	RetMoved int32 = -10003
)

// Errors returned for a stream that is not a valid frame sequence. They are
// final for the connection: after one of them the stream cannot be resynced.
var (
	ErrBadMagic = errors.New("box: bad magic")
	ErrShortLen = errors.New("box: packet_len under header size")
	ErrTooLarge = errors.New("box: packet_len over limit")
)

// Header is the fixed part of a frame.
type Header struct {
	Version uint16
	Flag    uint16
	Len     uint32 // packet_len: whole frame, header included
	Cmd     int32
	Ret     int32
	SN      uint32
}

// LogValue logs the header without the body.
func (h Header) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("cmd", int(h.Cmd)),
		slog.Uint64("sn", uint64(h.SN)),
		slog.Int("ret", int(h.Ret)),
		slog.Uint64("len", uint64(h.Len)),
	)
}

// Box is a decoded frame. Body aliases the bytes it was decoded from.
type Box struct {
	Header
	Body []byte
}

// ParseHeader reads a header from b, which must hold at least HeaderLen
// bytes. It checks the magic and the lower bound of packet_len; the upper
// bound is the caller's limit (see Split).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("box: header needs %d bytes, have %d", HeaderLen, len(b))
	}
	if m := binary.BigEndian.Uint32(b[0:4]); m != Magic {
		return Header{}, fmt.Errorf("%w: 0x%08X", ErrBadMagic, m)
	}
	h := Header{
		Version: binary.BigEndian.Uint16(b[4:6]),
		Flag:    binary.BigEndian.Uint16(b[6:8]),
		Len:     binary.BigEndian.Uint32(b[8:12]),
		Cmd:     int32(binary.BigEndian.Uint32(b[12:16])),
		Ret:     int32(binary.BigEndian.Uint32(b[16:20])),
		SN:      binary.BigEndian.Uint32(b[20:24]),
	}
	if h.Len < HeaderLen {
		return Header{}, fmt.Errorf("%w: %d", ErrShortLen, h.Len)
	}
	return h, nil
}

// Split returns the first complete frame at the start of buf, or nil when
// buf holds only part of one. The frame aliases buf. max is the largest
// packet_len accepted; 0 means DefaultMaxFrame. Errors are checked as soon
// as the bytes that show them have arrived, so a bad stream fails early.
func Split(buf []byte, max int) (frame []byte, err error) {
	frame, _, err = Cut(buf, max)
	return frame, err
}

// Cut is Split that also returns the frame's header, so that a frame's
// header is parsed once on its way through.
func Cut(buf []byte, max int) (frame []byte, h Header, err error) {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	if len(buf) >= 4 {
		if m := binary.BigEndian.Uint32(buf[0:4]); m != Magic {
			return nil, Header{}, fmt.Errorf("%w: 0x%08X", ErrBadMagic, m)
		}
	}
	if len(buf) < 12 {
		return nil, Header{}, nil
	}
	n := binary.BigEndian.Uint32(buf[8:12])
	if n < HeaderLen {
		return nil, Header{}, fmt.Errorf("%w: %d", ErrShortLen, n)
	}
	if uint64(n) > uint64(max) {
		return nil, Header{}, fmt.Errorf("%w: %d > %d", ErrTooLarge, n, max)
	}
	if len(buf) < int(n) {
		return nil, Header{}, nil
	}
	h = Header{
		Version: binary.BigEndian.Uint16(buf[4:6]),
		Flag:    binary.BigEndian.Uint16(buf[6:8]),
		Len:     n,
		Cmd:     int32(binary.BigEndian.Uint32(buf[12:16])),
		Ret:     int32(binary.BigEndian.Uint32(buf[16:20])),
		SN:      binary.BigEndian.Uint32(buf[20:24]),
	}
	return buf[:n:n], h, nil
}

// PacketLen returns the packet_len of the frame buf starts with, once its
// bytes have arrived (the first 12), unchecked: call it on what Split
// accepted as the start of a frame.
func PacketLen(buf []byte) (n int, ok bool) {
	if len(buf) < 12 {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(buf[8:12])), true
}

// Decode parses one whole frame; frame must be exactly packet_len bytes.
func Decode(frame []byte) (Box, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return Box{}, err
	}
	if int(h.Len) != len(frame) {
		return Box{}, fmt.Errorf("box: packet_len %d but frame has %d bytes", h.Len, len(frame))
	}
	return Box{Header: h, Body: frame[HeaderLen:]}, nil
}

// Append encodes a frame (version 0, flag 0) onto dst and returns the
// extended slice.
func Append(dst []byte, cmd, ret int32, sn uint32, body []byte) []byte {
	n := HeaderLen + len(body)
	var h [HeaderLen]byte
	binary.BigEndian.PutUint32(h[0:4], Magic)
	binary.BigEndian.PutUint32(h[8:12], uint32(n))
	binary.BigEndian.PutUint32(h[12:16], uint32(cmd))
	binary.BigEndian.PutUint32(h[16:20], uint32(ret))
	binary.BigEndian.PutUint32(h[20:24], sn)
	dst = append(dst, h[:]...)
	return append(dst, body...)
}

// Encode returns the frame for b, keeping its Version and Flag and
// recomputing Len from the body.
func (b Box) Encode() []byte {
	out := Append(make([]byte, 0, HeaderLen+len(b.Body)), b.Cmd, b.Ret, b.SN, b.Body)
	binary.BigEndian.PutUint16(out[4:6], b.Version)
	binary.BigEndian.PutUint16(out[6:8], b.Flag)
	return out
}

// SetRet rewrites the ret field of an encoded frame in place.
func SetRet(frame []byte, ret int32) {
	binary.BigEndian.PutUint32(frame[16:20], uint32(ret))
}
