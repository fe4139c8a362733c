package queue

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

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
