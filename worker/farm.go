package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
)

// Sessions, pushes and timers: what a handler does beyond its own client.
// Everything goes through the worker's writer, so it reaches the gateways
// in the order the handler did it, behind the replies sent before.

// Login binds the request's connection to uid, farm-wide and atomically.
// With LoginMode Kick (the default) an older connection of the same user,
// on any gateway, is closed; with Refuse the login fails with
// store.ErrLoggedInElsewhere. From now on the uid travels with every frame
// of this connection (Request.Conn.UID).
func (r *Request) Login(ctx context.Context, uid string) error {
	if r.Kind != Frame {
		return fmt.Errorf("worker: login from a %s event", r.Kind)
	}
	if uid == "" {
		return errors.New("worker: login with an empty user id")
	}
	// A uid travels with every frame of the connection: bounded.
	if err := store.CheckName("user id", uid); err != nil {
		return fmt.Errorf("worker: login: %w", err)
	}
	if r.Conn.UID != "" && r.Conn.UID != uid {
		if err := r.Logout(ctx); err != nil {
			return err
		}
	}
	here := store.Session{Gateway: r.Conn.Gateway, Conn: r.Conn.ID}
	old, err := r.Store.BindUser(ctx, uid, here, r.w.opts.LoginMode)
	if err != nil {
		return err
	}
	if old.Conn != "" && old.Conn != r.Conn.ID {
		r.w.log.Debug("login kicks older connection", "uid", uid, "conn", old.Conn, "gw", old.Gateway)
		r.w.sendOut(old.Gateway, &queue.Out{Kind: queue.OutUnbind, Conn: old.Conn})
		r.w.sendOut(old.Gateway, &queue.Out{Kind: queue.OutClose, Conn: old.Conn})
	}
	r.w.sendOut(r.Conn.Gateway, &queue.Out{Kind: queue.OutBind, Conn: r.Conn.ID, UID: uid})
	r.w.setUID(r.Conn.ID, uid)
	r.Conn.UID = uid
	return nil
}

// Logout removes the connection's binding.
func (r *Request) Logout(ctx context.Context) error {
	if r.Conn.UID == "" {
		return nil
	}
	if _, err := r.Store.UnbindUser(ctx, r.Conn.UID, store.Session{Gateway: r.Conn.Gateway, Conn: r.Conn.ID}); err != nil {
		return err
	}
	r.w.sendOut(r.Conn.Gateway, &queue.Out{Kind: queue.OutUnbind, Conn: r.Conn.ID})
	r.w.setUID(r.Conn.ID, "")
	r.Conn.UID = ""
	return nil
}

// PushUsers sends a frame (sn 0) to each of uids that is connected,
// wherever it is; it returns how many were. Like every push, a frame over
// Options.MaxFrame is refused (ErrFrameTooLarge): nobody gets it.
func (r *Request) PushUsers(ctx context.Context, uids []string, cmd int32, body []byte) (int, error) {
	if err := r.w.checkFrame(cmd, len(body)); err != nil {
		return 0, err
	}
	return r.w.pushUsers(ctx, uids, box.Append(nil, cmd, box.RetOK, 0, body), queue.OutWrite)
}

// PushGroup sends a frame (sn 0) to every connected member of a group; it
// returns how many were reached.
func (r *Request) PushGroup(ctx context.Context, group string, cmd int32, body []byte) (int, error) {
	if err := r.w.checkFrame(cmd, len(body)); err != nil {
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
	if err := r.w.checkFrame(cmd, len(body)); err != nil {
		return err
	}
	gws, err := r.w.q.Alive(ctx, r.w.q.Keys.Gateways(), time.Now(), r.w.opts.GatewayTimeout)
	if err != nil {
		return err
	}
	frame := box.Append(nil, cmd, box.RetOK, 0, body)
	for _, gw := range gws {
		r.w.sendOut(gw, &queue.Out{Kind: queue.OutBroadcast, Frames: frame})
	}
	return nil
}

// CloseUsers closes the connections of uids; it returns how many were
// connected.
func (r *Request) CloseUsers(ctx context.Context, uids []string) (int, error) {
	return r.w.pushUsers(ctx, uids, nil, queue.OutClose)
}

// ScheduleAfter queues a frame (cmd, body) for the workers after d, as a
// System request. The timer lives in Redis: it fires once, on some live
// worker, even if this one is gone by then. It returns an id for
// CancelTimer.
func (r *Request) ScheduleAfter(ctx context.Context, d time.Duration, cmd int32, body []byte) (string, error) {
	return r.w.q.ScheduleAfter(ctx, r.w.parts, d, cmd, body)
}

// CancelTimer drops a timer that has not fired; it reports whether it was
// still pending.
func (r *Request) CancelTimer(ctx context.Context, id string) (bool, error) {
	return r.Store.CancelTimer(ctx, id)
}

// pushUsers resolves uids to connections and sends each one message.
func (w *Worker) pushUsers(ctx context.Context, uids []string, frame []byte, kind queue.OutKind) (int, error) {
	if len(uids) == 0 {
		return 0, nil
	}
	sess, err := w.st.Sessions(ctx, uids)
	if err != nil {
		return 0, err
	}
	for _, s := range sess {
		w.sendOut(s.Gateway, &queue.Out{Kind: kind, Conn: s.Conn, Frames: frame})
	}
	if skipped := len(uids) - len(sess); skipped > 0 {
		w.Stats.PushSkipped.Add(int64(skipped))
	}
	return len(sess), nil
}

// setUID remembers a connection's user on this worker, for frames of that
// connection queued before its gateway learnt of the login.
func (w *Worker) setUID(conn, uid string) {
	w.mu.Lock()
	m := w.lastSeq[conn]
	m.uid = uid
	w.lastSeq[conn] = m
	w.mu.Unlock()
}

func (w *Worker) uidOf(conn string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSeq[conn].uid
}

// runTimers moves the timers of this worker's partitions into their
// streams as they fall due, and starts the periods of periodic jobs.
func (w *Worker) runTimers(ctx context.Context) {
	log := w.log.With("duty", "timers")
	tick := time.NewTicker(w.opts.TimerTick)
	defer tick.Stop()
	last := make(map[string]int64, len(w.app.jobs)) // period last claimed, per job
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		// All partitions in one round trip; again for those with more due.
		for parts := w.activeParts(); len(parts) > 0; {
			n, err := w.q.MoveDueTimersOf(ctx, parts, now, 256)
			if err != nil {
				if ctx.Err() == nil {
					w.Stats.RedisErrs.Add(1)
					log.Error("moving due timers failed", "partitions", parts, "err", err)
				}
				break
			}
			more := parts[:0]
			for i, p := range parts {
				if n[i] == 256 {
					more = append(more, p)
				}
			}
			parts = more
		}
		for _, j := range w.app.jobs {
			n := now.UnixNano() / int64(j.period)
			if l, ok := last[j.name]; ok && l == n {
				continue
			}
			if _, err := w.q.ClaimPeriod(ctx, w.parts, j.name, n, j.period); err != nil {
				if ctx.Err() == nil {
					log.Error("periodic job claim failed", "job", j.name, "err", err)
				}
				continue
			}
			last[j.name] = n
		}
	}
}

// activeParts lists the partitions this worker leases and is not giving
// back.
func (w *Worker) activeParts() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int, 0, len(w.owned))
	for p, pt := range w.owned {
		if !pt.releasing {
			out = append(out, p)
		}
	}
	return out
}

// reapGateways removes the sessions and lists of gateways that stopped
// sending heartbeats, so their users can log in elsewhere and pushes to
// them stop. Any worker may do it; it is idempotent.
func (w *Worker) reapGateways(ctx context.Context) {
	stale, err := w.q.Stale(ctx, w.q.Keys.Gateways(), time.Now(), w.opts.GatewayTimeout)
	if err != nil {
		return
	}
	for _, gw := range stale {
		w.gwMu.Lock()
		w.deadGW[gw] = time.Now()
		w.gwMu.Unlock()
		n, err := w.q.ForgetGateway(ctx, gw)
		if err != nil {
			w.log.Error("reaping dead gateway failed", "gw", gw, "err", err)
			continue
		}
		w.log.Info("removed a dead gateway's sessions", "gw", gw, "n", n)
	}
}

// forgetConsumersEvery is how often a worker deletes, from the groups of
// the partitions it holds, the consumer names of worker processes that are
// gone.
const forgetConsumersEvery = 30 * time.Second

// forgetConsumers deletes the consumers of gone workers from the groups of
// the partitions this worker holds (each process reads under a name of its
// own, so names would pile up with every restart).
func (w *Worker) forgetConsumers(ctx context.Context) {
	alive, err := w.q.Alive(ctx, w.q.Keys.Workers(), time.Now(), w.opts.Lease)
	if err != nil {
		return
	}
	live := make(map[string]bool, len(alive)+1)
	for _, id := range alive {
		live[id] = true
	}
	live[w.opts.ID] = true
	for _, p := range w.activeParts() {
		n, err := w.q.ForgetConsumers(ctx, p, func(name string) bool { return live[name] })
		if err != nil {
			w.log.Debug("forgetting gone consumers failed", "partition", p, "err", err)
			continue
		}
		if n > 0 {
			w.log.Debug("forgot consumers of gone workers", "partition", p, "n", n)
		}
	}
}
