// Package ratelog keeps logs readable when one client repeats a mistake
// thousands of times a second: each cause (a bad frame, a panicking route,
// a slow client...) is logged in full for its first few occurrences, then
// at most once per interval, and what was left out is summed up in an
// "N more" line. Counting every occurrence is the metrics' job; this is
// only about log volume, which a hostile client must not control.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults of a Limiter.
const (
	DefaultBurst = 5
	DefaultEvery = 5 * time.Second
	// maxCauses bounds the causes tracked; past it, new causes share one
	// budget, so a client cannot grow the map (causes are chosen by the
	// caller, like "bad frame" or "panic cmd=8").
	maxCauses = 1024
	overflow  = "(other causes)"
)

// Limiter rate-limits log lines per cause. The zero value is not usable;
// call New. It is safe for concurrent use.
type Limiter struct {
	log   *slog.Logger
	burst int
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	causes map[string]*cause
}

type cause struct {
	window     time.Time // start of the current interval
	inWindow   int       // lines logged in it
	suppressed int       // occurrences left out since the last line
	level      slog.Level
	msg        string
	flushing   bool // a summary is scheduled
}

// New returns a limiter that logs each cause's first burst occurrences of
// an interval every long, and one summary line for the rest.
func New(log *slog.Logger, burst int, every time.Duration) *Limiter {
	if burst <= 0 {
		burst = DefaultBurst
	}
	if every <= 0 {
		every = DefaultEvery
	}
	return &Limiter{log: log, burst: burst, every: every, now: time.Now, causes: make(map[string]*cause)}
}

// Warn logs msg at warn level for cause, unless cause used its share.
func (l *Limiter) Warn(cause, msg string, args ...any) bool {
	return l.Log(slog.LevelWarn, cause, msg, args...)
}

// Error logs msg at error level for cause, unless cause used its share.
func (l *Limiter) Error(cause, msg string, args ...any) bool {
	return l.Log(slog.LevelError, cause, msg, args...)
}

// Log logs msg with args for cause at level if the cause has lines left
// in this interval, and reports whether it did. A line logged after some
// were left out carries "suppressed": how many. Left-out occurrences with
// nothing after them are summed up one interval later.
func (l *Limiter) Log(level slog.Level, causeKey, msg string, args ...any) bool {
	if !l.log.Enabled(context.Background(), level) {
		return false
	}
	now := l.now()
	l.mu.Lock()
	c := l.causes[causeKey]
	if c == nil {
		if len(l.causes) >= maxCauses {
			causeKey = overflow
			c = l.causes[causeKey]
		}
		if c == nil {
			c = &cause{window: now}
			l.causes[causeKey] = c
		}
	}
	if now.Sub(c.window) >= l.every && !c.flushing {
		// (With a summary pending, the summary starts the next interval.)
		c.window, c.inWindow = now, 0
	}
	if c.inWindow >= l.burst {
		c.suppressed++
		c.level, c.msg = level, msg
		if !c.flushing {
			c.flushing = true
			time.AfterFunc(l.every-now.Sub(c.window), func() { l.flush(causeKey) })
		}
		l.mu.Unlock()
		return false
	}
	c.inWindow++
	n := c.suppressed
	c.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
	return true
}

// flush writes the summary of a cause's left-out occurrences, if any are
// still unreported.
func (l *Limiter) flush(causeKey string) {
	l.mu.Lock()
	c := l.causes[causeKey]
	if c == nil {
		l.mu.Unlock()
		return
	}
	c.flushing = false
	n, level, msg := c.suppressed, c.level, c.msg
	c.suppressed = 0
	if n == 0 {
		// Nothing since: forget the cause, so the map holds only the
		// causes that are active.
		if l.now().Sub(c.window) >= l.every {
			delete(l.causes, causeKey)
		}
		l.mu.Unlock()
		return
	}
	// A new interval starts with the summary; one more full line may
	// follow in it (a flood shows a sample now and then).
	c.window, c.inWindow = l.now(), l.burst-1
	c.flushing = true
	l.mu.Unlock()
	time.AfterFunc(l.every, func() { l.flush(causeKey) })
	l.log.Log(context.Background(), level, msg+" (repeated; details left out)", "cause", causeKey, "more", n, "within", l.every.String())
}
