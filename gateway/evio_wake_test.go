package gateway

import (
	"net"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/evio"
)

// TestLostWakeCannotHappen makes evio lose a Wake on purpose (its note is
// queued, its eventfd write eaten, as evio's own drain eats it when a Wake
// comes at the wrong moment) and checks that the loop's waker still gets
// the note handled at once. Without the waker (the control) the note
// waits for evio's 100 ms epoll timeout: the test really loses the Wake.
func TestLostWakeCannotHappen(t *testing.T) {
	for _, tc := range []struct {
		name string
		poke bool
	}{{"waker", true}, {"control without waker", false}} {
		t.Run(tc.name, func(t *testing.T) {
			late := lostWakeDelay(t, tc.poke)
			// The control loses the Wake only if nothing else wakes the
			// loop meanwhile; on a busy machine something may. Three
			// tries: one lost Wake shows the test still detects the bug.
			for try := 1; !tc.poke && late < 60*time.Millisecond && try < 3; try++ {
				t.Logf("try %d: note handled %v after the loop was free; again", try, late)
				late = lostWakeDelay(t, tc.poke)
			}
			t.Logf("note handled %v after the loop was free", late)
			if tc.poke && late > 40*time.Millisecond {
				t.Errorf("with the waker, the lost Wake was handled %v after the loop was free, want at once", late)
			}
			if !tc.poke && late < 60*time.Millisecond {
				t.Errorf("without the waker, the eaten Wake was handled after %v; the test no longer loses it (has evio changed?)", late)
			}
		})
	}
}

// lostWakeDelay runs an evio loop with two connections: a blocks the loop
// for 200 ms, meanwhile b is woken and the wake's eventfd write eaten;
// it returns how long after the loop is free b's wake runs.
func lostWakeDelay(t *testing.T, poke bool) time.Duration {
	tr := &evioTransport{log: testLogger(), wakers: make(map[uintptr]*loopWaker)}
	opened := make(chan evio.Conn, 2)
	woken := make(chan time.Time, 1)
	freed := make(chan time.Time, 1)
	addrCh := make(chan net.Addr, 1)
	var ev evio.Events
	ev.Serving = func(s evio.Server) evio.Action { addrCh <- s.Addrs[0]; return evio.None }
	ev.Opened = func(c evio.Conn) ([]byte, evio.Options, evio.Action) {
		c.SetContext(tr.loopWaker(c))
		opened <- c
		return nil, evio.Options{}, evio.None
	}
	ev.Data = func(c evio.Conn, in []byte) ([]byte, evio.Action) {
		switch string(in) {
		case "":
			select {
			case woken <- time.Now():
			default:
			}
		case "block":
			time.Sleep(200 * time.Millisecond)
			freed <- time.Now()
		case "quit":
			return nil, evio.Shutdown
		}
		return nil, evio.None
	}
	served := make(chan error, 1)
	go func() { served <- evio.Serve(ev, "tcp://127.0.0.1:0"); tr.closeWakers() }()
	addr := <-addrCh
	dial := func() (net.Conn, evio.Conn) {
		nc, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		select {
		case c := <-opened:
			return nc, c
		case <-time.After(5 * time.Second):
			t.Fatal("evio did not open the connection")
		}
		return nil, nil
	}
	a, _ := dial()
	_, cb := dial()
	defer func() {
		_, _ = a.Write([]byte("quit"))
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("evio.Serve did not return")
		}
	}()

	if _, err := a.Write([]byte("block")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the loop is in a's Data now
	cb.Wake()
	wfd := int(reflect.ValueOf(cb).Elem().FieldByName("loop").Elem().FieldByName("poll").Elem().FieldByName("wfd").Int())
	var buf [8]byte
	if n, err := syscall.Read(wfd, buf[:]); n != 8 || err != nil { // eat the Wake's signal
		t.Fatalf("eating evio's eventfd: n=%d err=%v", n, err)
	}
	if poke {
		cb.Context().(*loopWaker).poke()
	}
	free := <-freed
	select {
	case at := <-woken:
		return at.Sub(free)
	case <-time.After(5 * time.Second):
		t.Fatal("the wake never ran")
	}
	return 0
}
