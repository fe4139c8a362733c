package metrics

import (
	"github.com/maple-farm/maple/gateway"
	"github.com/maple-farm/maple/stat"
	"github.com/maple-farm/maple/worker"
)

// Gateway returns the sample function of a gateway's counters (pass
// &gw.Stats). Names follow Prometheus conventions: base units, "_total"
// on counters.
func Gateway(s *gateway.Stats) stat.SampleFunc {
	return func() stat.Sample {
		return stat.Sample{
			Values: []stat.Value{
				{Name: "connections", Type: stat.Gauge, Value: s.Conns.Load(), Help: "Client connections open now."},
				{Name: "accepted_total", Value: s.Accepted.Load(), Help: "Client connections accepted."},
				{Name: "refused_total", Value: s.Refused.Load(), Help: "Client connections refused at --max-conns."},
				{Name: "frames_in_total", Value: s.FramesIn.Load(), Help: "Frames read from clients."},
				{Name: "frames_out_total", Value: s.FramesOut.Load(), Help: "Frames from workers written to clients (replies and pushes)."},
				{Name: "bytes_in_total", Value: s.BytesIn.Load(), Help: "Bytes read from clients."},
				{Name: "bytes_out_total", Value: s.BytesOut.Load(), Help: "Bytes from workers written to clients."},
				{Name: "bad_frames_total", Value: s.BadFrames.Load(), Help: "Connections closed for a malformed frame."},
				{Name: "busy_total", Value: s.Busy.Load(), Help: "Frames answered -10002 (busy), for any reason: backlog, --queue-bound, --max-inflight, Redis refusing."},
				{Name: "slow_closed_total", Value: s.SlowClosed.Load(), Help: "Clients closed for not reading their output."},
				{Name: "idle_closed_total", Value: s.IdleClosed.Load(), Help: "Clients closed for sending nothing for --idle-timeout."},
				{Name: "redis_errors_total", Value: s.RedisErrs.Load(), Help: "Failed Redis calls."},
				{Name: "pipelines_total", Value: s.Pipelines.Load(), Help: "Redis round trips queueing frames."},
				{Name: "triggers_total", Value: s.Triggers.Load(), Help: "Operator triggers applied."},
				{Name: "bad_triggers_total", Value: s.BadTriggers.Load(), Help: "Malformed or oversized operator triggers ignored."},
				{Name: "over_inflight_total", Value: s.OverInflight.Load(), Help: "Frames answered -10002 because their connection had --max-inflight frames unanswered."},
				{Name: "queue_bound_busy_total", Value: s.QueueBoundBusy.Load(), Help: "Frames answered -10002 at --queue-bound."},
				{Name: "redis_refused_total", Value: s.RedisRefused.Load(), Help: "Frames answered -10002 because Redis refused their entry (out of memory...)."},
				{Name: "per_ip_refused_total", Value: s.PerIPRefused.Load(), Help: "Connections refused at --max-conns-per-ip."},
				{Name: "frame_timeouts_total", Value: s.FrameTimeouts.Load(), Help: "Clients closed for a frame not complete within --frame-timeout."},
				{Name: "partial_shed_total", Value: s.PartialShed.Load(), Help: "Clients closed because partial frames passed --partial-budget (the oldest first)."},
				{Name: "oversize_out_total", Value: s.OversizeOut.Load(), Help: "Pushes and triggers not sent: larger than --max-frame."},
				{Name: "moves_sent_total", Value: s.MovesSent.Load(), Help: "Connections told to move (cmd -1 push) by a draining gateway."},
				{Name: "drain_refused_total", Value: s.DrainRefused.Load(), Help: "Frames answered -10003 (not run, reconnect): sent after a draining gateway stopped taking their connection's work."},
				{Name: "direct_writes_total", Value: s.DirectWrites.Load(), Help: "Sends written straight to a client's socket (nothing of it queued)."},
				{Name: "wakes_total", Value: s.Wakes.Load(), Help: "Sends handed to the event loop with a wake (output queued, a close, no direct write possible)."},
				{Name: "drain_cut_off_total", Value: s.DrainCutOff.Load(), Help: "Connections a draining gateway closed with answers still owed when --close-grace ran out."},
			},
			Dists: []stat.Dist{
				{Name: "request_duration_seconds", Snapshot: s.Latency.Snapshot(),
					Help: "Time from a frame read to its reply handed to the socket: Redis both ways, queueing and the handler."},
			},
		}
	}
}

// Worker returns the sample function of a worker's counters (pass
// &w.Stats).
func Worker(s *worker.Stats) stat.SampleFunc {
	return func() stat.Sample {
		return stat.Sample{
			Values: []stat.Value{
				{Name: "handled_total", Value: s.Handled.Load(), Help: "Requests and connection events handled."},
				{Name: "failed_total", Value: s.Failed.Load(), Help: "Handler errors and panics (answered -10001)."},
				{Name: "no_route_total", Value: s.NoRoute.Load(), Help: "Frames with a cmd no handler serves (answered -10000)."},
				{Name: "redelivered_total", Value: s.Redelivered.Load(), Help: "Entries taken over from a stopped worker."},
				{Name: "duplicates_total", Value: s.Duplicates.Load(), Help: "Copies of handled entries dropped by sequence number."},
				{Name: "dead_letters_total", Value: s.DeadLetters.Load(), Help: "Entries moved to the dead-letter streams."},
				{Name: "inflight", Type: stat.Gauge, Value: s.InFlight.Load(), Help: "Entries read and not yet acknowledged."},
				{Name: "partitions", Type: stat.Gauge, Value: s.Partitions.Load(), Help: "Partitions leased now."},
				{Name: "leases_lost_total", Value: s.LeasesLost.Load(), Help: "Partitions dropped at once: taken by another worker, or liveness or lease renewals failed too long."},
				{Name: "reads_total", Value: s.Reads.Load(), Help: "Redis round trips reading partition streams."},
				{Name: "writes_total", Value: s.Writes.Load(), Help: "Redis round trips writing replies and acknowledgements."},
				{Name: "redis_errors_total", Value: s.RedisErrs.Load(), Help: "Failed Redis calls."},
				{Name: "push_skipped_total", Value: s.PushSkipped.Load(), Help: "Pushes to users who were not connected."},
				{Name: "closed_dropped_total", Value: s.ClosedDropped.Load(), Help: "Frames dropped unrun: their connection closed before they started."},
				{Name: "oversize_refused_total", Value: s.OversizeRefused.Load(), Help: "Replies and pushes refused for a frame over --max-frame."},
				{Name: "refused_writes_total", Value: s.RefusedWrites.Load(), Help: "Redis commands refused for their content (not retried)."},
				{Name: "held_bytes", Type: stat.Gauge, Value: s.HeldBytes.Load(), Help: "Bytes of envelopes read and not yet done (bounded by --max-held-bytes)."},
			},
			Dists: []stat.Dist{
				{Name: "handler_duration_seconds", Snapshot: s.HandlerTime.Snapshot(),
					Help: "Time handlers ran, hooks included."},
			},
		}
	}
}
