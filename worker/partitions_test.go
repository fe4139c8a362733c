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

// TestInterimReads: a partition just taken is read by interim reads until
// the main reads adopt it; adopting waits for the interim read in
// progress, and no interim read starts after it, so no two reads of it
// ever overlap.
func TestInterimReads(t *testing.T) {
	tb := newPartitionTable()
	tb.add(1)
	l := tb.addOpening(2)
	if parts, done := tb.startRead([]int{1, 2}); fmt.Sprint(parts) != "[1]" {
		t.Errorf("startRead while 2 is opening = %v, want [1]", parts)
	} else {
		done()
	}
	tb.open(l, true)
	ok, interimDone := tb.startInterim(2, l)
	if !ok {
		t.Fatal("no interim read of a partition just opened")
	}
	if parts, done := tb.startRead([]int{1, 2}); fmt.Sprint(parts) != "[1]" {
		t.Errorf("startRead during an interim read = %v, want [1]", parts)
	} else {
		done()
	}
	wait := tb.adopt([]int{1, 2})
	if wait == nil {
		t.Fatal("adopt during an interim read: nothing to wait for")
	}
	select {
	case <-wait:
		t.Fatal("adopt's wait ended before the interim read")
	default:
	}
	interimDone()
	<-wait
	if tb.adopt([]int{1, 2}) != nil {
		t.Error("adopt waits again after the last interim read ended")
	}
	if ok, _ := tb.startInterim(2, l); ok {
		t.Error("an interim read started after the partition was adopted")
	}
	if tb.adopt([]int{2}) != nil {
		t.Error("adopt waits again once adopted")
	}
	if parts, done := tb.startRead([]int{1, 2}); fmt.Sprint(parts) != "[1 2]" {
		t.Errorf("startRead once adopted = %v, want [1 2]", parts)
	} else {
		done()
	}
}
