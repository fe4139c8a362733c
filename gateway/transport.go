package gateway

import (
	"errors"
	"net"
	"time"
)

// The gateway core (frames, Redis) talks to the network through this seam.
// One event loop (evio.go, the only file that knows evio) holds every
// client connection and moves its bytes; what the bytes mean is the
// connection's protocol, chosen by the listener that accepted it:
//
//   - boxStream (below): Options.Listen, TCP players, Box frames back to
//     back on the stream;
//   - wsConn (ws.go): Options.WSListen, WebSocket players, an HTTP
//     handshake and then one Box frame per binary message.
//
// Both share everything else: per-connection output queue, wakes, the
// limits on output and stalls, idle sweeps (evio.go), and the core's
// frames, envelopes and limits (server.go, limits.go). newTransport builds
// both.

// peer is one client connection as the core sees it.
type peer interface {
	// send queues whole Box frames, checked by the core, for the client.
	// It is safe from any goroutine and never blocks; past the
	// connection's output limit the connection is closed instead (a
	// client that does not read).
	send(frames []byte)
	// close closes the connection once queued output is written, or after
	// closeGrace if the client does not read it.
	close()
	// abort closes the connection at once, without writing what is
	// queued, and reports reason as why it ended.
	abort(reason error)
	remoteAddr() string
}

// events is what the protocols report to the core. Calls for one
// connection come from its event goroutine, in order: opened, data or
// message..., closed.
type events interface {
	// opened registers a new connection; an error refuses it.
	opened(p peer) (*conn, error)
	// data hands over bytes read from a stream of frames; an error (a bad
	// frame, wrapping errBadFrame) closes the connection.
	data(c *conn, in []byte) error
	// message hands over one whole message of a transport that has them
	// (WebSocket): it must be exactly one frame, or the error (wrapping
	// errBadFrame) closes the connection.
	message(c *conn, msg []byte) error
	// closed reports the end of a connection, with the reason if known.
	closed(c *conn, err error)
	// partial reports that c holds n bytes of a message still arriving;
	// 0: none. (Frames of a stream are cut by the core, which counts them
	// itself.)
	partial(c *conn, n int)
}

// protocol is what a connection speaks over TCP. The event loop calls
// read and closed on the connection's event goroutine; appendFrames and
// goodbye from any goroutine, under the connection's lock.
type protocol interface {
	// start begins the connection once the loop holds the protocol: TCP
	// players are opened with the core at once, WebSocket players after
	// their handshake. An error refuses the connection.
	start() error
	// read handles bytes read. out is written to the client before
	// anything queued after it (a handshake's answer, a pong, a close
	// frame); then the connection goes on, closes or is handed over, as
	// next says, for reason (nil: the client closed it cleanly).
	read(in []byte) (out []byte, next after, reason error)
	// appendFrames appends frames, whole Box frames, to dst in the
	// protocol's encoding.
	appendFrames(dst, frames []byte) []byte
	// goodbye returns what ends a connection closed for reason (nil:
	// closed by the farm), written after what is queued: a close frame,
	// or nothing. Once it is queued nothing more is sent, and the
	// connection waits for the client to close (within closeGrace).
	goodbye(reason error) []byte
	// due is called about every sweep interval with the time of the
	// connection's last input: what to send now (a ping), or why the
	// connection must end (idle too long).
	due(now, lastIn time.Time) (send []byte, end error)
	// handOver takes over a connection that read asked to hand over.
	handOver(nc net.Conn)
	// closed reports the end of the connection.
	closed(reason error)
}

// after is what happens to a connection once read's output is written.
type after int

const (
	keepOpen    after = iota
	closeAfter        // close it once out is written, within closeGrace
	lingerAfter       // out ends in a goodbye: the client closes, within closeGrace
	closeNow          // shut it down at once, unwritten output dropped
	handOver          // hand it over to the protocol (protocol.handOver)
)

// closeGrace is how long a close waits for queued output to reach a client
// before the socket is shut down.
const closeGrace = 2 * time.Second

// Errors a transport reports as the reason a connection ended.
var (
	errSlowClient    = errors.New("gateway: client does not read its output")
	errIdle          = errors.New("gateway: idle timeout")
	errShutdown      = errors.New("gateway: shutting down")
	errFrameTimeout  = errors.New("gateway: frame not complete within the frame timeout")
	errPartialBudget = errors.New("gateway: partial frames over the gateway's budget")
	// errBadFrame is wrapped by what a client sent that is not a frame,
	// or a WebSocket message that is not exactly one (counted in
	// Stats.BadFrames when the connection closes).
	errBadFrame = errors.New("gateway: bad frame")
)

// boxStream is the protocol of TCP players: Box frames back to back, cut
// by the core (Server.data), and written as they are.
type boxStream struct {
	ev events
	p  peer
	c  *conn
	// idle closes a connection that sent nothing this long; 0: never.
	idle time.Duration
}

func (b *boxStream) start() error {
	c, err := b.ev.opened(b.p)
	b.c = c
	return err
}

func (b *boxStream) read(in []byte) ([]byte, after, error) {
	if err := b.ev.data(b.c, in); err != nil {
		return nil, closeNow, err
	}
	return nil, keepOpen, nil
}

func (b *boxStream) appendFrames(dst, frames []byte) []byte { return append(dst, frames...) }

func (b *boxStream) goodbye(error) []byte { return nil }

func (b *boxStream) due(now, lastIn time.Time) ([]byte, error) {
	if b.idle > 0 && now.Sub(lastIn) > b.idle {
		return nil, errIdle
	}
	return nil, nil
}

func (b *boxStream) handOver(nc net.Conn) { nc.Close() }

func (b *boxStream) closed(reason error) { b.ev.closed(b.c, reason) }

// listener is one address of the event loop and the protocol of the
// connections it accepts.
type listener struct {
	name string // "tcp" or "ws", for logs
	addr string // host:port
	// open returns the protocol of a connection just accepted.
	open func(p peer) protocol
}

// newTransport builds the event loop with a listener per transport: TCP
// players on Options.Listen and, if set, WebSocket players on
// Options.WSListen.
func (s *Server) newTransport() *evioTransport {
	o := s.opts
	tcp := listener{name: "tcp", addr: o.Listen, open: func(p peer) protocol {
		return &boxStream{ev: s, p: p, idle: o.IdleTimeout}
	}}
	t := &evioTransport{
		listeners: []listener{tcp},
		reusePort: o.ReusePort,
		loops:     o.Loops, outLimit: o.OutBuffer, stall: o.WriteStall,
		sweepEvery: time.Second,
		log:        s.log, addrs: s.addr,
	}
	if o.WSListen != "" {
		ws := newWSConfig(o, s, s.log.With("transport", "ws"))
		t.listeners = append(t.listeners, listener{name: "ws", addr: o.WSListen, open: ws.open})
		t.sweepEvery = min(t.sweepEvery, ws.sweepEvery())
		t.stops = append(t.stops, ws.stop)
	}
	t.wakes, t.direct = &s.Stats.Wakes, &s.Stats.DirectWrites
	t.afterRead = s.queue.handOff
	return t
}
