package gateway

import (
	"testing"
	"time"
)

// TestForgetMarksOfClosedConnections: a handled mark written after its
// connection's close was finished (a worker flushing late) is deleted by
// the gateway once markGrace has passed since the close; the marks of
// open connections stay.
func TestForgetMarksOfClosedConnections(t *testing.T) {
	gw, rdb := startGateway(t, Options{})
	closed, closedID := dialConn(t, gw)
	_, openID := dialConn(t, gw)
	ctx := t.Context()
	handled := gw.keys.Handled(gw.ID())
	closed.Close()
	waitFor(t, 5*time.Second, "the close seen", func() bool { return gw.lookup(closedID) == nil })
	// A worker's late marks.
	if err := rdb.HSet(ctx, handled, closedID, 3, openID, 2).Err(); err != nil {
		t.Fatal(err)
	}
	gw.forgetMarks(ctx, time.Now()) // too early: kept
	if n, _ := rdb.HLen(ctx, handled).Result(); n != 2 {
		t.Fatalf("%d marks after an early sweep, want 2", n)
	}
	gw.forgetMarks(ctx, time.Now().Add(markGrace+time.Second))
	fields, err := rdb.HKeys(ctx, handled).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 1 || fields[0] != openID {
		t.Errorf("marks left = %v, want only the open connection's %s", fields, openID)
	}
}
