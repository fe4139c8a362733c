// Package trigger lets operators and other systems act on players from
// outside the farm: push to users, a group or everyone, close users, or
// queue a frame for the workers. Messages are JSON on the pub/sub channel
// "<prefix>:trigger" (docs/protocol.md section 4), so redis-cli can send them as
// well as this package:
//
//	PUBLISH maple:trigger '{"op":"write_to_users","uids":["42"],"cmd":100,"body":"hello"}'
//
// Every gateway receives every message and acts on its own connections, so
// a push reaches each connected user once, wherever they are. Pub/sub is
// at most once: a gateway that is reconnecting to Redis misses what is
// published meanwhile.
package trigger

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
)

// Operations (the "op" field).
const (
	OpWriteToUsers  = "write_to_users"
	OpWriteToGroup  = "write_to_group"
	OpBroadcast     = "broadcast"
	OpCloseUsers    = "close_users"
	OpWriteToWorker = "write_to_worker"
)

// Message is one trigger.
type Message struct {
	Op      string   `json:"op"`
	UIDs    []string `json:"uids,omitempty"`
	Group   string   `json:"group,omitempty"`
	Cmd     int32    `json:"cmd,omitempty"`
	Ret     int32    `json:"ret,omitempty"`
	Body    string   `json:"body,omitempty"`
	BodyB64 string   `json:"body_b64,omitempty"`
	// ID only makes a message distinct: gateways take identical
	// write_to_worker messages published within a few seconds once.
	ID string `json:"id,omitempty"`
}

// ErrMalformed is wrapped by every Parse error.
var ErrMalformed = errors.New("trigger: malformed message")

// Bounds of a trigger. Whoever may PUBLISH on the trigger channel may act
// on every player (docs/security.md), and every gateway decodes every
// message whole before it acts: Parse refuses a message past these before
// any gateway acts on it, and Publish before it is sent.
const (
	// MaxMessage is the longest message Parse decodes, in bytes (8 MiB).
	// It also bounds the body; the gateway refuses a frame larger than
	// its --max-frame (1 MiB by default) in any case. A longer message
	// would not reach the gateways anyway with Redis's default limit of a
	// subscriber's output buffer (8 MiB for 60 s, 32 MiB at once: the
	// subscription is cut).
	MaxMessage = 8 << 20
	// MaxUIDs is the most user ids one write_to_users or close_users
	// names; each is at most store.MaxNameLen (128) bytes. Send several
	// messages for more users.
	MaxUIDs = 10000
)

// Parse decodes and checks a message; the error says what is wrong. A
// message is refused if it is longer than MaxMessage, has an unknown op,
// lacks what its op needs, names more than MaxUIDs users, or an empty
// user id, or a user id or group name that cannot be a name of the farm
// (store.CheckName: over store.MaxNameLen bytes, or with a brace).
func Parse(data []byte) (Message, []byte, error) {
	var m Message
	if len(data) > MaxMessage {
		return m, nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(data), MaxMessage)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	body := []byte(m.Body)
	if m.BodyB64 != "" {
		if m.Body != "" {
			return m, nil, fmt.Errorf("%w: body and body_b64 both set", ErrMalformed)
		}
		b, err := base64.StdEncoding.DecodeString(m.BodyB64)
		if err != nil {
			return m, nil, fmt.Errorf("%w: body_b64: %v", ErrMalformed, err)
		}
		body = b
	}
	switch m.Op {
	case OpWriteToUsers:
		if err := checkUIDs(m); err != nil {
			return m, nil, err
		}
	case OpCloseUsers:
		if err := checkUIDs(m); err != nil {
			return m, nil, err
		}
		return m, nil, nil
	case OpWriteToGroup:
		if m.Group == "" {
			return m, nil, fmt.Errorf("%w: %s needs group", ErrMalformed, m.Op)
		}
		if err := store.CheckName("group name", m.Group); err != nil {
			return m, nil, fmt.Errorf("%w: group: %v", ErrMalformed, err)
		}
	case OpBroadcast, OpWriteToWorker:
	case "":
		return m, nil, fmt.Errorf("%w: no op", ErrMalformed)
	default:
		return m, nil, fmt.Errorf("%w: unknown op %q", ErrMalformed, m.Op)
	}
	if m.Cmd == 0 {
		return m, nil, fmt.Errorf("%w: %s needs a non-zero cmd", ErrMalformed, m.Op)
	}
	return m, body, nil
}

// checkUIDs checks the user ids of write_to_users and close_users.
func checkUIDs(m Message) error {
	switch {
	case len(m.UIDs) == 0:
		return fmt.Errorf("%w: %s needs uids", ErrMalformed, m.Op)
	case len(m.UIDs) > MaxUIDs:
		return fmt.Errorf("%w: %s names %d uids, more than %d", ErrMalformed, m.Op, len(m.UIDs), MaxUIDs)
	}
	for i, uid := range m.UIDs {
		if uid == "" {
			return fmt.Errorf("%w: uids[%d] is empty", ErrMalformed, i)
		}
		if err := store.CheckName("user id", uid); err != nil {
			return fmt.Errorf("%w: uids[%d]: %v", ErrMalformed, i, err)
		}
	}
	return nil
}

// Publisher sends triggers from Go.
type Publisher struct {
	rdb   redis.UniversalClient
	keys  keys.Keys
	st    *queue.Broker
	parts int
}

// NewPublisher returns a Publisher for the farm with the given key prefix
// ("" is the default).
func NewPublisher(rdb redis.UniversalClient, prefix string) *Publisher {
	return &Publisher{rdb: rdb, keys: keys.New(prefix), st: queue.New(rdb, prefix)}
}

// Publish sends m and returns how many gateways received it.
func (p *Publisher) Publish(ctx context.Context, m Message) (int64, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	if _, _, err := Parse(data); err != nil {
		return 0, err
	}
	// On Redis Cluster PUBLISH answers the subscribers of the node it ran
	// on (the message still reaches every node), and go-redis would send
	// it to any node. Gateways subscribe on the master of the channel's
	// slot, so it goes there, routed like a key, for a count of them.
	cmd := redis.NewIntCmd(ctx, "publish", p.keys.TriggerChannel(), data)
	cmd.SetFirstKeyPos(1)
	_ = p.rdb.Process(ctx, cmd)
	n, err := cmd.Result()
	if err != nil {
		return 0, fmt.Errorf("trigger: publish: %w", err)
	}
	return n, nil
}

// WriteToUsers pushes a frame (sn 0) to each connected user of uids.
func (p *Publisher) WriteToUsers(ctx context.Context, uids []string, cmd int32, body []byte) (int64, error) {
	return p.Publish(ctx, withBody(Message{Op: OpWriteToUsers, UIDs: uids, Cmd: cmd}, body))
}

// WriteToGroup pushes a frame to every connected member of a group.
func (p *Publisher) WriteToGroup(ctx context.Context, group string, cmd int32, body []byte) (int64, error) {
	return p.Publish(ctx, withBody(Message{Op: OpWriteToGroup, Group: group, Cmd: cmd}, body))
}

// Broadcast pushes a frame to every connection of the farm.
func (p *Publisher) Broadcast(ctx context.Context, cmd int32, body []byte) (int64, error) {
	return p.Publish(ctx, withBody(Message{Op: OpBroadcast, Cmd: cmd}, body))
}

// CloseUsers closes the connections of uids.
func (p *Publisher) CloseUsers(ctx context.Context, uids []string) (int64, error) {
	return p.Publish(ctx, Message{Op: OpCloseUsers, UIDs: uids})
}

// WriteToWorker queues a frame for the workers, as if from a system client.
// Unlike the pub/sub operations it goes straight to a partition stream, so
// it is delivered exactly once even with many gateways (the redis-cli
// equivalent is an XADD, see docs/operations.md).
func (p *Publisher) WriteToWorker(ctx context.Context, cmd int32, body []byte) error {
	if p.parts == 0 {
		n, err := p.st.Partitions(ctx, 0)
		if err != nil {
			return err
		}
		p.parts = n
	}
	return p.st.QueueSystem(ctx, p.parts, cmd, body)
}

// WriteToWorkerViaGateways queues a frame for the workers through the
// gateways: it publishes a write_to_worker trigger, which every gateway
// receives and one of them queues (the redis-cli way, docs/protocol.md
// section 4). It needs nothing but PUBLISH on the trigger channel, where
// WriteToWorker needs the farm's keys: an operator's Redis user may be
// allowed only that (docs/security.md). It returns how many gateways
// received the message: with none, nothing was queued. Unlike
// WriteToWorker it is at most once (pub/sub; a gateway that fails between
// taking the message and queueing it loses it). Each call carries a
// random id, so that two identical calls within a few seconds are two
// frames, not one.
func (p *Publisher) WriteToWorkerViaGateways(ctx context.Context, cmd int32, body []byte) (int64, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return 0, err
	}
	m := withBody(Message{Op: OpWriteToWorker, Cmd: cmd, ID: hex.EncodeToString(id[:])}, body)
	return p.Publish(ctx, m)
}

// FarmExists reports whether anything of a farm is found under prefix ("" is
// the default): a registry of gateways or of workers, or the partition
// count, which the first process of a farm sets and nothing deletes. A
// tool about to write for a farm checks it first, so that a mistyped
// --prefix does not create a partition count and queues that no process
// will ever read. It only reads.
func FarmExists(ctx context.Context, rdb redis.UniversalClient, prefix string) (bool, error) {
	k := keys.New(prefix)
	keys := []string{k.Gateways(), k.Workers(), k.PartitionCount()}
	cmds := make([]*redis.IntCmd, len(keys))
	// One EXISTS per key: on Redis Cluster they live in different slots.
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, key := range keys {
			cmds[i] = p.Exists(ctx, key)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("trigger: look for a farm under prefix %q: %w", k.Prefix, err)
	}
	for _, c := range cmds {
		if c.Val() > 0 {
			return true, nil
		}
	}
	return false, nil
}

// withBody sets body as text when it is valid UTF-8 JSON can carry, else
// as base64.
func withBody(m Message, body []byte) Message {
	if utf8.Valid(body) && isText(body) {
		m.Body = string(body)
	} else {
		m.BodyB64 = base64.StdEncoding.EncodeToString(body)
	}
	return m
}

func isText(b []byte) bool {
	for _, r := range string(b) {
		if r == '\uFFFD' || (r < 0x20 && r != '\n' && r != '\t') {
			return false
		}
	}
	return true
}
