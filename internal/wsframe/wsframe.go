// Package wsframe reads and writes WebSocket frames (RFC 6455 section 5)
// on byte slices, for code that cannot block on a reader: the gateway's
// event loop gets whatever bytes a read returned, parses as many frames
// as are whole and keeps the rest for the next read. It also holds the
// small pieces of the opening handshake both sides need (AcceptKey).
//
// The package knows the wire only: what a frame means (a message, a ping,
// a close) and which side must mask is for its callers, the gateway's
// server side (gateway/ws.go) and the load generator's client side
// (bench/ws.go).
package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Opcode is a frame's type.
type Opcode byte

// Opcodes of RFC 6455 section 5.2; the others are reserved.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// Control reports whether o is a control frame's opcode (close, ping,
// pong): at most MaxControl bytes of payload, never fragmented, and
// allowed between the fragments of a message.
func (o Opcode) Control() bool { return o&0x8 != 0 }

// MaxHeaderLen is the longest header: 2 bytes, 8 of extended length and
// 4 of mask key.
const MaxHeaderLen = 14

// MaxControl is the largest payload of a control frame.
const MaxControl = 125

// Close codes of RFC 6455 section 7.4.1 that the gateway sends.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseUnsupported   = 1003
	CloseNoStatus      = 1005 // never sent: "the close frame had no code"
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseTryAgainLater = 1013
)

// ErrProtocol is wrapped by every error of Parse: the bytes are not a
// frame any endpoint may send, whatever was negotiated.
var ErrProtocol = errors.New("websocket: protocol error")

// Header is the fixed part of a frame.
type Header struct {
	Fin    bool   // the last frame of its message
	Rsv    byte   // the three reserved bits (RSV1 is 4, RSV2 2, RSV3 1); 0 unless an extension says otherwise
	Op     Opcode // the frame's type
	Masked bool   // Mask is set: every frame from a client must be
	Mask   [4]byte
	Len    uint64 // payload bytes that follow the header
}

// Parse parses the header at the start of b. n is its length in bytes;
// n == 0 with a nil error means b holds only part of it. It refuses what no
// frame may be, as soon as the bytes that show it have arrived: a reserved
// opcode, a control frame that is fragmented or longer than MaxControl, a
// 64-bit length with its top bit set. Reserved bits, masking and lengths
// against a limit are the caller's to check.
func Parse(b []byte) (h Header, n int, err error) {
	if len(b) < 2 {
		return Header{}, 0, nil
	}
	b0, b1 := b[0], b[1]
	h.Fin = b0&0x80 != 0
	h.Rsv = (b0 >> 4) & 0x7
	h.Op = Opcode(b0 & 0xF)
	h.Masked = b1&0x80 != 0
	switch h.Op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return Header{}, 0, fmt.Errorf("%w: reserved opcode 0x%X", ErrProtocol, byte(h.Op))
	}
	n = 2
	switch l := b1 & 0x7F; l {
	case 126:
		n += 2
	case 127:
		n += 8
	default:
		h.Len = uint64(l)
	}
	if h.Op.Control() {
		if !h.Fin {
			return Header{}, 0, fmt.Errorf("%w: fragmented control frame", ErrProtocol)
		}
		if n > 2 {
			return Header{}, 0, fmt.Errorf("%w: control frame over %d bytes", ErrProtocol, MaxControl)
		}
	}
	if h.Masked {
		n += 4
	}
	if len(b) < n {
		return Header{}, 0, nil
	}
	switch n - 2 - maskLen(h.Masked) {
	case 2:
		h.Len = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 8:
		h.Len = binary.BigEndian.Uint64(b[2:10])
		if h.Len>>63 != 0 {
			return Header{}, 0, fmt.Errorf("%w: payload length with its top bit set", ErrProtocol)
		}
	}
	if h.Masked {
		copy(h.Mask[:], b[n-4:n])
	}
	return h, n, nil
}

func maskLen(masked bool) int {
	if masked {
		return 4
	}
	return 0
}

// HeaderLen is the length of the header of a frame with n bytes of payload.
func HeaderLen(n int, masked bool) int {
	l := 2 + maskLen(masked)
	switch {
	case n > 0xFFFF:
		l += 8
	case n > 125:
		l += 2
	}
	return l
}

// AppendHeader appends h, with the shortest length encoding, to dst.
func AppendHeader(dst []byte, h Header) []byte {
	b0 := byte(h.Op&0xF) | (h.Rsv&0x7)<<4
	if h.Fin {
		b0 |= 0x80
	}
	var b1 byte
	if h.Masked {
		b1 = 0x80
	}
	switch {
	case h.Len > 0xFFFF:
		dst = append(dst, b0, b1|127)
		dst = binary.BigEndian.AppendUint64(dst, h.Len)
	case h.Len > 125:
		dst = append(dst, b0, b1|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(h.Len))
	default:
		dst = append(dst, b0, b1|byte(h.Len))
	}
	if h.Masked {
		dst = append(dst, h.Mask[:]...)
	}
	return dst
}

// AppendFrame appends an unmasked frame (a server's) holding payload,
// complete and unfragmented, to dst.
func AppendFrame(dst []byte, op Opcode, payload []byte) []byte {
	dst = AppendHeader(dst, Header{Fin: true, Op: op, Len: uint64(len(payload))})
	return append(dst, payload...)
}

// AppendClose appends an unmasked close frame with code and reason
// (truncated to fit MaxControl) to dst; code 0 sends no code.
func AppendClose(dst []byte, code uint16, reason string) []byte {
	if code == 0 {
		return AppendHeader(dst, Header{Fin: true, Op: OpClose})
	}
	reason = reason[:min(len(reason), MaxControl-2)]
	dst = AppendHeader(dst, Header{Fin: true, Op: OpClose, Len: uint64(2 + len(reason))})
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// CloseCode returns the code of a close frame's (unmasked) payload:
// CloseNoStatus if it has none; ok is false for a payload that no
// endpoint may send (one byte, or a code that is reserved or unassigned).
func CloseCode(payload []byte) (code uint16, ok bool) {
	switch len(payload) {
	case 0:
		return CloseNoStatus, true
	case 1:
		return 0, false
	}
	code = binary.BigEndian.Uint16(payload)
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return code, true
	}
	return code, false
}

// Mask XORs b with key, as both masking and unmasking do (RFC 6455
// section 5.3); pos is the offset of b[0] in the frame's payload, so a
// payload can be masked in pieces. It returns the offset after b.
func Mask(b []byte, key [4]byte, pos int) int {
	var k [8]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	k64 := binary.LittleEndian.Uint64(k[:])
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k64)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&7]
	}
	return pos + len(b)
}

// acceptGUID is appended to a client's key (RFC 6455 section 1.3).
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey returns the Sec-WebSocket-Accept value that answers a
// client's Sec-WebSocket-Key.
func AcceptKey(key string) string {
	return string(AppendAccept(nil, []byte(key)))
}

// AppendAccept appends AcceptKey(key) to dst, allocating nothing more
// for a key of the usual 24 bytes.
func AppendAccept(dst, key []byte) []byte {
	var buf [64]byte
	sum := sha1.Sum(append(append(buf[:0], key...), acceptGUID...))
	var enc [28]byte
	base64.StdEncoding.Encode(enc[:], sum[:])
	return append(dst, enc[:]...)
}
