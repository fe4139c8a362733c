package gateway

import "errors"

// The gateway core (frames, Redis) talks to the network through this seam,
// so the event-loop library stays in one file (evio.go) and another
// transport (WebSocket) can sit beside it.

// peer is one client connection as a transport exposes it.
type peer interface {
	// send queues bytes for the client. It is safe from any goroutine and
	// never blocks; past the connection's output limit the transport closes
	// the connection instead (a client that does not read).
	send(p []byte)
	// close closes the connection once queued output is written, or after a
	// short deadline if the client does not read it.
	close()
	// abort closes the connection at once, without writing what is
	// queued, and reports reason as why it ended.
	abort(reason error)
	remoteAddr() string
}

// events is what a transport reports to the core. Calls for one connection
// come from one goroutine, in order: opened, data..., closed.
type events interface {
	// opened registers a new connection; an error refuses it.
	opened(p peer) (*conn, error)
	// data hands over bytes read; an error (a bad frame) closes the
	// connection.
	data(c *conn, in []byte) error
	// closed reports the end of a connection, with the reason if known.
	closed(c *conn, err error)
	// partial reports that c holds n bytes of a frame (a message) still
	// arriving; 0: none. (The TCP transport's frames are cut by the core,
	// which counts them itself.)
	partial(c *conn, n int)
}

// Errors a transport reports as the reason a connection ended.
var (
	errSlowClient    = errors.New("gateway: client does not read its output")
	errIdle          = errors.New("gateway: idle timeout")
	errShutdown      = errors.New("gateway: shutting down")
	errFrameTimeout  = errors.New("gateway: frame not complete within the frame timeout")
	errPartialBudget = errors.New("gateway: partial frames over the gateway's budget")
)
