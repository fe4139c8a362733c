package box

import (
	"bytes"
	"testing"
)

func BenchmarkAppend(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 64)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(int64(HeaderLen + len(body)))
	for b.Loop() {
		buf = Append(buf[:0], 1, 0, 42, body)
	}
}

// BenchmarkSplit cuts 64-byte-body frames out of a stream of 100, as the
// gateway's event loop does on every read.
func BenchmarkSplit(b *testing.B) {
	var stream []byte
	for i := 0; i < 100; i++ {
		stream = Append(stream, 1, 0, uint32(i+1), bytes.Repeat([]byte("x"), 64))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		buf := stream
		for {
			f, err := Split(buf, 0)
			if err != nil || f == nil {
				break
			}
			buf = buf[len(f):]
		}
	}
}

func BenchmarkReader(b *testing.B) {
	var stream []byte
	for i := 0; i < 100; i++ {
		stream = Append(stream, 1, 0, uint32(i+1), bytes.Repeat([]byte("x"), 64))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(stream), 0)
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
}
