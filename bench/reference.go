package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/maple-farm/maple/box"
)

// ServeReference serves ln as the bench's reference: an echo server with no
// Redis and no routes. Each connection gets a goroutine that reads frames
// with box.Reader and answers each with the same cmd, sn and body and ret 0;
// replies are buffered and flushed only when the read buffer is empty, so a
// pipelined client gets them in batches. It closes ln and every connection
// and returns nil when ctx ends; any other Accept error is returned.
func ServeReference(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, nil)
}

// serve is ServeReference with a hook for tests that play a broken server:
// edit, if set, may change each reply before it is written, and returns how
// many copies of it to write (0 drops it); a negative count hangs up.
func serve(ctx context.Context, ln net.Listener, edit func(*box.Box) int) error {
	var (
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
		wg     sync.WaitGroup
	)
	shutdown := func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			closed = true
			ln.Close()
			for nc := range conns {
				nc.Close()
			}
		}
	}
	defer context.AfterFunc(ctx, shutdown)()
	for {
		nc, err := ln.Accept()
		if err != nil {
			shutdown()
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: accept: %w", err)
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			nc.Close()
			continue
		}
		conns[nc] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			echo(nc, edit)
			mu.Lock()
			delete(conns, nc)
			mu.Unlock()
			nc.Close()
		}()
	}
}

// echo answers one connection until it ends or sends a bad frame.
func echo(nc net.Conn, edit func(*box.Box) int) {
	w := bufio.NewWriterSize(nc, 64<<10)
	r := box.NewReader(flushingReader{nc: nc, w: w}, 0)
	var frame []byte
	for {
		b, err := r.Next()
		if err != nil {
			return
		}
		b.Ret = box.RetOK
		copies := 1
		if edit != nil {
			if copies = edit(&b); copies < 0 {
				return
			}
		}
		frame = box.Append(frame[:0], b.Cmd, b.Ret, b.SN, b.Body)
		for range copies {
			if _, err := w.Write(frame); err != nil {
				return
			}
		}
	}
}

// flushingReader flushes w before every read from the socket. box.Reader
// reads from it only when its buffer holds no whole frame, so replies go
// out when the requests at hand are all answered.
type flushingReader struct {
	nc net.Conn
	w  *bufio.Writer
}

func (f flushingReader) Read(p []byte) (int, error) {
	if f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.nc.Read(p)
}
