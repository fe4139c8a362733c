package box

import (
	"bufio"
	"io"
)

// Reader reads frames from a byte stream such as a client's TCP connection.
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader returns a Reader that rejects frames over max bytes (0 means
// DefaultMaxFrame).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Next reads the next frame. The returned Box owns its body. At a clean end
// of stream it returns io.EOF; a stream cut inside a frame gives
// io.ErrUnexpectedEOF.
func (r *Reader) Next() (Box, error) {
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return Box{}, err
	}
	if _, err := Split(hdr[:], r.max); err != nil {
		return Box{}, err
	}
	h, err := ParseHeader(hdr[:])
	if err != nil {
		return Box{}, err
	}
	body := make([]byte, int(h.Len)-HeaderLen)
	if _, err := io.ReadFull(r.r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Box{}, err
	}
	return Box{Header: h, Body: body}, nil
}
