package worker

import (
	"context"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
)

// Pushes: what a handler sends beyond its own client, to users wherever
// they are connected, to a group, or to everyone. Like replies, they go
// through the outbox, so they reach the gateways in the order the handler
// sent them, behind the replies sent before.

// PushUsers sends a frame (sn 0) to each of uids that is connected,
// wherever it is; it returns how many were. Like every push, a frame over
// Options.MaxFrame is refused (ErrFrameTooLarge): nobody gets it.
func (r *Request) PushUsers(ctx context.Context, uids []string, cmd int32, body []byte) (int, error) {
	if err := r.svc.out.checkFrame(cmd, len(body)); err != nil {
		return 0, err
	}
	return r.svc.out.pushUsers(ctx, uids, box.Append(nil, cmd, box.RetOK, 0, body), queue.OutWrite)
}

// PushGroup sends a frame (sn 0) to every connected member of a group; it
// returns how many were reached.
func (r *Request) PushGroup(ctx context.Context, group string, cmd int32, body []byte) (int, error) {
	if err := r.svc.out.checkFrame(cmd, len(body)); err != nil {
		return 0, err
	}
	uids, err := r.Store.Members(ctx, group)
	if err != nil {
		return 0, err
	}
	return r.PushUsers(ctx, uids, cmd, body)
}

// Broadcast sends a frame (sn 0) to every connection of every gateway.
func (r *Request) Broadcast(ctx context.Context, cmd int32, body []byte) error {
	if err := r.svc.out.checkFrame(cmd, len(body)); err != nil {
		return err
	}
	gws, err := r.svc.q.Alive(ctx, r.svc.q.Keys.Gateways(), time.Now(), r.svc.gatewayTimeout)
	if err != nil {
		return err
	}
	frame := box.Append(nil, cmd, box.RetOK, 0, body)
	for _, gw := range gws {
		r.svc.out.send(gw, &queue.Out{Kind: queue.OutBroadcast, Frames: frame})
	}
	return nil
}

// CloseUsers closes the connections of uids; it returns how many were
// connected.
func (r *Request) CloseUsers(ctx context.Context, uids []string) (int, error) {
	return r.svc.out.pushUsers(ctx, uids, nil, queue.OutClose)
}
