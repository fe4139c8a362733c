package store

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// IsTransient reports whether err may go away by retrying: the network or
// Redis failing over or loading, as opposed to a command the server
// rejects (too big, out of memory, wrong type...) or a game's own error.
// Gateways and workers retry transient failures and never retry the
// others: a write Redis refuses for its content is refused again.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		return redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "MASTERDOWN") ||
			redis.HasErrorPrefix(err, "TRYAGAIN") || redis.HasErrorPrefix(err, "CLUSTERDOWN") ||
			redis.HasErrorPrefix(err, "READONLY")
	}
	return false
}

// IsRefused reports whether Redis refused a command for what it carries
// (an error reply other than the transient ones: out of memory, a wrong
// type, a protocol error for an oversized argument...). Retrying it would
// be refused again; its data must be answered or dropped, never retried
// forever.
func IsRefused(err error) bool {
	var re redis.Error
	return err != nil && errors.As(err, &re) && !IsTransient(err)
}

// IsNoPermission reports whether Redis refused a command, key or channel
// because the user's ACL does not allow it (a NOPERM reply).
func IsNoPermission(err error) bool { return redis.HasErrorPrefix(err, "NOPERM") }

// PermissionError says in one line that the Redis user lacks a permission,
// in Redis's words, when err is a NOPERM refusal; other errors pass
// unchanged.
func PermissionError(err error) error {
	if !IsNoPermission(err) {
		return err
	}
	return fmt.Errorf("redis user lacks permission: %w; see docs/security.md", err)
}
