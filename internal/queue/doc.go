// Package queue is the farm's queue machinery in Redis, which a game never
// sees: how gateways queue their players' frames and workers take them,
// finish them and answer. It sits behind one type, Broker, whose methods
// are split by duty, one file each (as go-redis splits its commands by
// data type):
//
//	envelope.go   the envelope a gateway queues (codec)
//	bundle.go     many envelopes in one stream entry (codec)
//	out.go        the messages workers send gateways (codec)
//	enqueue.go    gateways: queue bundles, the frame count (Enqueue, Queued, Finished)
//	inbound.go    workers: consumer groups, reads, takeover, Ack, Trim
//	marks.go      handled marks and start counts (MarkHandled, HandledSeqs, StartTry)
//	commit.go     a worker's results written in a safe order (Batch, Commit)
//	dead.go       dead letters (DeadLetter, DeadLetters, Requeue)
//	lease.go      partition leases and consumer names (AcquireLease, ForgetConsumers)
//	outbound.go   gateways' outbound lists (PushOut, TakeOut, WaitOut)
//	ids.go        stream ids (NextID, CompareIDs)
//	registry.go   partitions and the registries of live processes (Heartbeat, Alive, Stale)
//	timers.go     timers (ScheduleAfter, CancelTimer, MoveDueTimers)
//	system.go     frames with no client: periodic jobs and operator frames
//	session.go    binding users to connections (BindUser, UnbindUser)
//	forget.go     forgetting a gateway, stopped or dead (ForgetGateway)
//	client.go     opening the farm's Redis clients (NewClient, NewBlockingClient)
//	scripts.go    the Lua scripts of lua/*.lua (LoadScripts)
//
// Key names come from internal/keys; the game-facing API over the same
// Redis is package store. Errors read "store: ..." as they did when this
// lived in package store: operators' scripts and docs quote them.
//
// Every Lua script is a file in lua/, opening with its KEYS, ARGV and
// reply; each is embedded into a package var next to the one method that
// runs it, and tested on real Redis and miniredis (scripts_test.go).
package queue
