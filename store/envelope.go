package store

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

// decodeEnvelopeAfter is DecodeEnvelope reusing the strings of prev (the
// envelope before it in a bundle) where they are equal: a bundle's
// envelopes share their gateway and often their connection.
func decodeEnvelopeAfter(b []byte, prev *Envelope) (Envelope, error) {
	var e Envelope
	if len(b) < 2 || b[0] != envelopeVersion {
		return e, fmt.Errorf("%w: version", ErrBadEnvelope)
	}
	e.Kind = Kind(b[1])
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
	if e.Gateway, b, err = readStringLike(b, prev.Gateway); err != nil {
		return e, err
	}
	if e.Conn, b, err = readStringLike(b, prev.Conn); err != nil {
		return e, err
	}
	if e.Addr, b, err = readStringLike(b, prev.Addr); err != nil {
		return e, err
	}
	if e.UID, b, err = readStringLike(b, prev.UID); err != nil {
		return e, err
	}
	if len(b) > 0 {
		e.Frame = b
	}
	return e, nil
}

// AppendBundle encodes envs, each an encoded envelope, onto dst as one
// bundle: a gateway queues all the envelopes of one round trip for one
// partition as a single stream entry (field "b"), so Redis and the workers
// pay per round trip rather than per frame.
func AppendBundle(dst []byte, envs [][]byte) []byte {
	for _, e := range envs {
		dst = binary.AppendUvarint(dst, uint64(len(e)))
		dst = append(dst, e...)
	}
	return dst
}

// BundleSize is the encoded size of the bundle of envs.
func BundleSize(envs [][]byte) int {
	n := 0
	for _, e := range envs {
		n += uvarintLen(uint64(len(e))) + len(e)
	}
	return n
}

// SplitBundle returns the encoded envelopes of bundle b, aliasing b. It
// takes only what AppendBundle writes (minimal length prefixes, no empty
// envelope), so that a bundle has one encoding.
func SplitBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		item, rest, err := CutBundle(b)
		if err != nil {
			return nil, err
		}
		out = append(out, item)
		b = rest
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty bundle", ErrBadEnvelope)
	}
	return out, nil
}

// CutBundle returns the first item of bundle b and the rest, aliasing b,
// for walking a bundle without a slice of its items.
func CutBundle(b []byte) (item, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || k != uvarintLen(n) || uint64(len(b)-k) < n || n == 0 {
		return nil, nil, fmt.Errorf("%w: bundle", ErrBadEnvelope)
	}
	return b[k : k+int(n) : k+int(n)], b[k+int(n):], nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// OutKind says what an outbound message asks a gateway to do.
type OutKind byte

// Outbound message kinds.
const (
	OutWrite     OutKind = 1 // write Frames to connection Conn
	OutClose     OutKind = 2 // close connection Conn after writing what is queued
	OutBind      OutKind = 3 // connection Conn is now logged in as UID
	OutUnbind    OutKind = 4 // connection Conn is logged out
	OutBroadcast OutKind = 5 // write Frames to every connection of the gateway
	// OutBatch carries many messages, in order: Frames is their bundle
	// (AppendBundle). A worker sends a gateway one per write, so the
	// gateway takes hundreds of messages as one list element.
	OutBatch OutKind = 6
)

// Out is a message from the workers to one gateway, popped from its
// Outbound list.
type Out struct {
	Kind   OutKind
	Conn   string
	UID    string
	At     int64  // for a reply: the request's Envelope.At, to time the round trip
	Frames []byte // zero or more whole Box frames, back to back
}

// AppendOut encodes m onto dst.
func AppendOut(dst []byte, m *Out) []byte {
	dst = append(dst, envelopeVersion, byte(m.Kind))
	dst = appendString(dst, m.Conn)
	dst = appendString(dst, m.UID)
	dst = binary.AppendUvarint(dst, uint64(m.At))
	return append(dst, m.Frames...)
}

// AppendOutBatch encodes msgs (encoded Out messages) onto dst as one
// OutBatch message.
func AppendOutBatch(dst []byte, msgs [][]byte) []byte {
	dst = append(dst, envelopeVersion, byte(OutBatch), 0, 0, 0) // no conn, uid or time
	return AppendBundle(dst, msgs)
}

// OutBatchSize is the encoded size of the OutBatch of msgs.
func OutBatchSize(msgs [][]byte) int { return 5 + BundleSize(msgs) }

// OutSize is the encoded size of m.
func OutSize(m *Out) int {
	return 2 + uvarintLen(uint64(len(m.Conn))) + len(m.Conn) + uvarintLen(uint64(len(m.UID))) + len(m.UID) +
		uvarintLen(uint64(m.At)) + len(m.Frames)
}

// DecodeOut parses b. Frames aliases b.
func DecodeOut(b []byte) (Out, error) {
	var m Out
	if len(b) < 2 || b[0] != envelopeVersion {
		return m, fmt.Errorf("%w: out version", ErrBadEnvelope)
	}
	m.Kind = OutKind(b[1])
	b = b[2:]
	var err error
	if m.Conn, b, err = readString(b); err != nil {
		return m, err
	}
	if m.UID, b, err = readString(b); err != nil {
		return m, err
	}
	at, n := binary.Uvarint(b)
	if n <= 0 {
		return m, fmt.Errorf("%w: out time", ErrBadEnvelope)
	}
	m.At = int64(at)
	b = b[n:]
	if len(b) > 0 {
		m.Frames = b
	}
	return m, nil
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
