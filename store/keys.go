package store

import (
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// DefaultPrefix starts every key and channel name of a farm.
const DefaultPrefix = "maple"

// DefaultPartitions is the number of inbound queues of a new farm. The
// number is fixed the first time any process of a farm starts (see
// Store.Partitions); afterwards every process reads it from Redis.
const DefaultPartitions = 16

// ConsumerGroup is the consumer group of every inbound stream.
const ConsumerGroup = "workers"

// Keys names every Redis key and channel of one farm. It is the only place
// where key names are spelled; the table in doc.go says who writes and
// reads each one.
//
// Keys that one Lua script or one blocking command touches together share a
// hash tag ({...}), so the farm runs unchanged on Redis Cluster:
//
//   - {p<N>}: everything of inbound partition N (stream, owner lease,
//     dead letters, timers)
//   - {gw:<id>}: everything of one gateway (its outbound list, its frame
//     count, its connections' handled marks)
//   - {u:<uid>}: everything of one user (session, groups)
//   - {g:<name>}: the members of one group
type Keys struct {
	Prefix string
}

// NewKeys returns the key namer for prefix ("" means DefaultPrefix).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{Prefix: prefix}
}

func (k Keys) partTag(p int) string { return k.Prefix + ":{p" + strconv.Itoa(p) + "}" }

// Inbound is the stream of partition p: envelopes from gateways (frames,
// open and close events), timers that fell due, and operator frames.
func (k Keys) Inbound(p int) string { return k.partTag(p) + ":in" }

// Queued counts the envelopes gateway gw queued that workers have not
// finished (its share of the queues, in frames: a stream entry bundles
// many). The gateway refuses frames past its bound by it.
func (k Keys) Queued(gw string) string { return k.Prefix + ":{gw:" + gw + "}:queued" }

// Handled is the hash of connection id -> sequence number of the last of
// its envelopes a worker finished, for the connections of gateway gw. A
// worker taking over an entry skips what is done.
func (k Keys) Handled(gw string) string { return k.Prefix + ":{gw:" + gw + "}:handled" }

// Tries is the hash of envelope index -> starts, for a redelivered entry
// of partition p: an envelope that kills every worker it starts on is
// found and dead-lettered alone, not with its whole entry.
func (k Keys) Tries(p int, id string) string { return k.partTag(p) + ":tries:" + id }

// Owner holds the id of the worker that leases partition p.
func (k Keys) Owner(p int) string { return k.partTag(p) + ":owner" }

// Dead is the dead-letter stream of partition p.
func (k Keys) Dead(p int) string { return k.partTag(p) + ":dead" }

// Timers is the sorted set (score = due time, unix ms) of partition p's
// timers; TimerData holds their envelopes by timer id.
func (k Keys) Timers(p int) string { return k.partTag(p) + ":timers" }

// TimerData is the hash of timer id -> envelope for partition p.
func (k Keys) TimerData(p int) string { return k.partTag(p) + ":timerdata" }

// Outbound is the list a gateway pops its replies, pushes and control
// messages from. Workers LPUSH, the gateway RPOPs: first in, first out.
func (k Keys) Outbound(gw string) string { return k.Prefix + ":{gw:" + gw + "}:out" }

// OutboundTransit holds the batch of outbound messages a gateway took
// but has not acknowledged; OutboundBatch numbers it.
func (k Keys) OutboundTransit(gw string) string { return k.Prefix + ":{gw:" + gw + "}:transit" }

// OutboundBatch holds the number of the batch in OutboundTransit.
func (k Keys) OutboundBatch(gw string) string { return k.Prefix + ":{gw:" + gw + "}:batch" }

// GatewayUsers is the set of user ids logged in on a gateway, so that the
// sessions of a dead gateway can be removed.
func (k Keys) GatewayUsers(gw string) string { return k.Prefix + ":{gw:" + gw + "}:users" }

// Gateways is the registry of live gateways: sorted set of id -> last
// heartbeat (unix ms).
func (k Keys) Gateways() string { return k.Prefix + ":gateways" }

// Workers is the registry of live workers: sorted set of id -> last
// heartbeat (unix ms).
func (k Keys) Workers() string { return k.Prefix + ":workers" }

// PartitionCount holds the farm's number of partitions.
func (k Keys) PartitionCount() string { return k.Prefix + ":partitions" }

// Session is the hash that binds a user id to a connection: gw, conn.
func (k Keys) Session(uid string) string { return k.Prefix + ":{u:" + uid + "}:session" }

// UserGroups is the set of groups a user belongs to.
func (k Keys) UserGroups(uid string) string { return k.Prefix + ":{u:" + uid + "}:groups" }

// User is a game's per-user hash of fields.
func (k Keys) User(uid string) string { return k.Prefix + ":{u:" + uid + "}:data" }

// Group is the set of user ids in a group (room, table, lobby).
func (k Keys) Group(name string) string { return k.Prefix + ":{g:" + name + "}:members" }

// Counter is a named counter (the demo's cmd 3).
func (k Keys) Counter(name string) string { return k.Prefix + ":{c:" + name + "}:counter" }

// TicTacToe is the board hash of one match of the tic-tac-toe example
// (examples/tictactoe, store/tictactoe.go): players, cells, turn, winner.
func (k Keys) TicTacToe(match string) string { return k.Prefix + ":{ttt:" + match + "}:board" }

// Cron holds the last period a periodic job was started for. It lives
// with the partition the job's runs are queued on (PartitionOf(job)).
func (k Keys) Cron(p int, job string) string { return k.partTag(p) + ":cron:" + job }

// Stat is where a process reports its counters; it expires when the
// process stops reporting.
func (k Keys) Stat(kind, id string) string { return k.Prefix + ":stat:" + kind + ":" + id }

// StatPattern matches every Stat key.
func (k Keys) StatPattern() string { return k.Prefix + ":stat:*" }

// TriggerOnce marks a write_to_worker trigger as taken by one gateway
// (every gateway receives it); digest identifies the message.
func (k Keys) TriggerOnce(digest string) string { return k.Prefix + ":trigger:once:" + digest }

// TriggerChannel is the pub/sub channel gateways listen to for operator
// triggers (docs/protocol.md section 4).
func (k Keys) TriggerChannel() string { return k.Prefix + ":trigger" }

// PartitionOf maps a connection id to its partition. All events of one
// connection go to one partition, which is what keeps them in order.
func PartitionOf(connID string, partitions int) int {
	return int(crc32.ChecksumIEEE([]byte(connID)) % uint32(partitions))
}

// MaxNameLen is the longest user id, group name or counter name the farm
// takes, in bytes. A name travels in key names and, for a user id, in every
// envelope of a logged-in connection: bounding it bounds what one client
// can make the farm write to Redis per frame.
const MaxNameLen = 128

// ErrNameTooLong reports a name over MaxNameLen.
var ErrNameTooLong = fmt.Errorf("store: name longer than %d bytes", MaxNameLen)

// ErrNameBraces reports a name with a brace. A name sits inside its key's
// hash tag ("{u:<uid>}"): a brace in it would end the tag early and move
// the key to another name's slot ("x}{evil" would land in user x's).
var ErrNameBraces = errors.New("store: name with { or }")

// CheckName returns an error naming what (like "user id") if name cannot
// go into a key: longer than MaxNameLen, or with a brace.
func CheckName(what, name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s of %d bytes", ErrNameTooLong, what, len(name))
	}
	if strings.ContainsAny(name, "{}") {
		return fmt.Errorf("%w: %s %q", ErrNameBraces, what, name)
	}
	return nil
}
