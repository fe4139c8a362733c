package gateway

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// webServer serves Options.Web, a game's page, on the WebSocket listener:
// the event loop hands it the connections whose first request is not for
// WSPath (ws.go, wsConn.handOver), and net/http answers that request.
// Keep-alives are off, so each connection carries one request and a
// client's next one, possibly its WebSocket handshake, comes on a new
// connection, which the event loop reads.
type webServer struct {
	srv   *http.Server
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newWebServer(h http.Handler, log *slog.Logger) *webServer {
	w := &webServer{conns: make(chan net.Conn, 64), done: make(chan struct{})}
	w.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	w.srv.SetKeepAlivesEnabled(false)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := w.srv.Serve(webListener{w}); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Error("web server stopped", "err", err)
		}
	}()
	return w
}

// serve answers a connection's request: head is what the event loop read
// of it already.
func (w *webServer) serve(nc net.Conn, head []byte) {
	pc := &prefixConn{Conn: nc, head: head}
	select {
	case w.conns <- pc:
	case <-w.done:
		nc.Close()
	}
}

// close stops the server and the requests it is answering.
func (w *webServer) close() {
	w.once.Do(func() { close(w.done) })
	_ = w.srv.Close()
	w.wg.Wait()
}

// webListener hands the server the connections the loop handed over.
type webListener struct{ w *webServer }

func (l webListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.w.conns:
		return c, nil
	case <-l.w.done:
		return nil, net.ErrClosed
	}
}

func (l webListener) Close() error {
	l.w.once.Do(func() { close(l.w.done) })
	return nil
}

func (l webListener) Addr() net.Addr { return &net.TCPAddr{} }

// prefixConn reads head before the rest of the connection.
type prefixConn struct {
	net.Conn
	head []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
