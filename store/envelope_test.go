package store

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/maple-farm/maple/box"
)

var envelopeCases = []struct {
	name string
	env  Envelope
}{
	{"zero", Envelope{}},
	{"open", Envelope{Kind: KindOpen, Seq: 1, Gateway: "gw-1", Conn: "gw-1.42", Addr: "10.0.0.7:51234"}},
	{"close with uid", Envelope{Kind: KindClose, Seq: 99, Gateway: "g", Conn: "c", Addr: "[::1]:1", UID: "alice"}},
	{"frame", Envelope{Kind: KindFrame, Seq: 2, Gateway: "g", Conn: "c", UID: "u", Frame: box.Append(nil, 3, 0, 7, []byte("hello"))}},
	{"binary frame", Envelope{Kind: KindFrame, Seq: 300, Conn: "c", Frame: []byte{0, 0xff, 0, '\r', '\n', 0x80, 0x7f}}},
	{"system, empty strings", Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, nil)}},
	{"job", Envelope{Kind: KindJob, Frame: box.Append(nil, 0, 0, 0, []byte("daily"))}},
	{"max seq", Envelope{Kind: KindFrame, Seq: math.MaxUint64, Frame: []byte{1}}},
	{"long strings", Envelope{Kind: KindFrame, Seq: 1 << 20, Gateway: strings.Repeat("g", 200),
		Conn: strings.Repeat("c", 70000), Addr: "a", UID: strings.Repeat("\x00\xff", 100), Frame: bytes.Repeat([]byte{0xAB}, 1000)}},
	{"unknown kind", Envelope{Kind: 200, Seq: 5, UID: "ü"}},
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, tt := range envelopeCases {
		t.Run(tt.name, func(t *testing.T) {
			for _, prefix := range [][]byte{nil, []byte("keep")} {
				enc := AppendEnvelope(bytes.Clone(prefix), &tt.env)
				if !bytes.HasPrefix(enc, prefix) {
					t.Fatalf("AppendEnvelope lost dst %q", prefix)
				}
				body := enc[len(prefix):]
				if len(body) > EnvelopeSize(&tt.env) {
					t.Errorf("encoded %d bytes, EnvelopeSize says at most %d", len(body), EnvelopeSize(&tt.env))
				}
				got, err := DecodeEnvelope(body)
				if err != nil {
					t.Fatalf("DecodeEnvelope: %v", err)
				}
				if !envEqual(got, tt.env) {
					t.Errorf("DecodeEnvelope(AppendEnvelope(%+v)) = %+v", tt.env, got)
				}
				if len(tt.env.Frame) == 0 && got.Frame != nil {
					t.Errorf("empty frame decoded as %q, want nil", got.Frame)
				}
				if again := AppendEnvelope(nil, &got); !bytes.Equal(again, body) {
					t.Errorf("re-encoding differs:\n got %x\nwant %x", again, body)
				}
			}
		})
	}
}

// headerLen is the length of an encoded envelope or Out without its
// trailing frames.
func envHeaderLen(e Envelope) int {
	e.Frame = nil
	return len(AppendEnvelope(nil, &e))
}

func TestDecodeEnvelopeTruncated(t *testing.T) {
	for _, tt := range envelopeCases {
		t.Run(tt.name, func(t *testing.T) {
			enc := AppendEnvelope(nil, &tt.env)
			h := envHeaderLen(tt.env)
			for n := range len(enc) {
				got, err := DecodeEnvelope(enc[:n])
				if n < h {
					// Cut inside the fixed fields: always an error.
					if !errors.Is(err, ErrBadEnvelope) {
						t.Fatalf("DecodeEnvelope(first %d of %d bytes) = %+v, %v; want ErrBadEnvelope", n, len(enc), got, err)
					}
					continue
				}
				// Cut inside the frame: the frame is the rest, whatever
				// its length (a Box frame carries its own).
				if err != nil || !bytes.Equal(got.Frame, tt.env.Frame[:n-h]) {
					t.Fatalf("DecodeEnvelope(first %d of %d bytes) = frame %q, %v; want frame prefix", n, len(enc), got.Frame, err)
				}
			}
		})
	}
}

func TestDecodeEnvelopeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"version only", []byte{envelopeVersion}},
		{"bad version", []byte{2, byte(KindFrame), 0, 0, 0, 0, 0}},
		{"version zero", []byte{0, byte(KindFrame), 0, 0, 0, 0, 0}},
		{"seq overflows", append([]byte{envelopeVersion, 1}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"seq unterminated", []byte{envelopeVersion, 1, 0x80, 0x80}},
		{"string longer than input", []byte{envelopeVersion, 1, 0, 5, 'a', 'b'}},
		{"huge string length", append([]byte{envelopeVersion, 1, 0}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)},
		{"last string missing", []byte{envelopeVersion, 1, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		if got, err := DecodeEnvelope(tt.in); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("%s: DecodeEnvelope(%x) = %+v, %v; want ErrBadEnvelope", tt.name, tt.in, got, err)
		}
	}
}

var outCases = []struct {
	name string
	out  Out
}{
	{"zero", Out{}},
	{"write", Out{Kind: OutWrite, Conn: "gw.1", Frames: append(box.Append(nil, 1, 0, 1, []byte("a")), box.Append(nil, 2, -10000, 2, nil)...)}},
	{"close", Out{Kind: OutClose, Conn: "gw.1"}},
	{"bind", Out{Kind: OutBind, Conn: "c", UID: "alice"}},
	{"unbind", Out{Kind: OutUnbind, Conn: "c"}},
	{"broadcast binary", Out{Kind: OutBroadcast, Frames: []byte{0, 0xff, 0, 0x80}}},
	{"long", Out{Kind: OutWrite, Conn: strings.Repeat("c", 300), UID: strings.Repeat("u", 20000), Frames: bytes.Repeat([]byte{7}, 5000)}},
}

func outEqual(a, b Out) bool {
	return a.Kind == b.Kind && a.Conn == b.Conn && a.UID == b.UID && bytes.Equal(a.Frames, b.Frames)
}

func TestOutRoundTrip(t *testing.T) {
	for _, tt := range outCases {
		t.Run(tt.name, func(t *testing.T) {
			enc := AppendOut([]byte("x"), &tt.out)
			if enc[0] != 'x' {
				t.Fatalf("AppendOut lost dst")
			}
			got, err := DecodeOut(enc[1:])
			if err != nil {
				t.Fatalf("DecodeOut: %v", err)
			}
			if !outEqual(got, tt.out) {
				t.Errorf("DecodeOut(AppendOut(%+v)) = %+v", tt.out, got)
			}
			if len(tt.out.Frames) == 0 && got.Frames != nil {
				t.Errorf("no frames decoded as %q, want nil", got.Frames)
			}
		})
	}
}

func TestDecodeOutTruncated(t *testing.T) {
	for _, tt := range outCases {
		t.Run(tt.name, func(t *testing.T) {
			enc := AppendOut(nil, &tt.out)
			noFrames := tt.out
			noFrames.Frames = nil
			h := len(AppendOut(nil, &noFrames))
			for n := range len(enc) {
				got, err := DecodeOut(enc[:n])
				if n < h {
					if !errors.Is(err, ErrBadEnvelope) {
						t.Fatalf("DecodeOut(first %d of %d bytes) = %+v, %v; want ErrBadEnvelope", n, len(enc), got, err)
					}
					continue
				}
				if err != nil || !bytes.Equal(got.Frames, tt.out.Frames[:n-h]) {
					t.Fatalf("DecodeOut(first %d of %d bytes) = frames %q, %v; want prefix", n, len(enc), got.Frames, err)
				}
			}
		})
	}
	for _, in := range [][]byte{nil, {envelopeVersion}, {9, 1, 0, 0}, {envelopeVersion, 1, 3, 'a'}} {
		if got, err := DecodeOut(in); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("DecodeOut(%x) = %+v, %v; want ErrBadEnvelope", in, got, err)
		}
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		k    Kind
		want string
	}{
		{KindFrame, "frame"}, {KindOpen, "open"}, {KindClose, "close"},
		{KindSystem, "system"}, {KindJob, "job"}, {0, "kind(0)"}, {77, "kind(77)"},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q, want %q", byte(tt.k), got, tt.want)
		}
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, tt := range envelopeCases {
		if len(tt.env.Conn) < 1000 {
			f.Add(AppendEnvelope(nil, &tt.env))
		}
	}
	f.Add([]byte{})
	f.Add([]byte{envelopeVersion, 1, 0x80, 0x00, 0, 0, 0, 0}) // seq 0, not minimally encoded
	f.Add([]byte{envelopeVersion, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		e, err := DecodeEnvelope(b)
		if !bytes.Equal(in, b) {
			t.Fatalf("DecodeEnvelope modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrBadEnvelope) {
				t.Fatalf("DecodeEnvelope(%x) error %v is not ErrBadEnvelope", b, err)
			}
			return
		}
		// Whatever was accepted encodes to a form that decodes to the
		// same envelope, and is no longer than the input (the encoder's
		// varints are minimal).
		enc := AppendEnvelope(nil, &e)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding of %x is longer: %x", b, enc)
		}
		again, err := DecodeEnvelope(enc)
		if err != nil || !envEqual(again, e) {
			t.Fatalf("DecodeEnvelope(AppendEnvelope(%+v)) = %+v, %v", e, again, err)
		}
		if len(e.Frame) > 0 && &e.Frame[len(e.Frame)-1] != &b[len(b)-1] {
			t.Fatalf("Frame does not alias the input's tail")
		}
	})
}

func FuzzDecodeOut(f *testing.F) {
	for _, tt := range outCases {
		f.Add(AppendOut(nil, &tt.out))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeOut(b)
		if err != nil {
			return
		}
		again, err := DecodeOut(AppendOut(nil, &m))
		if err != nil || !outEqual(again, m) {
			t.Fatalf("DecodeOut(AppendOut(%+v)) = %+v, %v", m, again, err)
		}
	})
}
