// Package retry is how the farm's processes go through a Redis outage: one
// notion of a transient error (IsTransient: the network, a failover, a
// server loading its data) as opposed to a refusal (IsRefused: Redis will
// refuse the same command again), and one backoff (Backoff) for every
// loop that tries again: the gateway's pusher and outbound reader, the
// worker's reader, writer, handler reruns and dead letters.
package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backoff is the wait between two tries of a failing Redis call: Min at
// first, doubling after each wait, at most Max. Reset after a success.
// A Backoff is owned by the one loop that uses it.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// New returns a Backoff from min to max.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Delay is how long the next Wait waits.
func (b *Backoff) Delay() time.Duration {
	if b.cur < b.Min {
		return b.Min
	}
	return b.cur
}

// Wait waits Delay, or until ctx ends, and doubles the delay (up to Max)
// for the next time. It reports whether ctx is still live.
func (b *Backoff) Wait(ctx context.Context) bool {
	d := b.Delay()
	b.cur = min(2*d, b.Max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset starts the delays again from Min.
func (b *Backoff) Reset() { b.cur = 0 }

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
