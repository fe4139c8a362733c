package worker

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

// TestPartitionTable: a partition being given back is read no more, and
// its release waits for the reads of it in progress.
func TestPartitionTable(t *testing.T) {
	tb := newPartitionTable()
	tb.add(1)
	tb.add(2)
	tb.add(3)
	parts, done := tb.startRead([]int{1, 2, 4})
	if fmt.Sprint(parts) != "[1 2]" {
		t.Fatalf("startRead = %v, want [1 2]", parts)
	}
	l := tb.giveBack(2)
	if l == nil || tb.giveBack(2) != nil {
		t.Fatal("giveBack: want the lease once")
	}
	got := tb.active()
	slices.Sort(got)
	if fmt.Sprint(got) != "[1 3]" {
		t.Errorf("active = %v, want [1 3]", got)
	}
	if again, d2 := tb.startRead([]int{2, 3}); fmt.Sprint(again) != "[3]" {
		t.Errorf("startRead of a partition going back = %v, want [3]", again)
	} else {
		d2()
	}
	reads, stop := waiting(func(ctx context.Context) bool { return tb.waitReads(ctx, l) })
	isBlocked(t, "waitReads during a read", reads)
	done()
	returns(t, "waitReads", reads, true)
	stop()
	tb.remove(2, l)
	if lost := tb.notHeld([]int{1, 2}); fmt.Sprint(lost) != "[2]" {
		t.Errorf("notHeld = %v, want [2]", lost)
	}
}
