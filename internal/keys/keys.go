// Package keys names every Redis key and channel of a farm. It is the only
// place where key names are spelled: the game-facing store, the queue
// machinery (internal/queue), the gateway, the stat reporter and the
// operator commands all take their names from here, and docs/design.md
// ("Key schema") lists them with their types, lifetimes, writers and
// readers.
//
// Keys that one Lua script or one multi-key command touches together share
// a hash tag ({...}), so the farm runs unchanged on Redis Cluster:
//
//   - {p<N>}: everything of inbound partition N (stream, owner lease,
//     dead letters, timers, periodic jobs)
//   - {gw:<id>}: everything of one gateway (its outbound list, its frame
//     count, its connections' handled marks, its user set)
//   - {u:<uid>}: everything of one user (session, groups, data)
//   - {g:<name>}: the members of one group
//   - {c:<name>}: one counter
//   - {<kind>:<id>}: a game's own keys (Tagged, store.Store.Key)
package keys

import "strconv"

// DefaultPrefix starts every key and channel name of a farm.
const DefaultPrefix = "maple"

// ConsumerGroup is the consumer group of every inbound stream.
const ConsumerGroup = "workers"

// Keys names the keys of the farm with one prefix.
type Keys struct {
	Prefix string
}

// New returns the key namer for prefix ("" means DefaultPrefix).
func New(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{Prefix: prefix}
}

// Tagged is the key <prefix>:{<kind>:<id>}:<part>: every key with the same
// kind and id hashes to one slot. The farm's user, group and counter keys
// are Tagged keys of kinds u, g and c; a game's own keys are Tagged keys of
// its kinds (store.Store.Key). kind and id must hold no brace (the caller
// checks): a brace would end the tag early.
func (k Keys) Tagged(kind, id, part string) string {
	return k.Prefix + ":{" + kind + ":" + id + "}:" + part
}

func (k Keys) partTag(p int) string { return k.Prefix + ":{p" + strconv.Itoa(p) + "}" }

func (k Keys) gwTag(gw string) string { return k.Prefix + ":{gw:" + gw + "}" }

// Inbound is the stream of partition p: envelopes from gateways (frames,
// open and close events), timers that fell due, and operator frames.
func (k Keys) Inbound(p int) string { return k.partTag(p) + ":in" }

// Queued counts the envelopes gateway gw queued that workers have not
// finished (its share of the queues, in frames: a stream entry bundles
// many). The gateway refuses frames past its bound by it.
func (k Keys) Queued(gw string) string { return k.gwTag(gw) + ":queued" }

// Handled is the hash of connection id -> sequence number of the last of
// its envelopes a worker finished, for the connections of gateway gw. A
// worker taking over an entry skips what is done.
func (k Keys) Handled(gw string) string { return k.gwTag(gw) + ":handled" }

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
func (k Keys) Outbound(gw string) string { return k.gwTag(gw) + ":out" }

// OutboundTransit held the batch of outbound messages a gateway took but
// had not acknowledged, before release 2026-12 (out_take.lua); a current
// gateway leaves its messages in Outbound until it has handed them out
// (out_trim.lua). Forgetting a gateway (GatewayKeys) still deletes it, for
// older gateways.
func (k Keys) OutboundTransit(gw string) string { return k.gwTag(gw) + ":transit" }

// OutboundBatch holds the number of a gateway's last take of its
// outbound messages (TakeOut).
func (k Keys) OutboundBatch(gw string) string { return k.gwTag(gw) + ":batch" }

// GatewayUsers is the set of user ids logged in on a gateway, so that the
// sessions of a dead gateway can be removed.
func (k Keys) GatewayUsers(gw string) string { return k.gwTag(gw) + ":users" }

// GatewayKeys are all the keys of gateway gw, which forgetting it deletes.
func (k Keys) GatewayKeys(gw string) []string {
	return []string{k.GatewayUsers(gw), k.Outbound(gw), k.OutboundTransit(gw), k.OutboundBatch(gw),
		k.Queued(gw), k.Handled(gw)}
}

// Gateways is the registry of live gateways: sorted set of id -> last
// heartbeat (unix ms).
func (k Keys) Gateways() string { return k.Prefix + ":gateways" }

// Workers is the registry of live workers: sorted set of id -> last
// heartbeat (unix ms).
func (k Keys) Workers() string { return k.Prefix + ":workers" }

// Live is the workers' liveness registry: sorted set of worker instance
// id -> its last renewal (that worker's clock, unix ms, used only to
// forget it). Whether a worker is alive is its mark, LiveMark, which it
// sets with a TTL of Options.Liveness several times per liveness: one that
// stops (SIGKILL) is seen dead by the others when Redis expires its mark,
// and they take its partitions over without waiting for their leases.
func (k Keys) Live() string { return k.Prefix + ":{live}" }

// LiveMark is worker id's liveness mark, in Live's slot (hash tag
// {live}).
func (k Keys) LiveMark(id string) string { return k.Live() + ":" + id }

// PartitionCount holds the farm's number of partitions.
func (k Keys) PartitionCount() string { return k.Prefix + ":partitions" }

// Session is the hash that binds a user id to a connection: gw, conn.
func (k Keys) Session(uid string) string { return k.Tagged("u", uid, "session") }

// UserGroups is the set of groups a user belongs to.
func (k Keys) UserGroups(uid string) string { return k.Tagged("u", uid, "groups") }

// User is a game's per-user hash of fields.
func (k Keys) User(uid string) string { return k.Tagged("u", uid, "data") }

// Group is the set of user ids in a group (room, table, lobby).
func (k Keys) Group(name string) string { return k.Tagged("g", name, "members") }

// Counter is a named counter (store.Store.IncrCounter).
func (k Keys) Counter(name string) string { return k.Tagged("c", name, "counter") }

// Cron holds the last period a periodic job was started for. It lives
// with the partition the job's runs are queued on.
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
