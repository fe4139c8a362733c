package queue

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/redis/go-redis/v9"

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
		// Decoding after another envelope (as in a bundle) is the same.
		for _, prev := range []*Envelope{&envelopeCases[2].env, &envelopeCases[3].env} {
			after, errAfter := decodeEnvelopeAfter(b, prev)
			if (errAfter == nil) != (err == nil) || (err == nil && !envEqual(after, e)) {
				t.Fatalf("decodeEnvelopeAfter(%x, %+v) = %+v, %v; DecodeEnvelope gives %+v, %v", b, prev, after, errAfter, e, err)
			}
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

// encodedCases returns the encodings of envelopeCases.
func encodedCases() [][]byte {
	out := make([][]byte, len(envelopeCases))
	for i, tt := range envelopeCases {
		out[i] = AppendEnvelope(nil, &tt.env)
	}
	return out
}

func TestBundleRoundTrip(t *testing.T) {
	all := encodedCases()
	tests := []struct {
		name string
		envs [][]byte
	}{
		{"one", all[3:4]},
		{"every case", all},
		{"same envelope twice", [][]byte{all[1], all[1]}},
		// Length prefixes of one, two and three bytes.
		{"127 and 128 bytes", [][]byte{bytes.Repeat([]byte{1}, 127), bytes.Repeat([]byte{2}, 128)}},
		{"16383 and 16384 bytes", [][]byte{bytes.Repeat([]byte{3}, 16383), bytes.Repeat([]byte{4}, 16384), {5}}},
		{"one-byte envelopes", [][]byte{{1}, {2}, {3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, prefix := range [][]byte{nil, []byte("keep")} {
				enc := AppendBundle(bytes.Clone(prefix), tt.envs)
				if !bytes.HasPrefix(enc, prefix) {
					t.Fatalf("AppendBundle lost dst %q", prefix)
				}
				body := enc[len(prefix):]
				if n := BundleSize(tt.envs); n != len(body) {
					t.Errorf("BundleSize = %d, AppendBundle wrote %d bytes", n, len(body))
				}
				got, err := SplitBundle(body)
				if err != nil {
					t.Fatalf("SplitBundle: %v", err)
				}
				if len(got) != len(tt.envs) {
					t.Fatalf("SplitBundle gave %d envelopes, want %d", len(got), len(tt.envs))
				}
				for i := range got {
					if !bytes.Equal(got[i], tt.envs[i]) {
						t.Errorf("envelope %d = %q, want %q", i, got[i], tt.envs[i])
					}
					// The pieces alias the bundle, and appending to one
					// never overwrites the next.
					off := uintptr(unsafe.Pointer(unsafe.SliceData(got[i]))) - uintptr(unsafe.Pointer(unsafe.SliceData(body)))
					if off >= uintptr(len(body)) || off+uintptr(len(got[i])) > uintptr(len(body)) {
						t.Errorf("envelope %d does not alias the bundle", i)
					}
					if cap(got[i]) != len(got[i]) {
						t.Errorf("envelope %d: cap %d > len %d: an append would overwrite the next", i, cap(got[i]), len(got[i]))
					}
				}
				if again := AppendBundle(nil, got); !bytes.Equal(again, body) {
					t.Errorf("re-encoding differs")
				}
			}
		})
	}
	if n := BundleSize(nil); n != 0 {
		t.Errorf("BundleSize(nil) = %d, want 0", n)
	}
	if b := AppendBundle([]byte("x"), nil); !bytes.Equal(b, []byte("x")) {
		t.Errorf("AppendBundle(x, nil) = %q, want x", b)
	}
}

// TestBundleOfEnvelopes: a bundle's envelopes decode one after the other
// with decodeEnvelopeAfter, as the workers read them.
func TestBundleOfEnvelopes(t *testing.T) {
	want := []Envelope{
		{Kind: KindOpen, Seq: 1, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1"},
		{Kind: KindFrame, Seq: 2, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1", Frame: box.Append(nil, 1, 0, 1, []byte("a"))},
		{Kind: KindFrame, Seq: 7, Gateway: "gw", Conn: "gw-2", Addr: "10.0.0.2:2", UID: "bob", Frame: box.Append(nil, 2, 0, 9, nil)},
		{Kind: KindClose, Seq: 3, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1"},
	}
	var envs [][]byte
	for i := range want {
		envs = append(envs, AppendEnvelope(nil, &want[i]))
	}
	parts, err := SplitBundle(AppendBundle(nil, envs))
	if err != nil || len(parts) != len(want) {
		t.Fatalf("SplitBundle = %d envelopes, %v; want %d", len(parts), err, len(want))
	}
	var prev *Envelope
	for i, raw := range parts {
		e, err := decodeEnvelopeAfter(raw, prev)
		if err != nil || !envEqual(e, want[i]) {
			t.Errorf("envelope %d = %+v, %v; want %+v", i, e, err, want[i])
		}
		prev = &e
	}
}

func TestSplitBundleErrors(t *testing.T) {
	env := AppendEnvelope(nil, &envelopeCases[3].env)
	one := AppendBundle(nil, [][]byte{env})
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"zero-length envelope", []byte{0}},
		{"zero-length envelope after one", append(bytes.Clone(one), 0)},
		{"length longer than the rest", []byte{5, 'a', 'b'}},
		{"last envelope cut", one[:len(one)-1]},
		{"length unterminated", []byte{0x80}},
		{"length unterminated after one", append(bytes.Clone(one), 0x81, 0x80)},
		{"length overflows", append(bytes.Repeat([]byte{0xff}, 10), 0x01, 'a')},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'a'}},
		{"length not minimal", []byte{0x81, 0x00, 'a'}},
	}
	for _, tt := range tests {
		if got, err := SplitBundle(tt.in); !errors.Is(err, ErrBadEnvelope) || got != nil {
			t.Errorf("%s: SplitBundle(%x) = %q, %v; want nil, ErrBadEnvelope", tt.name, tt.in, got, err)
		}
	}
}

func FuzzSplitBundle(f *testing.F) {
	all := encodedCases()
	for i := range all {
		if len(all[i]) < 1000 {
			f.Add(AppendBundle(nil, all[i:i+1]))
		}
	}
	f.Add(AppendBundle(nil, all[:5]))
	f.Add(AppendBundle(nil, [][]byte{bytes.Repeat([]byte{1}, 200)}))
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0x00, 'a'}) // length 1, not minimally encoded
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		envs, err := SplitBundle(b)
		if !bytes.Equal(in, b) {
			t.Fatalf("SplitBundle modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrBadEnvelope) {
				t.Fatalf("SplitBundle(%x) error %v is not ErrBadEnvelope", b, err)
			}
			if envs != nil {
				t.Fatalf("SplitBundle(%x) = %q with an error", b, envs)
			}
			return
		}
		if len(envs) == 0 {
			t.Fatalf("SplitBundle(%x) accepted a bundle of no envelopes", b)
		}
		if again := AppendBundle(nil, envs); !bytes.Equal(again, b) {
			t.Fatalf("AppendBundle(SplitBundle(%x)) = %x", b, again)
		}
		if BundleSize(envs) != len(b) {
			t.Fatalf("BundleSize(SplitBundle(%x)) = %d, want %d", b, BundleSize(envs), len(b))
		}
		for i, e := range envs {
			if len(e) == 0 {
				t.Fatalf("envelope %d is empty", i)
			}
			if cap(e) != len(e) {
				t.Fatalf("envelope %d: cap %d > len %d", i, cap(e), len(e))
			}
		}
		if last := envs[len(envs)-1]; &last[len(last)-1] != &b[len(b)-1] {
			t.Fatalf("the last envelope does not alias the input's tail")
		}
	})
}

// TestDecodeEnvelopeAfter: decoding after any envelope gives what
// DecodeEnvelope gives, and takes the previous envelope's strings where
// they are equal.
func TestDecodeEnvelopeAfter(t *testing.T) {
	prevs := []*Envelope{nil, {}}
	for i := range envelopeCases {
		prevs = append(prevs, &envelopeCases[i].env)
	}
	prevs = append(prevs, &Envelope{Gateway: "g", Conn: "other", Addr: "a", UID: "u"})
	var inputs [][]byte
	for _, tt := range envelopeCases {
		enc := AppendEnvelope(nil, &tt.env)
		inputs = append(inputs, enc)
		h := envHeaderLen(tt.env)
		for _, n := range []int{0, 1, 2, h - 1} { // cut: errors
			if n >= 0 && n < len(enc) {
				inputs = append(inputs, enc[:n])
			}
		}
	}
	for _, prev := range prevs {
		for _, in := range inputs {
			want, wantErr := DecodeEnvelope(in)
			var before Envelope
			if prev != nil {
				before = *prev
			}
			got, err := decodeEnvelopeAfter(in, prev)
			if (err == nil) != (wantErr == nil) || (err != nil && !errors.Is(err, ErrBadEnvelope)) {
				t.Fatalf("decodeEnvelopeAfter(%x, %+v) error = %v, DecodeEnvelope's = %v", in, prev, err, wantErr)
			}
			if err == nil && !envEqual(got, want) {
				t.Errorf("decodeEnvelopeAfter(%x, %+v) = %+v, DecodeEnvelope gives %+v", in, prev, got, want)
			}
			if prev != nil && !envEqual(*prev, before) {
				t.Errorf("decodeEnvelopeAfter changed prev: %+v, was %+v", *prev, before)
			}
		}
	}

	// Equal strings are the previous envelope's own, not copies.
	prev := Envelope{Kind: KindFrame, Seq: 1, Gateway: "gw-77", Conn: "gw-77.1", Addr: "10.1.2.3:4", UID: "alice"}
	next := prev
	next.Seq, next.Frame = 2, []byte{1, 2}
	got, err := decodeEnvelopeAfter(AppendEnvelope(nil, &next), &prev)
	if err != nil || !envEqual(got, next) {
		t.Fatalf("decodeEnvelopeAfter = %+v, %v; want %+v", got, err, next)
	}
	for _, f := range []struct{ name, got, prev string }{
		{"Gateway", got.Gateway, prev.Gateway}, {"Conn", got.Conn, prev.Conn},
		{"Addr", got.Addr, prev.Addr}, {"UID", got.UID, prev.UID},
	} {
		if unsafe.StringData(f.got) != unsafe.StringData(f.prev) {
			t.Errorf("%s %q was copied, want the previous envelope's string", f.name, f.got)
		}
	}
	// A different connection of the same gateway: only the gateway is
	// shared.
	other := next
	other.Conn, other.UID = "gw-77.2", ""
	got, err = decodeEnvelopeAfter(AppendEnvelope(nil, &other), &prev)
	if err != nil || !envEqual(got, other) {
		t.Fatalf("decodeEnvelopeAfter = %+v, %v; want %+v", got, err, other)
	}
	if unsafe.StringData(got.Gateway) != unsafe.StringData(prev.Gateway) {
		t.Errorf("Gateway was copied, want the previous envelope's string")
	}
}

// TestEnvelopeBundle: a gateway's bundle leaves out the strings each
// envelope shares with the one before it; the workers read the same
// envelopes back, and a dead letter gets each encoded on its own again.
func TestEnvelopeBundle(t *testing.T) {
	want := []Envelope{
		{Kind: KindOpen, Seq: 1, At: 5, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1"},
		{Kind: KindFrame, Seq: 2, At: 6, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1", Frame: box.Append(nil, 1, 0, 1, []byte("a"))},
		{Kind: KindFrame, Seq: 3, At: 7, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1", UID: "ann", Frame: box.Append(nil, 1, 0, 2, nil)},
		{Kind: KindFrame, Seq: 7, At: 7, Gateway: "gw", Conn: "gw-2", Addr: "10.0.0.2:2", UID: "bob", Frame: box.Append(nil, 2, 0, 9, nil)},
		{Kind: KindFrame, Seq: 8, At: 8, Gateway: "gw", Conn: "gw-2", Addr: "10.0.0.2:2", UID: "bob", Frame: box.Append(nil, 2, 0, 10, nil)},
		{Kind: KindClose, Seq: 4, At: 9, Gateway: "gw", Conn: "gw-1", Addr: "10.0.0.1:1", UID: "ann"},
		{Kind: KindFrame, Seq: 1, At: 9, Gateway: "other", Conn: "", Addr: ""},
	}
	var envs [][]byte
	for i := range want {
		envs = append(envs, AppendEnvelope(nil, &want[i]))
	}
	bundle := AppendEnvelopeBundle([]byte("x"), envs)[1:]
	if n := BundleSize(envs); len(bundle) >= n {
		t.Errorf("bundle of %d bytes, not smaller than %d (every envelope in full)", len(bundle), n)
	}
	parts, err := SplitBundle(bundle)
	if err != nil || len(parts) != len(want) {
		t.Fatalf("SplitBundle = %d envelopes, %v; want %d", len(parts), err, len(want))
	}
	var prev *Envelope
	for i, raw := range parts {
		e, err := decodeEnvelopeAfter(raw, prev)
		if err != nil || !envEqual(e, want[i]) {
			t.Fatalf("envelope %d = %+v, %v; want %+v", i, e, err, want[i])
		}
		if alone := StandaloneEnvelope(raw, &e); !bytes.Equal(alone, envs[i]) {
			t.Errorf("envelope %d on its own = %x, want %x", i, alone, envs[i])
		}
		prev = &e
	}
	// Out of its bundle, an envelope that leaves strings out is refused.
	if _, err := DecodeEnvelope(parts[1]); !errors.Is(err, ErrBadEnvelope) {
		t.Errorf("DecodeEnvelope of a bundle's second envelope: %v, want ErrBadEnvelope", err)
	}
}

// FuzzEnvelopeBundle: whatever a bundle holds, reading it never panics,
// and a bundle AppendEnvelopeBundle made reads back to its envelopes.
func FuzzEnvelopeBundle(f *testing.F) {
	f.Add([]byte("gw-1"), []byte("10.0.0.1:1"), []byte("u"), []byte("body"), uint8(3))
	f.Add([]byte(""), []byte(""), []byte(""), []byte(""), uint8(1))
	f.Fuzz(func(t *testing.T, conn, addr, uid, body []byte, n uint8) {
		var want []Envelope
		var envs [][]byte
		for i := 0; i < int(n%8)+1; i++ {
			e := Envelope{Kind: Kind(i%3 + 1), Seq: uint64(i + 1), At: int64(i), Gateway: "gw", Conn: string(conn), Addr: string(addr), UID: string(uid)}
			if i%2 == 1 {
				e.Conn += "x" // a run of another connection
			}
			if e.Kind == KindFrame {
				e.Frame = box.Append(nil, int32(i), 0, uint32(i), body)
			}
			want = append(want, e)
			envs = append(envs, AppendEnvelope(nil, &want[len(want)-1]))
		}
		b := AppendEnvelopeBundle(nil, envs)
		ds := toDeliveries(nil, 0, redis.XMessage{ID: "1-0", Values: map[string]any{"b": string(b)}}, 1)
		if len(ds) != len(want) {
			t.Fatalf("%d deliveries, want %d", len(ds), len(want))
		}
		for i, d := range ds {
			if !envEqual(d.Env, want[i]) {
				t.Fatalf("envelope %d = %+v, want %+v", i, d.Env, want[i])
			}
		}
		// And arbitrary bytes as a bundle: no panic.
		_ = toDeliveries(nil, 0, redis.XMessage{ID: "1-0", Values: map[string]any{"b": string(body)}}, 1)
	})
}
