package box_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"testing"
	"testing/iotest"

	"github.com/maple-farm/maple/box"
)

// rawHeader builds a header by hand, so that the tests do not rely on Append
// to check what Split, ParseHeader and Decode read.
func rawHeader(magic uint32, version, flag uint16, n uint32, cmd, ret int32, sn uint32) []byte {
	b := make([]byte, box.HeaderLen)
	binary.BigEndian.PutUint32(b[0:4], magic)
	binary.BigEndian.PutUint16(b[4:6], version)
	binary.BigEndian.PutUint16(b[6:8], flag)
	binary.BigEndian.PutUint32(b[8:12], n)
	binary.BigEndian.PutUint32(b[12:16], uint32(cmd))
	binary.BigEndian.PutUint32(b[16:20], uint32(ret))
	binary.BigEndian.PutUint32(b[20:24], sn)
	return b
}

// frameOf returns a whole frame with a packet_len matching body.
func frameOf(cmd, ret int32, sn uint32, body string) []byte {
	b := rawHeader(box.Magic, 0, 0, uint32(box.HeaderLen+len(body)), cmd, ret, sn)
	return append(b, body...)
}

// errName describes an error for test messages.
func errName(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestSplit(t *testing.T) {
	echo := frameOf(1, 0, 1, "hi")
	empty := frameOf(4, 0, 2, "")
	exactly := append(rawHeader(box.Magic, 0, 0, 100, 1, 0, 3), make([]byte, 100-box.HeaderLen)...)

	tests := []struct {
		name    string
		buf     []byte
		max     int
		want    []byte // the frame Split must return; nil for "need more"
		wantErr error
	}{
		{name: "empty buffer", buf: nil},
		{name: "one byte", buf: echo[:1]},
		{name: "magic only", buf: echo[:4]},
		{name: "up to packet_len minus one", buf: echo[:11]},
		{name: "header only", buf: echo[:box.HeaderLen]},
		{name: "one body byte missing", buf: echo[:len(echo)-1]},
		{name: "whole frame", buf: echo, want: echo},
		{name: "empty body", buf: empty, want: empty},
		{name: "two coalesced frames", buf: cat(echo, empty), want: echo},
		{name: "frame then part of the next", buf: cat(echo, empty[:5]), want: echo},
		{name: "bad magic in 4 bytes", buf: []byte{0x79, 0x78, 0xAE, 0xCE}, wantErr: box.ErrBadMagic},
		{name: "bad magic, zeros", buf: make([]byte, 30), wantErr: box.ErrBadMagic},
		{name: "bad magic under 4 bytes is not known yet", buf: []byte{0, 0, 0}},
		{name: "packet_len 0", buf: rawHeader(box.Magic, 0, 0, 0, 1, 0, 1)[:12], wantErr: box.ErrShortLen},
		{name: "packet_len 23", buf: rawHeader(box.Magic, 0, 0, 23, 1, 0, 1)[:12], wantErr: box.ErrShortLen},
		{name: "packet_len 24 is a frame", buf: empty, max: box.HeaderLen, want: empty},
		{name: "packet_len over max", buf: rawHeader(box.Magic, 0, 0, 101, 1, 0, 1)[:12], max: 100, wantErr: box.ErrTooLarge},
		{name: "packet_len over default max", buf: rawHeader(box.Magic, 0, 0, box.DefaultMaxFrame+1, 1, 0, 1)[:12], wantErr: box.ErrTooLarge},
		{name: "packet_len max uint32", buf: rawHeader(box.Magic, 0, 0, math.MaxUint32, 1, 0, 1)[:12], wantErr: box.ErrTooLarge},
		{name: "packet_len exactly max, partial", buf: exactly[:99], max: 100},
		{name: "packet_len exactly max, whole", buf: exactly, max: 100, want: exactly},
		{name: "packet_len exactly default max, partial", buf: rawHeader(box.Magic, 0, 0, box.DefaultMaxFrame, 1, 0, 1)},
		{name: "negative max means default", buf: echo, max: -1, want: echo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := box.Split(tt.buf, tt.max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Split(% X, %d) error = %s, want %v", tt.buf, tt.max, errName(err), tt.wantErr)
				}
				if got != nil {
					t.Errorf("Split(% X, %d) frame = % X alongside an error, want nil", tt.buf, tt.max, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Split(% X, %d) error = %v, want nil", tt.buf, tt.max, err)
			}
			if !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Fatalf("Split(% X, %d) = % X, want % X", tt.buf, tt.max, got, tt.want)
			}
			if got != nil && cap(got) != len(got) {
				t.Errorf("Split frame cap = %d, want len %d (appending to it must not touch the next frame)", cap(got), len(got))
			}
			if got != nil && &got[0] != &tt.buf[0] {
				t.Errorf("Split frame does not alias buf")
			}
		})
	}
}

// TestSplitByteByByte feeds a stream of frames one byte at a time, as a
// gateway would see it from the slowest client, and checks that every frame
// comes out exactly when its last byte arrives.
func TestSplitByteByByte(t *testing.T) {
	frames := [][]byte{frameOf(1, 0, 1, "hi"), frameOf(4, 0, 2, ""), frameOf(6, 0, 0, "alice: hello")}
	stream := cat(frames...)

	var buf, got []byte
	var out [][]byte
	for i, c := range stream {
		buf = append(buf, c)
		for {
			f, err := box.Split(buf, 0)
			if err != nil {
				t.Fatalf("after byte %d: Split error = %v", i, err)
			}
			if f == nil {
				break
			}
			out = append(out, bytes.Clone(f))
			got = append(got, f...)
			buf = buf[len(f):]
		}
	}
	if len(buf) != 0 {
		t.Errorf("left over % X, want nothing", buf)
	}
	if len(out) != len(frames) {
		t.Fatalf("got %d frames, want %d", len(out), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(out[i], frames[i]) {
			t.Errorf("frame %d = % X, want % X", i, out[i], frames[i])
		}
	}
}

// TestSplitErrorsEarly checks that a bad stream fails as soon as the bytes
// that show it have arrived, not when a whole header has.
func TestSplitErrorsEarly(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		max    int
		at     int // number of bytes at which Split must fail
		want   error
	}{
		{"bad magic", rawHeader(0xDEADBEEF, 0, 0, 30, 1, 0, 1), 0, 4, box.ErrBadMagic},
		{"short len", rawHeader(box.Magic, 0, 0, 5, 1, 0, 1), 0, 12, box.ErrShortLen},
		{"huge len", rawHeader(box.Magic, 0, 0, 1<<30, 1, 0, 1), 0, 12, box.ErrTooLarge},
		{"over small max", rawHeader(box.Magic, 0, 0, 65, 1, 0, 1), 64, 12, box.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for n := 0; n <= len(tt.stream); n++ {
				f, err := box.Split(tt.stream[:n], tt.max)
				if f != nil {
					t.Fatalf("Split of %d bytes returned a frame", n)
				}
				if n < tt.at && err != nil {
					t.Fatalf("Split of %d bytes error = %v, want none before %d bytes", n, err, tt.at)
				}
				if n >= tt.at && !errors.Is(err, tt.want) {
					t.Fatalf("Split of %d bytes error = %s, want %v", n, errName(err), tt.want)
				}
			}
		})
	}
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		want    box.Header
		wantErr error // nil with wantAny unset: success
		wantAny bool  // any error will do (no sentinel for it)
	}{
		{
			name: "request",
			b:    frameOf(1, 0, 1, "hi"),
			want: box.Header{Len: 26, Cmd: 1, SN: 1},
		},
		{
			name: "every field",
			b:    rawHeader(box.Magic, 0x0102, 0x0304, 0x00000105, -7, box.RetNoRoute, math.MaxUint32),
			want: box.Header{Version: 0x0102, Flag: 0x0304, Len: 0x105, Cmd: -7, Ret: -10000, SN: math.MaxUint32},
		},
		{
			name: "packet_len is not checked against the buffer",
			b:    rawHeader(box.Magic, 0, 0, box.DefaultMaxFrame*4, 3, 0, 9),
			want: box.Header{Len: box.DefaultMaxFrame * 4, Cmd: 3, SN: 9},
		},
		{name: "short buffer", b: frameOf(1, 0, 1, "")[:box.HeaderLen-1], wantAny: true},
		{name: "nil buffer", b: nil, wantAny: true},
		{name: "bad magic", b: rawHeader(box.Magic+1, 0, 0, 24, 1, 0, 1), wantErr: box.ErrBadMagic},
		{name: "short len", b: rawHeader(box.Magic, 0, 0, 23, 1, 0, 1), wantErr: box.ErrShortLen},
		{name: "bad magic wins over short len", b: rawHeader(0, 0, 0, 0, 1, 0, 1), wantErr: box.ErrBadMagic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := box.ParseHeader(tt.b)
			switch {
			case tt.wantAny:
				if err == nil {
					t.Fatalf("ParseHeader(% X) = %+v, want an error", tt.b, got)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseHeader(% X) error = %s, want %v", tt.b, errName(err), tt.wantErr)
				}
			case err != nil:
				t.Fatalf("ParseHeader(% X) error = %v", tt.b, err)
			case got != tt.want:
				t.Fatalf("ParseHeader(% X) = %+v, want %+v", tt.b, got, tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	echo := frameOf(1, 0, 1, "hi")
	tests := []struct {
		name    string
		frame   []byte
		want    box.Box
		wantErr error
		wantAny bool
	}{
		{name: "echo", frame: echo, want: box.Box{Header: box.Header{Len: 26, Cmd: 1, SN: 1}, Body: []byte("hi")}},
		{name: "empty body", frame: frameOf(4, 0, 2, ""), want: box.Box{Header: box.Header{Len: 24, Cmd: 4, SN: 2}, Body: []byte{}}},
		{name: "reply with ret", frame: frameOf(99, box.RetNoRoute, 2, ""), want: box.Box{Header: box.Header{Len: 24, Cmd: 99, Ret: box.RetNoRoute, SN: 2}, Body: []byte{}}},
		{name: "trailing bytes", frame: cat(echo, []byte{0}), wantAny: true},
		{name: "two frames", frame: cat(echo, echo), wantAny: true},
		{name: "truncated", frame: echo[:len(echo)-1], wantAny: true},
		{name: "header only", frame: echo[:box.HeaderLen], wantAny: true},
		{name: "under a header", frame: echo[:10], wantAny: true},
		{name: "bad magic", frame: cat(rawHeader(1, 0, 0, 26, 1, 0, 1), []byte("hi")), wantErr: box.ErrBadMagic},
		{name: "short len", frame: rawHeader(box.Magic, 0, 0, 20, 1, 0, 1), wantErr: box.ErrShortLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := box.Decode(tt.frame)
			switch {
			case tt.wantAny:
				if err == nil {
					t.Fatalf("Decode(% X) = %+v, want an error", tt.frame, got)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Decode(% X) error = %s, want %v", tt.frame, errName(err), tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("Decode(% X) error = %v", tt.frame, err)
			}
			if got.Header != tt.want.Header || !bytes.Equal(got.Body, tt.want.Body) {
				t.Fatalf("Decode(% X) = %+v %q, want %+v %q", tt.frame, got.Header, got.Body, tt.want.Header, tt.want.Body)
			}
			if len(got.Body) > 0 && &got.Body[0] != &tt.frame[box.HeaderLen] {
				t.Errorf("Decode body does not alias the frame")
			}
		})
	}
}

func TestAppendEncodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		b    box.Box
	}{
		{"echo request", box.Box{Header: box.Header{Cmd: 1, SN: 1}, Body: []byte("hi")}},
		{"nil body", box.Box{Header: box.Header{Cmd: 4, SN: 2}}},
		{"empty body", box.Box{Header: box.Header{Cmd: 4, SN: 2}, Body: []byte{}}},
		{"no route", box.Box{Header: box.Header{Cmd: 99, Ret: box.RetNoRoute, SN: 7}}},
		{"push", box.Box{Header: box.Header{Cmd: 6}, Body: []byte("alice: hello")}},
		{"extremes", box.Box{Header: box.Header{Cmd: math.MinInt32, Ret: math.MaxInt32, SN: math.MaxUint32}, Body: []byte{0, 0xFF}}},
		{"binary body", box.Box{Header: box.Header{Cmd: 100}, Body: bytes.Repeat([]byte{0x79, 0x78, 0xAE, 0xCF}, 300)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			out := box.Append(bytes.Clone(prefix), tt.b.Cmd, tt.b.Ret, tt.b.SN, tt.b.Body)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("Append clobbered dst: % X", out)
			}
			frame := out[len(prefix):]
			if len(frame) != box.HeaderLen+len(tt.b.Body) {
				t.Fatalf("Append wrote %d bytes, want %d", len(frame), box.HeaderLen+len(tt.b.Body))
			}
			want := frameOf(tt.b.Cmd, tt.b.Ret, tt.b.SN, string(tt.b.Body))
			if !bytes.Equal(frame, want) {
				t.Fatalf("Append = % X, want % X", frame, want)
			}
			if enc := tt.b.Encode(); !bytes.Equal(enc, want) {
				t.Fatalf("Encode = % X, want % X", enc, want)
			}

			got, err := box.Decode(frame)
			if err != nil {
				t.Fatalf("Decode(Append(...)) error = %v", err)
			}
			wantHdr := tt.b.Header
			wantHdr.Len = uint32(len(frame))
			if got.Header != wantHdr || !bytes.Equal(got.Body, tt.b.Body) {
				t.Fatalf("Decode(Append(...)) = %+v %q, want %+v %q", got.Header, got.Body, wantHdr, tt.b.Body)
			}
			if enc := got.Encode(); !bytes.Equal(enc, frame) {
				t.Fatalf("Encode(Decode(f)) = % X, want f = % X", enc, frame)
			}
		})
	}
}

func TestEncodeKeepsVersionAndFlagAndIgnoresLen(t *testing.T) {
	b := box.Box{Header: box.Header{Version: 3, Flag: 0x8001, Len: 9999, Cmd: 5, Ret: -1, SN: 42}, Body: []byte("abc")}
	want := cat(rawHeader(box.Magic, 3, 0x8001, 27, 5, -1, 42), []byte("abc"))
	got := b.Encode()
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode = % X, want % X", got, want)
	}
	d, err := box.Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 3 || d.Flag != 0x8001 || d.Len != 27 {
		t.Fatalf("Decode(Encode) header = %+v", d.Header)
	}
}

func TestSetRet(t *testing.T) {
	for _, ret := range []int32{box.RetOK, box.RetNoRoute, box.RetHandlerFailed, box.RetBusy, box.RetLoginRequired, math.MinInt32, math.MaxInt32} {
		frame := frameOf(1, 12345, 77, "body")
		want := frameOf(1, ret, 77, "body")
		box.SetRet(frame, ret)
		if !bytes.Equal(frame, want) {
			t.Errorf("SetRet(f, %d) = % X, want % X", ret, frame, want)
		}
		h, err := box.ParseHeader(frame)
		if err != nil || h.Ret != ret {
			t.Errorf("SetRet(f, %d): ParseHeader = %+v, %v", ret, h, err)
		}
	}
}

func TestReader(t *testing.T) {
	echo := frameOf(1, 0, 1, "hi")
	empty := frameOf(4, 0, 2, "")
	push := frameOf(6, 0, 0, "alice: hello")
	big := append(rawHeader(box.Magic, 0, 0, 100, 1, 0, 3), bytes.Repeat([]byte{'x'}, 100-box.HeaderLen)...)

	tests := []struct {
		name    string
		stream  []byte
		max     int
		want    [][]byte // frames before the error
		wantErr error
	}{
		{name: "empty stream", stream: nil, wantErr: io.EOF},
		{name: "frames then clean end", stream: cat(echo, empty, push), want: [][]byte{echo, empty, push}, wantErr: io.EOF},
		{name: "cut in the header", stream: cat(echo, push[:10]), want: [][]byte{echo}, wantErr: io.ErrUnexpectedEOF},
		{name: "cut after the header", stream: cat(echo, push[:box.HeaderLen]), want: [][]byte{echo}, wantErr: io.ErrUnexpectedEOF},
		{name: "cut in the body", stream: cat(echo, push[:len(push)-1]), want: [][]byte{echo}, wantErr: io.ErrUnexpectedEOF},
		{name: "bad magic", stream: cat(echo, rawHeader(7, 0, 0, 24, 1, 0, 1)), want: [][]byte{echo}, wantErr: box.ErrBadMagic},
		{name: "short len", stream: rawHeader(box.Magic, 0, 0, 10, 1, 0, 1), wantErr: box.ErrShortLen},
		{name: "oversize", stream: big, max: 99, wantErr: box.ErrTooLarge},
		{name: "exactly max", stream: big, max: 100, want: [][]byte{big}, wantErr: io.EOF},
		{name: "oversize against default max", stream: rawHeader(box.Magic, 0, 0, box.DefaultMaxFrame+1, 1, 0, 1), wantErr: box.ErrTooLarge},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte", iotest.OneByteReader},
		{"data with EOF", iotest.DataErrReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				r := box.NewReader(rd.wrap(bytes.NewReader(tt.stream)), tt.max)
				var got []box.Box
				var err error
				for {
					var b box.Box
					if b, err = r.Next(); err != nil {
						break
					}
					got = append(got, b)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Next error = %s, want %v", errName(err), tt.wantErr)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d frames, want %d", len(got), len(tt.want))
				}
				for i, b := range got {
					if enc := b.Encode(); !bytes.Equal(enc, tt.want[i]) {
						t.Errorf("frame %d = % X, want % X", i, enc, tt.want[i])
					}
					if b.Len != uint32(len(tt.want[i])) {
						t.Errorf("frame %d Len = %d, want %d", i, b.Len, len(tt.want[i]))
					}
				}
			})
		}
	}
}

// TestReaderOwnsBody checks that a body returned by Next is not overwritten
// by later reads.
func TestReaderOwnsBody(t *testing.T) {
	var stream []byte
	for i := range 2000 {
		stream = box.Append(stream, 1, 0, uint32(i+1), bytes.Repeat([]byte{byte(i)}, 100))
	}
	r := box.NewReader(bytes.NewReader(stream), 0)
	var got []box.Box
	for {
		b, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	if len(got) != 2000 {
		t.Fatalf("got %d frames, want 2000", len(got))
	}
	for i, b := range got {
		if b.SN != uint32(i+1) || !bytes.Equal(b.Body, bytes.Repeat([]byte{byte(i)}, 100)) {
			t.Fatalf("frame %d = sn %d body % X...", i, b.SN, b.Body[:4])
		}
	}
}

// TestReaderStopsEarlyOnOversize checks that an oversize packet_len is
// refused from the header, before the reader waits for (or allocates) the body.
func TestReaderStopsEarlyOnOversize(t *testing.T) {
	hdr := rawHeader(box.Magic, 0, 0, math.MaxUint32, 1, 0, 1)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(hdr) // then block: the body never comes
	}()
	defer pw.Close()
	_, err := box.NewReader(pr, 0).Next()
	if !errors.Is(err, box.ErrTooLarge) {
		t.Fatalf("Next error = %s, want %v", errName(err), box.ErrTooLarge)
	}
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
