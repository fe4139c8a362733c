package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/store/storetest"
)

func TestFloodIsSummed(t *testing.T) {
	var buf storetest.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 3, 100*time.Millisecond)
	logged := 0
	for i := 0; i < 10000; i++ {
		if l.Warn("bad frame", "bad frame: closing connection", "i", i) {
			logged++
		}
	}
	if logged != 3 {
		t.Fatalf("logged %d lines of 10000 in one interval, want the burst of 3", logged)
	}
	// The other 9997 are summed up once the interval is over.
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(buf.String(), "more=9997") {
		if time.Now().After(deadline) {
			t.Fatalf("no summary line:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Another cause has its own budget.
	if !l.Warn("slow client", "client does not read") {
		t.Fatal("a second cause was limited by the first")
	}
}

func TestSteadyFloodStaysBounded(t *testing.T) {
	var buf storetest.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 2, 50*time.Millisecond)
	end := time.Now().Add(520 * time.Millisecond)
	n := 0
	for time.Now().Before(end) {
		l.Error("panic cmd=8", "handler panicked", "stack", strings.Repeat("x", 1000))
		n++
	}
	time.Sleep(120 * time.Millisecond)
	lines := strings.Count(buf.String(), "\n")
	// About 10 intervals: the first burst, then a summary and one sample
	// per interval.
	if lines > 2+2*12 {
		t.Fatalf("%d lines for %d occurrences in ~10 intervals", lines, n)
	}
	if !strings.Contains(buf.String(), "more=") {
		t.Fatal("no summary line")
	}
}

func TestCausesAreBounded(t *testing.T) {
	l := New(slog.New(slog.DiscardHandler), 1, time.Hour)
	for i := 0; i < 5000; i++ {
		l.Warn(strings.Repeat("c", i%3000+1), "m")
	}
	l.mu.Lock()
	n := len(l.causes)
	l.mu.Unlock()
	if n > maxCauses+1 {
		t.Fatalf("%d causes tracked", n)
	}
}

func TestDisabledLevelCostsNothing(t *testing.T) {
	l := New(slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError})), 1, time.Hour)
	if l.Warn("x", "m") {
		t.Fatal("logged below the handler's level")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.causes) != 0 {
		t.Fatal("tracked a cause that is never logged")
	}
}
