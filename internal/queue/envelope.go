package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind says what an inbound envelope carries.
type Kind byte

// Inbound envelope kinds.
const (
	KindFrame  Kind = 1 // a client's frame
	KindOpen   Kind = 2 // a connection opened (no frame)
	KindClose  Kind = 3 // a connection closed (no frame); maple's close_client
	KindSystem Kind = 4 // a frame with no client: write_to_worker, a timer
	KindJob    Kind = 5 // one period of a periodic job; Frame's body is its name
)

func (k Kind) String() string {
	switch k {
	case KindFrame:
		return "frame"
	case KindOpen:
		return "open"
	case KindClose:
		return "close"
	case KindSystem:
		return "system"
	case KindJob:
		return "job"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// envelopeVersion is the first byte of every encoded envelope, so that a
// worker of a later release can still read what an older gateway queued.
const envelopeVersion = 1

// envelopeInBundle starts an envelope inside a bundle that leaves out the
// strings it shares with the envelope before it (AppendEnvelopeBundle): a
// bundle's envelopes all come from one gateway, and often several in a
// row from one connection. Only a bundle's reader can decode it.
const envelopeInBundle = 2

// The flags byte after an envelopeInBundle's kind: which strings are those
// of the envelope before.
const (
	sameGateway byte = 1 << iota
	sameConn
	sameAddr
	sameUID
)

// Envelope is what a gateway hands the workers: one client frame, or a
// connection's open or close event, and where it came from. It is stored in
// the inbound stream's field "e" in a compact binary form.
type Envelope struct {
	Kind    Kind
	Seq     uint64 // per-connection sequence: open is 1, then every frame, close last
	At      int64  // when the gateway read the frame (unix ns, gateway's clock)
	Gateway string // id of the gateway holding the connection
	Conn    string // farm-wide unique connection id
	Addr    string // client's address
	UID     string // user id bound to the connection, if any
	Frame   []byte // the whole Box frame, header included (KindFrame, KindSystem)
}

// ErrBadEnvelope reports bytes that are not an envelope of this release.
var ErrBadEnvelope = errors.New("store: bad envelope")

// AppendEnvelope encodes e onto dst.
func AppendEnvelope(dst []byte, e *Envelope) []byte {
	dst = append(dst, envelopeVersion, byte(e.Kind))
	dst = binary.AppendUvarint(dst, e.Seq)
	dst = binary.AppendUvarint(dst, uint64(e.At))
	dst = appendString(dst, e.Gateway)
	dst = appendString(dst, e.Conn)
	dst = appendString(dst, e.Addr)
	dst = appendString(dst, e.UID)
	return append(dst, e.Frame...)
}

// EnvelopeSize is an upper bound of the encoded size of e, for sizing
// buffers.
func EnvelopeSize(e *Envelope) int {
	return 2 + 20 + 4*binary.MaxVarintLen32 + len(e.Gateway) + len(e.Conn) + len(e.Addr) + len(e.UID) + len(e.Frame)
}

// DecodeEnvelope parses b. Frame aliases b.
func DecodeEnvelope(b []byte) (Envelope, error) { return decodeEnvelopeAfter(b, nil) }

// decodeEnvelopeAfter is DecodeEnvelope for an envelope of a bundle,
// after prev (the one before it, decoded; nil for the first): it takes the
// strings an envelopeInBundle leaves out from prev, and reuses prev's
// where they are equal, which saves allocations.
func decodeEnvelopeAfter(b []byte, prev *Envelope) (Envelope, error) {
	var e Envelope
	if len(b) >= 2 && b[0] == envelopeInBundle && prev == nil {
		return e, fmt.Errorf("%w: an envelope of a bundle, without the one before it", ErrBadEnvelope)
	}
	if len(b) < 2 || (b[0] != envelopeVersion && b[0] != envelopeInBundle) {
		return e, fmt.Errorf("%w: version", ErrBadEnvelope)
	}
	e.Kind = Kind(b[1])
	var same byte
	if b[0] == envelopeInBundle {
		if len(b) < 3 || b[2]&^(sameGateway|sameConn|sameAddr|sameUID) != 0 {
			return e, fmt.Errorf("%w: flags", ErrBadEnvelope)
		}
		same = b[2]
		b = b[1:]
	}
	b = b[2:]
	var n int
	e.Seq, n = binary.Uvarint(b)
	if n <= 0 {
		return e, fmt.Errorf("%w: seq", ErrBadEnvelope)
	}
	b = b[n:]
	at, n := binary.Uvarint(b)
	if n <= 0 {
		return e, fmt.Errorf("%w: time", ErrBadEnvelope)
	}
	e.At = int64(at)
	b = b[n:]
	var err error
	if prev == nil {
		prev = &Envelope{}
	}
	for _, f := range []struct {
		flag byte
		dst  *string
		prev string
	}{{sameGateway, &e.Gateway, prev.Gateway}, {sameConn, &e.Conn, prev.Conn}, {sameAddr, &e.Addr, prev.Addr}, {sameUID, &e.UID, prev.UID}} {
		if same&f.flag != 0 {
			*f.dst = f.prev
		} else if *f.dst, b, err = readStringLike(b, f.prev); err != nil {
			return e, err
		}
	}
	if len(b) > 0 {
		e.Frame = b
	}
	return e, nil
}

// StandaloneEnvelope returns an envelope of a bundle encoded on its own
// (a dead letter is stored alone): raw itself, or d's envelope encoded
// again when raw left out what it shared with the envelope before it. An
// envelope that could not be decoded (Kind 0) keeps its raw bytes, for
// the operator to see.
func StandaloneEnvelope(raw []byte, env *Envelope) []byte {
	if len(raw) > 0 && raw[0] == envelopeInBundle && env.Kind != 0 {
		return AppendEnvelope(nil, env)
	}
	return raw
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// readStringLike is readString returning like itself when the bytes are
// equal to it, which saves an allocation.
func readStringLike(b []byte, like string) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, fmt.Errorf("%w: string", ErrBadEnvelope)
	}
	v := b[k : k+int(n)]
	if string(v) == like { // compiles to a comparison, no allocation
		return like, b[k+int(n):], nil
	}
	return string(v), b[k+int(n):], nil
}

func readString(b []byte) (string, []byte, error) { return readStringLike(b, "") }
