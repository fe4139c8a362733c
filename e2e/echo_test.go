package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/client"
	"github.com/maple-farm/maple/examples/demo"
)

// TestEchoManyClients: 200 TCP clients x 50 pipelined echo requests; every
// reply matches its request's sn and body, none is missing or duplicated.
func TestEchoManyClients(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := newFarm(t, b.redis(t))
			gw := f.gateway(nil)
			f.worker(nil, nil)
			echoClients(t, gw.Addr().String(), 200, 50, 60*time.Second, nil)
		})
	}
}

// echoClients runs clients echoClient loops of perClient pipelined frames
// against addr, calls meanwhile (if not nil) once they are sent off, and
// reports every client's error.
func echoClients(t *testing.T, addr string, clients, perClient int, timeout time.Duration, meanwhile func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- echoClient(ctx, addr, i, perClient)
		}(i)
	}
	if meanwhile != nil {
		meanwhile()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// echoClient writes n echo frames back to back on a raw socket, then reads
// n replies and checks each sn is answered once with its own body.
func echoClient(ctx context.Context, addr string, id, n int) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	var buf []byte
	for sn := 1; sn <= n; sn++ {
		buf = box.Append(buf, demo.CmdEcho, 0, uint32(sn), []byte(fmt.Sprintf("client %d frame %d", id, sn)))
	}
	if _, err := nc.Write(buf); err != nil {
		return err
	}
	r := box.NewReader(nc, 0)
	seen := make(map[uint32]bool, n)
	for len(seen) < n {
		b, err := r.Next()
		if err != nil {
			return fmt.Errorf("client %d: after %d replies: %w", id, len(seen), err)
		}
		if b.SN < 1 || int(b.SN) > n || seen[b.SN] {
			return fmt.Errorf("client %d: unexpected or duplicate sn %d", id, b.SN)
		}
		want := fmt.Sprintf("client %d frame %d", id, b.SN)
		if b.Ret != 0 || b.Cmd != demo.CmdEcho || string(b.Body) != want {
			return fmt.Errorf("client %d: reply %+v body %q, want ret 0 body %q", id, b.Header, b.Body, want)
		}
		seen[b.SN] = true
	}
	return nil
}

// TestWorkerStartsLate: frames wait in Redis while no worker runs, the
// clients stay connected, and a worker started 2 s later answers them all.
func TestWorkerStartsLate(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := newFarm(t, b.redis(t))
			gw := f.gateway(nil)
			echoClients(t, gw.Addr().String(), 20, 10, 30*time.Second, func() {
				time.Sleep(2 * time.Second)
				f.worker(nil, nil)
			})
		})
	}
}

// TestDemoRoutes checks the result codes of the demo game's routes.
func TestDemoRoutes(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := newFarm(t, b.redis(t))
			gw := f.gateway(nil)
			f.worker(nil, nil)
			c := dial(t, gw)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tests := []struct {
				cmd     int32
				body    string
				ret     int32
				reply   string
				anyBody bool
			}{
				{demo.CmdEcho, "hi", 0, "hi", false},
				{demo.CmdCounter, "c", 0, "1", false},
				{demo.CmdCounter, "c", 0, "2", false},
				{demo.CmdSleep, "20", 0, "20", false},
				{demo.CmdSleep, "x", box.RetHandlerFailed, "", false},
				{demo.CmdPanic, "", box.RetHandlerFailed, "", false},
				{999, "", box.RetNoRoute, "", false},
				{demo.CmdEcho, "still serving", 0, "still serving", false},
			}
			for _, tt := range tests {
				r, err := c.Request(ctx, tt.cmd, []byte(tt.body))
				if err != nil {
					t.Fatalf("cmd %d: %v", tt.cmd, err)
				}
				if r.Ret != tt.ret || r.Cmd != tt.cmd || (!tt.anyBody && !bytes.Equal(r.Body, []byte(tt.reply))) {
					t.Errorf("cmd %d %q: got ret %d cmd %d body %q, want ret %d body %q",
						tt.cmd, tt.body, r.Ret, r.Cmd, r.Body, tt.ret, tt.reply)
				}
			}
		})
	}
}

var _ = client.Options{}
