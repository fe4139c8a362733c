package abuse

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/maple-farm/maple/box"
)

// The steady player's frames.
const (
	steadyCmd  int32 = 1  // echo
	steadyBody       = 32 // bytes: 4 of sn, 4 of a per-player tag, the rest a pattern
)

// readMax is the largest frame the suite's readers decode. It is far above
// any --max-frame, so that a frame the farm should never have sent (a push
// over --max-frame) is seen and counted rather than cutting the connection
// on the client's side.
const readMax = 64 << 20

// SteadyStats is what the steady player saw in one window.
type SteadyStats struct {
	Dur      time.Duration // length of the window
	Requests int64         // replies with the right sn, whatever their ret
	// Latencies of those replies, from just before the write to the
	// decoding of the reply; Max also counts a request left unanswered at
	// the end (its age then).
	P50, P99, Max time.Duration

	Wrong       int64 // replies with the right sn but a wrong cmd or body, or an sn not in flight
	Busy        int64 // ret -10002
	Failed      int64 // any other ret != 0
	Disconnects int64 // the connection broke (the player dials again)
	Redials     int64 // dials that failed after a disconnect
	Unanswered  int64 // a request still unanswered a second after the window ended
	Pushes      int64 // frames with sn 0 (nobody pushes to the steady player in the suite)
	Oversized   int64 // frames over box.DefaultMaxFrame: a real client would have hung up
}

// Errors is the number of every kind of error.
func (s SteadyStats) Errors() int64 {
	return s.Wrong + s.Busy + s.Failed + s.Disconnects + s.Redials + s.Unanswered + s.Oversized
}

// ErrorString names each kind that occurred ("0" when none).
func (s SteadyStats) ErrorString() string {
	var parts []string
	add := func(n int64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(s.Wrong, "wrong")
	add(s.Busy, "-10002")
	add(s.Failed, "ret!=0")
	add(s.Disconnects, "disconnect")
	add(s.Redials, "redial-failed")
	add(s.Unanswered, "unanswered")
	add(s.Oversized, "oversized")
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}

// DefaultSteadyGap is the steady player's pause between a reply and its
// next request: about 200 requests a second, a busy game client. Its own
// traffic then costs Redis about 0.3 MiB/s (≈1.4 KB per request), small
// next to the 1 MiB slack of the Redis target, so the share of it
// subtracted from the bytes into Redis is small too, and so is its error.
const DefaultSteadyGap = 5 * time.Millisecond

// Steady is the steady player: one TCP connection, one echo (cmd 1, a
// 32-byte body checked on return) in flight at all times but a gap (see
// StartSteady) between a reply and the next request, for as long as it
// runs. When the connection breaks it counts a disconnect and dials again,
// as a game client would.
type Steady struct {
	addr string
	tag  uint32
	gap  time.Duration
	done chan struct{}

	mu       sync.Mutex
	nc       net.Conn
	stopping bool
	inflight time.Time // when the request in flight was written; zero if none
	win      SteadyStats
	winStart time.Time
	lat      []time.Duration
}

// StartSteady dials addr and starts playing, pausing gap between a reply
// and the next request (0: back to back).
func StartSteady(addr string, gap time.Duration) (*Steady, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("steady player: %w", err)
	}
	s := &Steady{addr: addr, tag: rand.Uint32(), gap: gap, done: make(chan struct{}), nc: nc, winStart: time.Now()}
	go s.run(nc)
	return s, nil
}

// Reset ends the current window and starts a new one; it returns the
// stats of the window that ended.
func (s *Steady) Reset() SteadyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.statsLocked(time.Now())
	s.win, s.lat, s.winStart = SteadyStats{}, nil, time.Now()
	return st
}

// Requests is the number of replies in the current window so far.
func (s *Steady) Requests() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.win.Requests
}

// Stop stops sending, gives the request in flight a second to be answered
// (else it counts as unanswered, its age as a latency), closes the
// connection and returns the last window's stats.
func (s *Steady) Stop() SteadyStats {
	end := time.Now()
	s.mu.Lock()
	s.stopping = true
	if s.nc != nil {
		_ = s.nc.SetDeadline(end.Add(time.Second))
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(3 * time.Second): // a dial in progress
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil {
		s.nc.Close()
		s.nc = nil
	}
	if !s.inflight.IsZero() { // only if run did not finish (it clears it)
		s.win.Unanswered++
		s.lat = append(s.lat, time.Since(s.inflight))
		s.inflight = time.Time{}
	}
	return s.statsLocked(end)
}

func (s *Steady) statsLocked(end time.Time) SteadyStats {
	st := s.win
	st.Dur = end.Sub(s.winStart)
	if len(s.lat) > 0 {
		l := slices.Clone(s.lat)
		slices.Sort(l)
		st.P50, st.P99, st.Max = quantile(l, 0.50), quantile(l, 0.99), l[len(l)-1]
	}
	return st
}

func (s *Steady) count(f func(*SteadyStats)) {
	s.mu.Lock()
	f(&s.win)
	s.mu.Unlock()
}

func (s *Steady) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// run is the player's loop; nc is its first connection.
func (s *Steady) run(nc net.Conn) {
	defer close(s.done)
	var (
		sn   uint32
		body = make([]byte, steadyBody)
		want = make([]byte, steadyBody)
		wbuf []byte
		r    = box.NewReader(nc, readMax)
	)
	for i := 8; i < steadyBody; i++ {
		body[i] = byte('a' + i%26)
	}
	binary.BigEndian.PutUint32(body[4:8], s.tag)
	hangUp := func() {
		nc.Close()
		nc = nil
		s.mu.Lock()
		s.nc, s.inflight = nil, time.Time{}
		s.mu.Unlock()
	}
	for !s.isStopping() {
		if nc == nil {
			time.Sleep(50 * time.Millisecond)
			c, err := net.DialTimeout("tcp", s.addr, time.Second)
			if err != nil {
				s.count(func(w *SteadyStats) { w.Redials++ })
				continue
			}
			s.mu.Lock()
			if s.stopping {
				s.mu.Unlock()
				c.Close()
				return
			}
			nc, s.nc = c, c
			s.mu.Unlock()
			r = box.NewReader(nc, readMax)
		}
		sn++
		if sn == 0 {
			sn = 1
		}
		binary.BigEndian.PutUint32(body[0:4], sn)
		copy(want, body)
		wbuf = box.Append(wbuf[:0], steadyCmd, 0, sn, body)
		start := time.Now()
		s.mu.Lock()
		s.inflight = start
		s.mu.Unlock()
		if _, err := nc.Write(wbuf); err != nil {
			if s.isStopping() {
				return // Stop counts what is in flight
			}
			s.count(func(w *SteadyStats) { w.Disconnects++ })
			hangUp()
			continue
		}
		for {
			b, err := r.Next()
			if err != nil {
				if s.isStopping() {
					return // Stop counts what is in flight
				}
				s.count(func(w *SteadyStats) { w.Disconnects++ })
				hangUp()
				break
			}
			d := time.Since(start)
			if int(b.Len) > box.DefaultMaxFrame {
				s.count(func(w *SteadyStats) { w.Oversized++ })
			}
			if b.SN == 0 {
				s.count(func(w *SteadyStats) { w.Pushes++ })
				continue
			}
			s.mu.Lock()
			switch {
			case b.SN != sn:
				s.win.Wrong++
				s.mu.Unlock()
				continue // not ours: keep waiting for our reply
			case b.Ret == box.RetBusy:
				s.win.Busy++
			case b.Ret != box.RetOK:
				s.win.Failed++
			case b.Cmd != steadyCmd || string(b.Body) != string(want):
				s.win.Wrong++
			}
			s.win.Requests++
			s.lat = append(s.lat, d)
			s.inflight = time.Time{}
			s.mu.Unlock()
			break
		}
		if s.gap > 0 {
			time.Sleep(s.gap)
		}
	}
}

// NoiseStats is what a noise probe saw (see Probe).
type NoiseStats struct {
	Sleep         time.Duration // the probe's sleep between wakes
	Samples       int
	P50, P99, Max time.Duration // how late its wakes were
}

// Probe measures the machine's noise as this process sees it: a goroutine
// sleeps again and again and records how late it wakes, that is how long
// a goroutine that became runnable waited for a CPU (the Go scheduler's
// and the kernel's run queues). It goes through no part of the farm, so a
// farm that makes the steady player wait behind an attacker does not
// make it late; an attack, or anything else on the machine, that keeps
// the cores busy does.
type Probe struct {
	sleep time.Duration
	stop  chan struct{}
	done  chan struct{}
	late  []time.Duration
}

// StartProbe starts a noise probe that sleeps sleep between wakes. Run
// gives it the steady player's gap: it then wakes about as often as the
// steady player sends, so that its p99 and the steady player's are over
// as many moments of the same window.
func StartProbe(sleep time.Duration) *Probe {
	p := &Probe{sleep: sleep, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTimer(sleep)
		defer t.Stop()
		for {
			at := time.Now()
			t.Reset(sleep)
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.late = append(p.late, max(0, time.Since(at)-p.sleep))
			}
		}
	}()
	return p
}

// Stop stops the probe and returns what it saw.
func (p *Probe) Stop() NoiseStats {
	close(p.stop)
	<-p.done
	n := NoiseStats{Sleep: p.sleep, Samples: len(p.late)}
	if n.Samples == 0 {
		return n
	}
	l := slices.Clone(p.late)
	slices.Sort(l)
	n.P50, n.P99, n.Max = quantile(l, 0.50), quantile(l, 0.99), l[len(l)-1]
	return n
}

// quantile is the q-quantile of sorted, which is not empty: the smallest
// value at least a fraction q of them do not exceed.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
