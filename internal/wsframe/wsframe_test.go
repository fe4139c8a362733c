package wsframe

import (
	"bytes"
	"errors"
	"testing"
)

// TestAcceptKey: the example of RFC 6455 section 1.3.
func TestAcceptKey(t *testing.T) {
	if got, want := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Errorf("AcceptKey = %q, want %q", got, want)
	}
}

// TestParse: the examples of RFC 6455 section 5.7, and the refusals.
func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want Header
		n    int
		err  bool
	}{
		{"unmasked Hello", []byte{0x81, 0x05, 'H', 'e', 'l', 'l', 'o'}, Header{Fin: true, Op: OpText, Len: 5}, 2, false},
		{"masked Hello", []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			Header{Fin: true, Op: OpText, Masked: true, Mask: [4]byte{0x37, 0xfa, 0x21, 0x3d}, Len: 5}, 6, false},
		{"first fragment", []byte{0x01, 0x03, 'H', 'e', 'l'}, Header{Op: OpText, Len: 3}, 2, false},
		{"continuation", []byte{0x80, 0x02, 'l', 'o'}, Header{Fin: true, Op: OpContinuation, Len: 2}, 2, false},
		{"ping", []byte{0x89, 0x05, 'H', 'e', 'l', 'l', 'o'}, Header{Fin: true, Op: OpPing, Len: 5}, 2, false},
		{"256 bytes binary", []byte{0x82, 0x7E, 0x01, 0x00}, Header{Fin: true, Op: OpBinary, Len: 256}, 4, false},
		{"64 KiB binary", []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}, Header{Fin: true, Op: OpBinary, Len: 65536}, 10, false},
		{"rsv bits kept", []byte{0xC2, 0x00}, Header{Fin: true, Rsv: 4, Op: OpBinary}, 2, false},
		{"one byte", []byte{0x82}, Header{}, 0, false},
		{"extended length not yet here", []byte{0x82, 0x7E, 0x01}, Header{}, 0, false},
		{"mask not yet here", []byte{0x82, 0x85, 1, 2, 3}, Header{}, 0, false},
		{"reserved opcode", []byte{0x83, 0x00}, Header{}, 0, true},
		{"reserved control opcode", []byte{0x8B, 0x00}, Header{}, 0, true},
		{"fragmented ping", []byte{0x09, 0x00}, Header{}, 0, true},
		{"long close", []byte{0x88, 0x7E}, Header{}, 0, true},
		{"top length bit", []byte{0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0}, Header{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := Parse(tt.in)
			if tt.err {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("Parse(% x) err = %v, want ErrProtocol", tt.in, err)
				}
				return
			}
			if err != nil || n != tt.n || h != tt.want {
				t.Fatalf("Parse(% x) = %+v, %d, %v; want %+v, %d", tt.in, h, n, err, tt.want, tt.n)
			}
		})
	}
}

// TestMask: masking in pieces at any offset is masking at once, and
// masking twice gives the payload back.
func TestMask(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	masked := []byte{0x7f, 0x9f, 0x4d, 0x51, 0x58}
	b := append([]byte(nil), masked...)
	Mask(b, key, 0)
	if string(b) != "Hello" {
		t.Fatalf("unmasked %q", b)
	}
	long := bytes.Repeat([]byte("0123456789abcdef"), 9)
	for split := range len(long) {
		a := append([]byte(nil), long...)
		Mask(a, key, 0)
		c := append([]byte(nil), long...)
		pos := Mask(c[:split], key, 0)
		Mask(c[split:], key, pos)
		if !bytes.Equal(a, c) {
			t.Fatalf("split at %d: masking in two pieces differs", split)
		}
		if Mask(a, key, 0); !bytes.Equal(a, long) {
			t.Fatal("masking twice does not give the payload back")
		}
	}
}

func TestCloseFrame(t *testing.T) {
	f := AppendClose(nil, CloseTooBig, "message too big")
	h, n, err := Parse(f)
	if err != nil || h.Op != OpClose || int(h.Len) != len(f)-n {
		t.Fatalf("Parse(close) = %+v %d %v", h, n, err)
	}
	if code, ok := CloseCode(f[n:]); code != CloseTooBig || !ok {
		t.Errorf("CloseCode = %d %v", code, ok)
	}
	long := AppendClose(nil, CloseNormal, string(bytes.Repeat([]byte("x"), 200)))
	if len(long) != 2+MaxControl {
		t.Errorf("close frame of %d bytes, want the reason cut to fit", len(long))
	}
	for _, tt := range []struct {
		p    []byte
		code uint16
		ok   bool
	}{
		{nil, CloseNoStatus, true}, {[]byte{3}, 0, false}, {[]byte{0x03, 0xE8}, 1000, true},
		{[]byte{0x03, 0xED}, 1005, false}, {[]byte{0x03, 0xEE}, 1006, false}, {[]byte{0x0B, 0xB8}, 3000, true}, {[]byte{0, 5}, 5, false},
	} {
		if code, ok := CloseCode(tt.p); code != tt.code || ok != tt.ok {
			t.Errorf("CloseCode(% x) = %d %v, want %d %v", tt.p, code, ok, tt.code, tt.ok)
		}
	}
}

// FuzzParse: Parse never panics, reports a length within bounds, never
// accepts a prefix of a header as a whole one, and what it accepts
// encodes back (in the shortest form) to a header it parses the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58})
	f.Add([]byte{0x82, 0x7E, 0x01, 0x00})
	f.Add([]byte{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4})
	f.Add([]byte{0x88, 0x82, 1, 2, 3, 4, 0x03, 0xE8})
	f.Add([]byte{0x09, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) || n != 0 {
				t.Fatalf("Parse error %v with n %d", err, n)
			}
			return
		}
		if n == 0 {
			return
		}
		if n < 2 || n > MaxHeaderLen || n > len(b) {
			t.Fatalf("header length %d of %d bytes", n, len(b))
		}
		for i := range n {
			if _, m, err := Parse(b[:i]); m != 0 || err != nil {
				t.Fatalf("prefix of %d bytes: n %d err %v", i, m, err)
			}
		}
		if h.Op.Control() && (h.Len > MaxControl || !h.Fin) {
			t.Fatalf("control frame accepted: %+v", h)
		}
		enc := AppendHeader(nil, h)
		if len(enc) != HeaderLen(int(min(h.Len, 1<<40)), h.Masked) && h.Len < 1<<40 {
			t.Fatalf("HeaderLen(%d) = %d, encoded %d", h.Len, HeaderLen(int(h.Len), h.Masked), len(enc))
		}
		h2, n2, err := Parse(enc)
		if err != nil || n2 != len(enc) || h2 != h {
			t.Fatalf("re-encoded %+v as % x: parsed %+v %d %v", h, enc, h2, n2, err)
		}
	})
}

// FuzzMask: masking from any offset matches the byte-at-a-time definition.
func FuzzMask(f *testing.F) {
	f.Add([]byte("Hello, world: the payload of a frame"), uint32(0x37fa213d), 3)
	f.Fuzz(func(t *testing.T, b []byte, k uint32, pos int) {
		pos &= 0xFFFF
		key := [4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
		want := make([]byte, len(b))
		for i := range b {
			want[i] = b[i] ^ key[(pos+i)&3]
		}
		got := append([]byte(nil), b...)
		if end := Mask(got, key, pos); end != pos+len(b) || !bytes.Equal(got, want) {
			t.Fatalf("Mask(% x, % x, %d) = % x, %d; want % x", b, key, pos, got, end, want)
		}
	})
}
