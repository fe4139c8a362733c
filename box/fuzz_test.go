package box_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/maple-farm/maple/box"
)

// seedStreams are the fuzz seeds written to testdata/box/*.bin by
// go test ./box -update, and checked against those files otherwise.
var seedStreams = []struct {
	name   string
	stream []byte
}{
	{"echo_request", box.Append(nil, 1, 0, 1, []byte("hi"))},
	{"empty_body", box.Append(nil, 4, 0, 2, nil)},
	{"push", box.Append(nil, 6, 0, 0, []byte("alice: hello"))},
	{"two_frames", box.Append(box.Append(nil, 1, 0, 1, []byte("hi")), 99, box.RetNoRoute, 2, nil)},
	{"version_flag", box.Box{Header: box.Header{Version: 1, Flag: 2, Cmd: 3, SN: 4}, Body: []byte("7")}.Encode()},
	{"bad_magic", setMagic(box.Append(nil, 1, 0, 1, []byte("hi")), 0xCFAE7879)},
	{"frame_then_bad_magic", append(box.Append(nil, 1, 0, 1, []byte("hi")), "GET / HTTP/1.1\r\n\r\n"...)},
	{"short_len", setLen(box.Append(nil, 1, 0, 1, nil), 23)},
	{"huge_len", setLen(box.Append(nil, 1, 0, 1, []byte("hi")), 0xFFFFFFFF)},
	{"truncated_body", box.Append(nil, 1, 0, 1, []byte("hello"))[:27]},
	{"truncated_header", box.Append(nil, 1, 0, 1, []byte("hi"))[:10]},
}

func setMagic(f []byte, m uint32) []byte {
	f[0], f[1], f[2], f[3] = byte(m>>24), byte(m>>16), byte(m>>8), byte(m)
	return f
}

func setLen(f []byte, n uint32) []byte {
	f[8], f[9], f[10], f[11] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return f
}

// TestSeedCorpus keeps testdata/box/*.bin in step with seedStreams.
func TestSeedCorpus(t *testing.T) {
	for _, s := range seedStreams {
		path := filepath.Join(testdataDir, s.name+".bin")
		if *update {
			if err := os.WriteFile(path, s.stream, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./box -update to create it)", err)
		}
		if !bytes.Equal(got, s.stream) {
			t.Errorf("%s = % X, want % X (run go test ./box -update)", path, got, s.stream)
		}
	}
}

// splitResult is what a reader loop over Split made of a whole stream.
type splitResult struct {
	frames [][]byte
	err    error // the error that stopped the loop, or nil
	rest   int   // bytes left over, neither a frame nor an error
}

// splitStream plays a gateway's read loop: each chunk is appended to the
// buffer, then Split takes frames off its front until it needs more bytes.
// chunk returns the next chunk size (at least 1).
func splitStream(stream []byte, max int, chunk func() int) splitResult {
	var buf []byte
	var res splitResult
	for len(stream) > 0 {
		n := min(chunk(), len(stream))
		buf = append(buf, stream[:n]...)
		stream = stream[n:]
		for {
			f, err := box.Split(buf, max)
			if err != nil {
				res.err = err
				res.rest = len(buf) + len(stream)
				return res
			}
			if f == nil {
				break
			}
			res.frames = append(res.frames, bytes.Clone(f))
			buf = buf[len(f):]
		}
	}
	res.rest = len(buf)
	return res
}

func FuzzSplit(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join(testdataDir, "*.bin"))
	if err != nil {
		f.Fatal(err)
	}
	if len(paths) == 0 {
		f.Fatalf("no seeds in %s (run go test ./box -update)", testdataDir)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint64(0), uint16(0))
		f.Add(b, uint64(1), uint16(box.HeaderLen+2))
	}

	f.Fuzz(func(t *testing.T, stream []byte, seed uint64, max16 uint16) {
		max := int(max16) // 0 means DefaultMaxFrame
		limit := max
		if limit == 0 {
			limit = box.DefaultMaxFrame
		}

		whole := splitStream(stream, max, func() int { return len(stream) })
		rng := rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
		results := map[string]splitResult{
			"byte by byte": splitStream(stream, max, func() int { return 1 }),
			"random":       splitStream(stream, max, func() int { return 1 + rng.IntN(64) }),
		}

		// The whole-stream result must make sense on its own.
		var joined []byte
		for i, fr := range whole.frames {
			if len(fr) < box.HeaderLen || len(fr) > limit {
				t.Fatalf("frame %d has %d bytes, outside [%d, %d]", i, len(fr), box.HeaderLen, limit)
			}
			b, err := box.Decode(fr)
			if err != nil {
				t.Fatalf("frame %d accepted by Split but Decode: %v", i, err)
			}
			if enc := b.Encode(); !bytes.Equal(enc, fr) {
				t.Fatalf("frame %d: Encode(Decode(f)) = % X, want % X", i, enc, fr)
			}
			if cut, h, err := box.Cut(fr, max); err != nil || !bytes.Equal(cut, fr) || h != b.Header {
				t.Fatalf("frame %d: Cut = % X, %+v, %v; want the frame and header %+v", i, cut, h, err, b.Header)
			}
			joined = append(joined, fr...)
		}
		if !bytes.HasPrefix(stream, joined) || len(joined)+whole.rest != len(stream) {
			t.Fatalf("frames (%d bytes) + rest (%d) do not make up the stream (%d bytes)", len(joined), whole.rest, len(stream))
		}
		if whole.err != nil && !errors.Is(whole.err, box.ErrBadMagic) &&
			!errors.Is(whole.err, box.ErrShortLen) && !errors.Is(whole.err, box.ErrTooLarge) {
			t.Fatalf("Split error %v is none of the box sentinels", whole.err)
		}
		if whole.err == nil && whole.rest >= box.HeaderLen {
			// A whole header is there: either it is a frame still waiting
			// for its body, or Split should have refused it.
			h, err := box.ParseHeader(stream[len(joined):])
			if err != nil || int(h.Len) <= whole.rest || int(h.Len) > limit {
				t.Fatalf("Split waits on %d bytes with header %+v, %v", whole.rest, h, err)
			}
		}

		// Chunking must not change anything.
		for name, r := range results {
			if len(r.frames) != len(whole.frames) {
				t.Fatalf("%s: %d frames, whole stream gave %d", name, len(r.frames), len(whole.frames))
			}
			for i := range r.frames {
				if !bytes.Equal(r.frames[i], whole.frames[i]) {
					t.Fatalf("%s: frame %d = % X, whole stream gave % X", name, i, r.frames[i], whole.frames[i])
				}
			}
			if errName(r.err) != errName(whole.err) || r.rest != whole.rest {
				t.Fatalf("%s: ended with %s and %d bytes left, whole stream with %s and %d", name, errName(r.err), r.rest, errName(whole.err), whole.rest)
			}
		}

		// Reader must agree with Split on the same stream.
		rd := box.NewReader(bytes.NewReader(stream), max)
		for i := 0; ; i++ {
			b, err := rd.Next()
			if err != nil {
				if i != len(whole.frames) {
					t.Fatalf("Reader stopped after %d frames with %v, Split gave %d", i, err, len(whole.frames))
				}
				var want error
				switch {
				case whole.err != nil && whole.rest >= box.HeaderLen:
					want = whole.err // Reader reads a whole header before checking it
				case whole.err != nil || whole.rest > 0:
					want = io.ErrUnexpectedEOF
				default:
					want = io.EOF
				}
				if errName(err) != errName(want) {
					t.Fatalf("Reader ended with %s, want %s", errName(err), errName(want))
				}
				break
			}
			if i >= len(whole.frames) {
				t.Fatalf("Reader gave frame %d, Split only %d", i, len(whole.frames))
			}
			if enc := b.Encode(); !bytes.Equal(enc, whole.frames[i]) {
				t.Fatalf("Reader frame %d = % X, Split gave % X", i, enc, whole.frames[i])
			}
		}
	})
}
