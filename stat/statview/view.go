// Package statview is the viewer of `maple stat`: it reads the reports
// that every gateway and worker of a farm writes to Redis every second
// (package stat) and prints the whole farm as a table, live or once, or as
// JSON lines, with per-second rates and latency quantiles computed from
// successive reports.
package statview

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/stat"
)

// Options say what Run shows and where.
type Options struct {
	Prefix   string        // the farm's key prefix ("" means "maple")
	Out      io.Writer     // where the table or JSON goes
	JSON     bool          // one JSON object per snapshot and line instead of a table
	Once     bool          // one snapshot (two reads 1 s apart, for the rates), then return
	Interval time.Duration // time between snapshots when live (at least 100 ms)
}

// Run prints the farm's reports until ctx ends, or once (Options.Once). A
// live table on a terminal redraws in place.
func Run(ctx context.Context, rdb redis.UniversalClient, o Options) error {
	s := &statRunner{
		rdb: rdb, prefix: o.Prefix, out: o.Out, json: o.JSON,
		interval: max(o.Interval, 100*time.Millisecond), rates: newRateTracker(),
	}
	if o.Once {
		return s.once(ctx)
	}
	s.clear = statIsTTY(o.Out)
	return s.live(ctx)
}

// statRunner reads the farm's reports and prints them.
type statRunner struct {
	rdb      redis.UniversalClient
	prefix   string
	out      io.Writer
	json     bool
	clear    bool // clear the screen before each table: stdout is a terminal
	interval time.Duration
	rates    *rateTracker
}

// once prints one snapshot. Rates need two reports of each process: it
// reads again after a second, and a little longer for processes whose
// report had not changed yet (up to 3 s in all).
func (s *statRunner) once(ctx context.Context) error {
	rs, err := stat.Read(ctx, s.rdb, s.prefix)
	if err != nil {
		return err
	}
	s.rates.update(rs)
	if len(rs) > 0 {
		deadline := time.Now().Add(3 * time.Second)
		wait := time.Second
		for {
			if err := statSleep(ctx, wait); err != nil {
				return err
			}
			if rs, err = stat.Read(ctx, s.rdb, s.prefix); err != nil {
				return err
			}
			s.rates.update(rs)
			if s.rates.complete(rs) || time.Now().After(deadline) {
				break
			}
			wait = 200 * time.Millisecond
		}
	}
	return s.print(buildStatView(s.prefix, time.Now(), rs, s.rates))
}

// live prints a snapshot every interval until ctx ends.
func (s *statRunner) live(ctx context.Context) error {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		rs, err := stat.Read(ctx, s.rdb, s.prefix)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fmt.Fprintf(s.out, "maple stat: %v (retrying)\n", err)
		} else {
			s.rates.update(rs)
			if err := s.print(buildStatView(s.prefix, time.Now(), rs, s.rates)); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *statRunner) print(v farmView) error {
	if s.json {
		return writeStatJSON(s.out, v)
	}
	if s.clear {
		fmt.Fprint(s.out, "\x1b[H\x1b[2J") // cursor home, clear screen
	}
	writeStatTable(s.out, v)
	if !s.clear {
		fmt.Fprintln(s.out)
	}
	return nil
}

func statSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// statIsTTY reports whether w is a terminal (a character device).
func statIsTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// rateTracker turns successive reports into per-second rates of the
// counters (fields ending in "_total") and latency quantiles of the
// histograms (fields ending in "_buckets"). Both cover the window between
// a process's two last distinct reports (about a second: the reporters'
// interval), timed by the process's own clock, so when `maple stat` reads
// does not matter.
type rateTracker struct {
	last   map[string]stat.Report
	rates  map[string]map[string]float64
	quants map[string]map[string]float64
}

func newRateTracker() *rateTracker {
	return &rateTracker{last: make(map[string]stat.Report), rates: make(map[string]map[string]float64),
		quants: make(map[string]map[string]float64)}
}

func statKey(r stat.Report) string { return r.Kind + "/" + r.ID }

// update takes a new read of every report; processes gone are forgotten.
func (t *rateTracker) update(rs []stat.Report) {
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		k := statKey(r)
		seen[k] = true
		prev, ok := t.last[k]
		switch {
		case !ok || prev.PID != r.PID || prev.Host != r.Host || !prev.Started.Equal(r.Started):
			delete(t.rates, k) // new, or restarted under the same id: counters began again
			delete(t.quants, k)
		case r.Time.After(prev.Time):
			t.rates[k] = statCounterRates(prev, r)
			t.quants[k] = statWindowQuantiles(prev, r)
		default:
			continue // not reported again yet: keep the last rates
		}
		t.last[k] = r
	}
	for k := range t.last {
		if !seen[k] {
			delete(t.last, k)
			delete(t.rates, k)
			delete(t.quants, k)
		}
	}
}

// complete reports whether every process of rs has rates.
func (t *rateTracker) complete(rs []stat.Report) bool {
	for _, r := range rs {
		if t.rates[statKey(r)] == nil {
			return false
		}
	}
	return true
}

// of returns a process's rates; nil until two reports were seen.
func (t *rateTracker) of(r stat.Report) map[string]float64 { return t.rates[statKey(r)] }

// quantilesOf returns a process's quantile estimates over the window of
// its rates: <histogram>_p50 and _p99, in seconds, of each histogram that
// observed something in the window. nil until two reports were seen.
func (t *rateTracker) quantilesOf(r stat.Report) map[string]float64 { return t.quants[statKey(r)] }

// statWindowQuantiles estimates the median and 99th percentile of what
// each histogram of cur observed since prev.
func statWindowQuantiles(prev, cur stat.Report) map[string]float64 {
	out := make(map[string]float64)
	for f := range cur.Fields {
		name, ok := strings.CutSuffix(f, "_buckets")
		if !ok {
			continue
		}
		now, ok1 := cur.Dist(name)
		before, ok2 := prev.Dist(name)
		if !ok1 || !ok2 {
			continue
		}
		if w := now.Sub(before); w.Count > 0 {
			out[name+"_p50"] = w.Quantile(0.5)
			out[name+"_p99"] = w.Quantile(0.99)
		}
	}
	return out
}

func statCounterRates(prev, cur stat.Report) map[string]float64 {
	secs := cur.Time.Sub(prev.Time).Seconds()
	out := make(map[string]float64)
	for f := range cur.Fields {
		if !strings.HasSuffix(f, "_total") {
			continue
		}
		d := cur.Int(f) - prev.Int(f)
		out[f] = max(float64(d), 0) / secs
	}
	return out
}
