package queue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/store/storetest"
)

// The Redis paths of the farm, on a real redis-server, per frame: what the
// gateway's pusher, the worker's reader and writer, and the gateway's
// outbound reader each cost. Run: go test -bench . -run '^$' ./internal/queue

func benchBroker(b *testing.B) (*Broker, context.Context) {
	srv := storetest.Start(b, storetest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { rdb.Close() })
	s := New(rdb, "bench")
	ctx := context.Background()
	if err := LoadScripts(ctx, rdb); err != nil {
		b.Fatal(err)
	}
	if err := s.EnsureGroups(ctx, DefaultPartitions); err != nil {
		b.Fatal(err)
	}
	return s, ctx
}

func benchEnvelopes(n int) []PartBatch {
	batches := make([]PartBatch, DefaultPartitions)
	for p := range batches {
		batches[p].Part = p
	}
	for i := 0; i < n; i++ {
		conn := fmt.Sprintf("gw-%d", i%64)
		e := Envelope{Kind: KindFrame, Seq: uint64(i + 1), At: time.Now().UnixNano(), Gateway: "gw", Conn: conn,
			Addr: "127.0.0.1:5000", Frame: box.Append(nil, 1, 0, uint32(i+1), make([]byte, 64))}
		p := PartitionOf(conn, DefaultPartitions)
		batches[p].Envelopes = append(batches[p].Envelopes, AppendEnvelope(nil, &e))
	}
	return batches
}

// BenchmarkEnqueue is the gateway pusher's round trip: 256 frames over 16
// partitions in one pipeline. ns/op and allocs are per frame.
func BenchmarkEnqueue(b *testing.B) {
	s, ctx := benchBroker(b)
	batches := benchEnvelopes(256)
	var queued int64
	b.ReportAllocs()
	for b.Loop() {
		if err := s.EnqueueCached(ctx, "gw", batches, 1_000_000, &queued); err != nil {
			b.Fatal(err)
		}
		if queued > 100_000 {
			b.StopTimer()
			// Empty the queues and the gateway's count: the bound counts
			// frames in Keys.Queued, which deleting the streams leaves
			// alone.
			for p := range DefaultPartitions {
				s.rdb.Del(ctx, s.Keys.Inbound(p))
			}
			s.rdb.Del(ctx, s.Keys.Queued("gw"))
			_ = s.EnsureGroups(ctx, DefaultPartitions)
			queued = 0
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/frame")
}

// BenchmarkReadAck is the worker's side: read a batch of 256 frames from 16
// partitions in one call, then acknowledge them in one pipeline.
func BenchmarkReadAck(b *testing.B) {
	s, ctx := benchBroker(b)
	batches := benchEnvelopes(256)
	parts := make([]int, DefaultPartitions)
	for p := range parts {
		parts[p] = p
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		if err := s.Enqueue(ctx, "gw", batches, 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		ds, err := s.ReadInbound(ctx, "w", parts, 256, 0)
		if err != nil || len(ds) != 256 {
			b.Fatalf("read %d, %v", len(ds), err)
		}
		pipe := s.rdb.Pipeline()
		byPart := map[int][]string{}
		var finished int64
		for _, d := range ds {
			if d.Index == 0 {
				byPart[d.Part] = append(byPart[d.Part], d.ID)
			}
			if d.Bundled {
				finished++
			}
		}
		// As the worker's writer does: the count first, then the Acks.
		s.Finished(ctx, pipe, "gw", finished)
		for p, ids := range byPart {
			s.Ack(ctx, pipe, p, ids...)
			s.Trim(ctx, pipe, p)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/frame")
}

// BenchmarkReplyPath is the worker's LPUSH of 256 replies for one gateway
// and the gateway's TakeOut of them.
func BenchmarkReplyPath(b *testing.B) {
	s, ctx := benchBroker(b)
	msgs := make([]any, 256)
	for i := range msgs {
		msgs[i] = AppendOut(nil, &Out{Kind: OutWrite, Conn: "gw-1", At: 1, Frames: box.Append(nil, 1, 0, uint32(i), make([]byte, 64))})
	}
	var pos OutPos
	b.ReportAllocs()
	for b.Loop() {
		pipe := s.rdb.Pipeline()
		s.PushOut(ctx, pipe, "gw", msgs...)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		got, err := s.TakeOut(ctx, "gw", &pos, 512, true)
		if err != nil || len(got) != 256 {
			b.Fatalf("took %d, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/frame")
}
