package queue

import (
	"encoding/binary"
	"fmt"
)

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
