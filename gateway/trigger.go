package gateway

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/trigger"
)

// runTriggers applies operator triggers (docs/protocol.md section 4) to this
// gateway's connections. go-redis resubscribes after a reconnect; what was
// published in between is lost (pub/sub is at most once).
func (s *Server) runTriggers(ctx context.Context) {
	log := s.log.With("duty", "triggers")
	sub := s.rdb.Subscribe(ctx, s.keys.TriggerChannel())
	defer sub.Close()
	// A Redis user whose ACL lacks the channel is refused here, and only
	// here: say so once, or the gateway would miss every trigger quietly.
	if _, err := sub.ReceiveTimeout(ctx, 5*time.Second); store.IsNoPermission(err) {
		log.Error("redis user lacks permission to subscribe: triggers will not reach this gateway; see docs/security.md",
			"channel", s.keys.TriggerChannel(), "err", err)
	}
	ch := sub.Channel(redis.WithChannelSize(redisChannelSize))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			s.applyTrigger(ctx, log, []byte(m.Payload))
		}
	}
}

func (s *Server) applyTrigger(ctx context.Context, log *slog.Logger, payload []byte) {
	m, body, err := trigger.Parse(payload)
	if err != nil {
		s.Stats.BadTriggers.Add(1)
		s.limit.Warn("bad trigger", "malformed trigger ignored", "err", err, "n", len(payload))
		return
	}
	if box.HeaderLen+len(body) > s.opts.MaxFrame {
		// Players may receive frames of at most MaxFrame; one bigger would
		// be cut off at their end or drop them.
		s.Stats.BadTriggers.Add(1)
		s.Stats.OversizeOut.Add(1)
		s.limit.Error("trigger too big", "trigger refused: its frame is larger than --max-frame", "op", m.Op, "body", len(body), "max_frame", s.opts.MaxFrame)
		return
	}
	s.Stats.Triggers.Add(1)
	frame := box.Append(nil, m.Cmd, m.Ret, 0, body)
	switch m.Op {
	case trigger.OpWriteToUsers:
		s.forUsers(m.UIDs, func(c *conn) { s.write(c, frame) })
	case trigger.OpCloseUsers:
		s.forUsers(m.UIDs, func(c *conn) { c.peer.close() })
	case trigger.OpBroadcast:
		s.mu.RLock()
		for _, c := range s.conns {
			s.write(c, frame)
		}
		s.mu.RUnlock()
	case trigger.OpWriteToGroup:
		uids, err := s.st.Members(ctx, m.Group)
		if err != nil {
			log.Error("trigger: group lookup failed", "group", m.Group, "err", err)
			return
		}
		s.forUsers(uids, func(c *conn) { s.write(c, frame) })
	case trigger.OpWriteToWorker:
		// Every gateway got the message; the first to mark it queues it.
		sum := sha1.Sum(payload)
		won, err := s.rdb.SetNX(ctx, s.keys.TriggerOnce(hex.EncodeToString(sum[:])), s.opts.ID, 5*time.Second).Result()
		if err != nil {
			log.Error("trigger: write_to_worker failed", "err", err)
			return
		}
		if won {
			if err := s.q.QueueSystem(ctx, s.parts, m.Cmd, body); err != nil {
				log.Error("trigger: write_to_worker failed", "err", err)
			}
		}
	}
}

// forUsers calls f for each local connection of uids; users connected
// elsewhere or nowhere are skipped (and counted when nowhere).
func (s *Server) forUsers(uids []string, f func(*conn)) {
	s.mu.RLock()
	var hit []*conn
	for _, uid := range uids {
		hit = append(hit, s.byUID[uid]...)
	}
	s.mu.RUnlock()
	for _, c := range hit {
		f(c)
	}
}

// redisChannelSize is the buffer of the trigger subscription.
const redisChannelSize = 1024
