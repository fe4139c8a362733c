package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
)

// Kind says what a Request carries.
type Kind byte

// Request kinds.
const (
	Frame  Kind = 1 // a client's frame
	Open   Kind = 2 // a connection opened
	Close  Kind = 3 // a connection closed
	System Kind = 4 // a frame with no client (timer, operator)
	Job    Kind = 5 // one period of a periodic job (App.Every)
)

func (k Kind) String() string { return queue.Kind(k).String() }

// Conn tells where a request came from.
type Conn struct {
	Gateway string // id of the gateway holding the connection
	ID      string // farm-wide unique connection id
	Addr    string // the client's address
	UID     string // the logged-in user id, "" before login
}

// Request is one unit of work handed to a handler. It is valid only while
// the handler runs.
type Request struct {
	Kind Kind
	Box  box.Box // the client's frame (Cmd, SN, Body); zero for open/close
	Conn Conn
	// Deliveries is 1 the first time; more when a worker died while
	// handling it and another worker took it over.
	Deliveries int64
	// Store reaches the farm's Redis: game state, sessions, groups.
	Store *store.Store

	svc     *services
	at      int64 // Envelope.At, echoed in the reply for the gateway's latency
	replied bool
}

// services is what the worker lends every Request: the way out to the
// gateways, and what logins, pushes and timers need.
type services struct {
	out            *outbound
	q              *queue.Broker                         // the queues: gateways alive, timers
	users          interface{ setUID(conn, uid string) } // a login, for later frames of its connection
	log            *slog.Logger
	loginMode      store.LoginMode
	gatewayTimeout time.Duration
	parts          int
}

// Redelivered reports whether another worker took this request before and
// died (or was stopped) without finishing it.
func (r *Request) Redelivered() bool { return r.Deliveries > 1 }

// Replied reports whether a reply was sent.
func (r *Request) Replied() bool { return r.replied }

// Reply answers the client's frame with ret 0 and body.
func (r *Request) Reply(body []byte) error { return r.ReplyRet(box.RetOK, body) }

// ReplyRet answers the client's frame with a result code and body. A
// request is answered at most once; later calls return an error. A frame
// over Options.MaxFrame is not sent (ErrFrameTooLarge); a handler that
// returns that error has its client answered -10001.
func (r *Request) ReplyRet(ret int32, body []byte) error {
	if r.replied {
		return errors.New("worker: request already answered")
	}
	if r.Kind != Frame {
		return fmt.Errorf("worker: cannot reply to a %s event", r.Kind)
	}
	if err := r.svc.out.checkFrame(r.Box.Cmd, len(body)); err != nil {
		return err // not answered: the handler may answer otherwise
	}
	r.replied = true
	r.svc.out.sendFrame(r.Conn.Gateway, r.Conn.ID, r.at, r.Box.Cmd, ret, r.Box.SN, body)
	return nil
}

// Push sends a frame with sn 0 to the same client; a frame over
// Options.MaxFrame is refused (ErrFrameTooLarge).
func (r *Request) Push(cmd int32, body []byte) error {
	if r.Conn.ID == "" {
		return errors.New("worker: request has no client")
	}
	if err := r.svc.out.checkFrame(cmd, len(body)); err != nil {
		return err
	}
	r.svc.out.write(r.Conn.Gateway, r.Conn.ID, box.Append(nil, cmd, box.RetOK, 0, body))
	return nil
}

// CloseClient closes the client's connection once what was sent to it is
// written.
func (r *Request) CloseClient() error {
	if r.Conn.ID == "" {
		return errors.New("worker: request has no client")
	}
	r.svc.out.send(r.Conn.Gateway, &queue.Out{Kind: queue.OutClose, Conn: r.Conn.ID})
	return nil
}

// Error is a handler failure with the result code the client gets.
type Error struct {
	Ret int32
	Msg string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("worker: ret %d", e.Ret)
	}
	return "worker: " + e.Msg
}

// Errors with a wire code (docs/protocol.md section 2).
var (
	ErrNoRoute       = &Error{Ret: box.RetNoRoute, Msg: "no route for cmd"}
	ErrLoginRequired = &Error{Ret: box.RetLoginRequired, Msg: "login required"}
)

// ErrStop, returned by a Before hook, ends the request without an answer
// (the hook answered it, or chose not to).
var ErrStop = errors.New("worker: request stopped by hook")

// panicError is a recovered handler panic.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("worker: handler panicked: %v", p.value) }

func stack() []byte { return debug.Stack() }
