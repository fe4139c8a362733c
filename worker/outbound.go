package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/internal/ratelog"
	"github.com/maple-farm/maple/store"
)

// outbound turns what handlers send (replies, pushes, closes, binds) into
// outbound messages for gateways and queues them on the outbox, in the
// order the handler sent them: it refuses frames over Options.MaxFrame and
// drops messages for gateways that are gone.
type outbound struct {
	st       *store.Store
	log      *slog.Logger
	logs     *ratelog.Limiter
	stats    *Stats
	maxFrame int // Options.MaxFrame
	gws      gatewayBook
	outbox   interface {
		out(gw string, payload []byte)
	}
}

type outboundParams struct {
	store    *store.Store
	log      *slog.Logger
	logs     *ratelog.Limiter
	stats    *Stats
	maxFrame int
	gateways gatewayBook
	outbox   interface {
		out(gw string, payload []byte)
	}
}

func newOutbound(p outboundParams) *outbound {
	return &outbound{st: p.store, log: p.log, logs: p.logs, stats: p.stats, maxFrame: p.maxFrame,
		gws: p.gateways, outbox: p.outbox}
}

// ErrFrameTooLarge is returned by replies and pushes whose frame (header
// and body) is over Options.MaxFrame: nothing is sent. A client is not
// made to take a frame it may be unable to read, and a gateway does not
// drop players for a message bigger than their output buffer.
var ErrFrameTooLarge = errors.New("worker: frame too large")

// checkFrame refuses a frame of cmd with a body of n bytes over MaxFrame:
// counted, logged (rate-limited), and an error wrapping ErrFrameTooLarge.
func (o *outbound) checkFrame(cmd int32, n int) error {
	size := box.HeaderLen + n
	if size <= o.maxFrame {
		return nil
	}
	o.stats.OversizeRefused.Add(1)
	o.logs.Warn("oversize cmd="+strconv.Itoa(int(cmd)), "frame over --max-frame refused; nothing sent",
		"cmd", cmd, "bytes", size, "max", o.maxFrame)
	return fmt.Errorf("%w: cmd %d: %d bytes, at most %d", ErrFrameTooLarge, cmd, size, o.maxFrame)
}

// write queues frames for a connection on a gateway.
func (o *outbound) write(gw, conn string, frames []byte) {
	o.send(gw, &queue.Out{Kind: queue.OutWrite, Conn: conn, Frames: frames})
}

// send queues message m for gateway gw.
func (o *outbound) send(gw string, m *queue.Out) {
	if o.canSend(gw, m.Conn) {
		o.outbox.out(gw, queue.AppendOut(make([]byte, 0, queue.OutSize(m)), m))
	}
}

// sendFrame queues one frame for a connection as an OutWrite, encoded in
// one allocation (the reply path).
func (o *outbound) sendFrame(gw, conn string, at int64, cmd, ret int32, sn uint32, body []byte) {
	if !o.canSend(gw, conn) {
		return
	}
	m := queue.Out{Kind: queue.OutWrite, Conn: conn, At: at}
	b := queue.AppendOut(make([]byte, 0, queue.OutSize(&m)+box.HeaderLen+len(body)), &m)
	o.outbox.out(gw, box.Append(b, cmd, ret, sn, body)) // Frames come last
}

// complete tells env's gateway that a frame was handled without a reply
// (an OutWrite with no frames): the gateway counts the frames each
// connection has in flight, and would otherwise wait for an answer that
// never comes. Only messages with At count there.
func (o *outbound) complete(env queue.Envelope) {
	if env.Kind == queue.KindFrame && env.Conn != "" && env.At > 0 {
		o.send(env.Gateway, &queue.Out{Kind: queue.OutWrite, Conn: env.Conn, At: env.At})
	}
}

func (o *outbound) canSend(gw, conn string) bool {
	if gw == "" || strings.ContainsAny(gw, "{}") {
		o.log.Debug("no gateway for outbound message", "conn", conn)
		return false
	}
	// A dead gateway's list was deleted; writing would only recreate it.
	return !o.gws.dead(gw)
}

// pushUsers resolves uids to connections and sends each one message.
func (o *outbound) pushUsers(ctx context.Context, uids []string, frame []byte, kind queue.OutKind) (int, error) {
	if len(uids) == 0 {
		return 0, nil
	}
	sess, err := o.st.Sessions(ctx, uids)
	if err != nil {
		return 0, err
	}
	for _, s := range sess {
		o.send(s.Gateway, &queue.Out{Kind: kind, Conn: s.Conn, Frames: frame})
	}
	if skipped := len(uids) - len(sess); skipped > 0 {
		o.stats.PushSkipped.Add(int64(skipped))
	}
	return len(sess), nil
}
