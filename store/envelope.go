package store

import (
	"bytes"
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

// AppendEnvelopeBundle is AppendBundle for encoded envelopes (as
// AppendEnvelope writes them): each after the first leaves out the strings
// it shares with the one before (envelopeInBundle), so a bundle pays for
// its gateway's id once, and for a connection's id, address and user id
// once per run of its envelopes. BundleSize(envs) bounds its size.
func AppendEnvelopeBundle(dst []byte, envs [][]byte) []byte {
	var prev [4][]byte
	for i, e := range envs {
		strs, head, rest, ok := envelopeParts(e)
		if i == 0 || !ok {
			dst = binary.AppendUvarint(dst, uint64(len(e)))
			dst = append(dst, e...)
			prev = strs
			continue
		}
		var same byte
		n := 2 + len(head) + len(rest) // version and flags; head holds the kind
		for k, s := range strs {
			if bytes.Equal(s, prev[k]) {
				same |= 1 << k
			} else {
				n += uvarintLen(uint64(len(s))) + len(s)
			}
		}
		dst = binary.AppendUvarint(dst, uint64(n))
		dst = append(dst, envelopeInBundle, head[0], same)
		dst = append(dst, head[1:]...)
		for k, s := range strs {
			if same&(1<<k) == 0 {
				dst = appendString(dst, string(s))
			}
		}
		dst = append(dst, rest...)
		prev = strs
	}
	return dst
}

// envelopeParts cuts an encoded envelope (envelopeVersion) into its four
// strings, what comes before them after the version byte (kind, sequence
// number, time) and the frame after them.
func envelopeParts(e []byte) (strs [4][]byte, head, rest []byte, ok bool) {
	if len(e) < 2 || e[0] != envelopeVersion {
		return strs, nil, nil, false
	}
	b := e[2:]
	for range 2 { // seq, at
		_, n := binary.Uvarint(b)
		if n <= 0 {
			return strs, nil, nil, false
		}
		b = b[n:]
	}
	head = e[1 : len(e)-len(b)]
	for k := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return strs, nil, nil, false
		}
		strs[k], b = b[n:n+int(l)], b[n+int(l):]
	}
	return strs, head, b, true
}

// DecodeBundle decodes every envelope of a gateway's bundle (tools and
// tests; the workers' reads decode bundles as they go).
func DecodeBundle(b []byte) ([]Envelope, error) {
	raws, err := SplitBundle(b)
	if err != nil {
		return nil, err
	}
	out := make([]Envelope, len(raws))
	for i, raw := range raws {
		var prev *Envelope
		if i > 0 {
			prev = &out[i-1]
		}
		if out[i], err = decodeEnvelopeAfter(raw, prev); err != nil {
			return nil, err
		}
	}
	return out, nil
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
