package store

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest user id, group name or counter name the farm
// takes, in bytes. A name travels in key names and, for a user id, in every
// envelope of a logged-in connection: bounding it bounds what one client
// can make the farm write to Redis per frame.
const MaxNameLen = 128

// ErrNameTooLong reports a name over MaxNameLen.
var ErrNameTooLong = fmt.Errorf("store: name longer than %d bytes", MaxNameLen)

// ErrNameBraces reports a name with a brace. A name sits inside its key's
// hash tag ("{u:<uid>}"): a brace in it would end the tag early and move
// the key to another name's slot ("x}{evil" would land in user x's).
var ErrNameBraces = errors.New("store: name with { or }")

// CheckName returns an error naming what (like "user id") if name cannot
// go into a key: longer than MaxNameLen, or with a brace.
func CheckName(what, name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s of %d bytes", ErrNameTooLong, what, len(name))
	}
	if strings.ContainsAny(name, "{}") {
		return fmt.Errorf("%w: %s %q", ErrNameBraces, what, name)
	}
	return nil
}
