package queue

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maple-farm/maple/store/storetest"
	"github.com/redis/go-redis/v9"
)

// readEntries queues n entries on partition 1 (groups made first) and
// reads them as consumer "w", so that they are pending for a Commit to
// acknowledge; it returns their ids.
func readEntries(t *testing.T, ctx context.Context, s *Broker, n int) []string {
	t.Helper()
	if err := s.EnsureGroups(ctx, 2); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range n {
		id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Inbound(1), Values: []any{"e", "x"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ds, err := s.ReadInbound(ctx, "w", []int{1}, 10, -1); err != nil || len(ds) != n {
		t.Fatalf("read %d, %v", len(ds), err)
	}
	return ids
}

// TestPlanWithinBudget: every pipeline a batch is cut into stays within
// the budget, and the steps keep their order.
func TestPlanWithinBudget(t *testing.T) {
	q := New(nil, "")
	var b Batch
	for i := range 300 {
		b.Out("gw"+strconv.Itoa(i%3), make([]byte, 100+i))
	}
	for i := range 500 {
		b.Mark("gw1", "gw1-"+strconv.Itoa(i), 1)
	}
	for i := range 400 {
		b.Ack(i%4, strconv.Itoa(1_000_000+i)+"-0")
		b.Finished("gw1", 1)
	}
	o := CommitOptions{Budget: 5000, ReadsBatches: func(gw string) bool { return gw == "gw1" }}
	pipes := q.plan(&b, &o)
	if len(pipes) < 2 {
		t.Fatalf("%d pipelines, want the batch split", len(pipes))
	}
	for i, p := range pipes {
		size := 0
		for _, s := range p {
			size += s.size
		}
		if size > o.Budget {
			t.Errorf("pipeline %d: %d bytes, over the budget of %d", i, size, o.Budget)
		}
	}
	// cut keeps every item once, in order, within the limit.
	sizes := []int{3, 4, 9, 1, 1, 1, 12, 2}
	var runs []string
	cut(len(sizes), 8, func(i int) int { return sizes[i] }, func(lo, hi int) { runs = append(runs, fmt.Sprint(sizes[lo:hi])) })
	if got, want := fmt.Sprint(runs), "[[3 4] [9] [1 1 1] [12] [2]]"; got != want {
		t.Errorf("cut = %s, want %s", got, want)
	}
}

// TestCommitOrder: whatever order a batch was gathered in, Commit sends
// outbound messages, then handled marks, then frame counts, then
// acknowledgements, then the clean-up; split over several pipelines by a
// small budget, the order holds across them, and each pipeline is a
// transaction. Everything arrives.
func TestCommitOrder(t *testing.T) {
	for _, budget := range []int{0, 600} {
		t.Run(fmt.Sprint("budget ", budget), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, s *Broker) {
				ctx := testCtx(t)
				if err := LoadScripts(ctx, s.rdb); err != nil {
					t.Fatal(err)
				}
				ids := readEntries(t, ctx, s, 3)
				s.rdb.Set(ctx, s.Keys.Queued("gw1"), 5, 0)
				s.rdb.HSet(ctx, s.Keys.Handled("gw1"), "gw1-old", 7)
				s.rdb.HSet(ctx, s.Keys.Tries(1, ids[0]), "0", 2)

				var b Batch
				// Gathered out of order: acknowledgements first.
				for _, id := range ids {
					b.Ack(1, id)
				}
				b.Finished("gw1", 3)
				b.ForgetHandled("gw1", "gw1-old")
				b.ClearTries(1, ids[0])
				b.Trim(1)
				for i := range 6 {
					b.Mark("gw1", "gw1-"+strconv.Itoa(i%3), uint64(i+1))
					b.Out("gw1", []byte(fmt.Sprintf("reply %d %s", i, strings.Repeat("x", 100))))
				}
				rec := &cmdRecorder{}
				s.rdb.AddHook(rec)
				sent := 0
				err := s.Commit(ctx, &b, CommitOptions{Budget: budget, Sent: func() { sent++ },
					Retry:   func(err error, _ time.Duration) { t.Errorf("retry after %v", err) },
					Refused: func(cmd string, err error) { t.Errorf("%s refused: %v", cmd, err) }})
				if err != nil {
					t.Fatal(err)
				}
				var order []string
				for _, trip := range rec.take() {
					// A worker killed mid-pipeline must leave all of it or
					// nothing: each round trip is a transaction.
					if len(trip) < 3 || trip[0] != "multi" || trip[len(trip)-1] != "exec" {
						t.Errorf("round trip %v, want it in MULTI ... EXEC", trip)
					}
					for _, c := range trip {
						name, _, _ := strings.Cut(c, " ")
						if name == "multi" || name == "exec" {
							continue
						}
						if len(order) == 0 || order[len(order)-1] != name {
							order = append(order, name)
						}
					}
				}
				if want := "[lpush hset decrby xack hdel del evalsha]"; fmt.Sprint(order) != want {
					t.Errorf("commands in order %v, want %s", order, want)
				}
				if budget > 0 && sent < 2 {
					t.Errorf("%d pipelines, want the batch split by a budget of %d", sent, budget)
				}
				msgs, _ := s.rdb.LRange(ctx, s.Keys.Outbound("gw1"), 0, -1).Result()
				slices.Reverse(msgs) // LPUSH: the first is last
				if len(msgs) != 6 || !strings.HasPrefix(msgs[0], "reply 0") || !strings.HasPrefix(msgs[5], "reply 5") {
					t.Errorf("outbound list %.40q, want the 6 replies in order", msgs)
				}
				marks, _ := s.rdb.HGetAll(ctx, s.Keys.Handled("gw1")).Result()
				if want := "map[gw1-0:4 gw1-1:5 gw1-2:6]"; fmt.Sprint(marks) != want {
					t.Errorf("handled marks %v, want %s (the last of each connection, the old one forgotten)", marks, want)
				}
				if n, _ := s.Queued(ctx, "gw1"); n != 2 {
					t.Errorf("frame count %d, want 2", n)
				}
				if p := pendingOf(t, ctx, s, 1); len(p) != 0 {
					t.Errorf("%d entries pending, want all acknowledged", len(p))
				}
				if n, _ := s.rdb.Exists(ctx, s.Keys.Tries(1, ids[0])).Result(); n != 0 {
					t.Error("start counts not cleared")
				}
				if n, _ := s.rdb.XLen(ctx, s.Keys.Inbound(1)).Result(); n != 1 {
					t.Errorf("%d entries left in the stream, want it trimmed up to the last delivered", n)
				}
				// A Batch is reused: Reset leaves nothing to send.
				b.Reset()
				if err := s.Commit(ctx, &b, CommitOptions{Sent: func() { t.Error("an empty batch sent a pipeline") }}); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestCommitRefused: a command Redis refuses for its content is reported,
// not sent again, and the rest of the batch goes on.
func TestCommitRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		s.rdb.Set(ctx, s.Keys.Outbound("gwbad"), "not a list", 0)
		var b Batch
		b.Out("gwbad", []byte("m1"))
		b.Out("gwok", []byte("m2"))
		b.Mark("gwok", "gwok-1", 3)
		var refused []string
		err := s.Commit(ctx, &b, CommitOptions{
			Retry:   func(err error, _ time.Duration) { t.Fatalf("retry after %v", err) },
			Refused: func(cmd string, err error) { refused = append(refused, cmd) }})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(refused) != "[lpush]" {
			t.Errorf("refused %v, want [lpush]", refused)
		}
		if msgs, _ := s.rdb.LRange(ctx, s.Keys.Outbound("gwok"), 0, -1).Result(); fmt.Sprint(msgs) != "[m2]" {
			t.Errorf("other gateway's list %v, want [m2]", msgs)
		}
		if v, _ := s.rdb.HGet(ctx, s.Keys.Handled("gwok"), "gwok-1").Result(); v != "3" {
			t.Errorf("mark %q, want 3", v)
		}
	})
}

// TestCommitOutOfMemory: Redis out of memory refuses the writes that
// grow it as they are queued, and discards the whole transaction; the
// batch goes again as a plain pipeline, so the acknowledgements land and
// each refusal is reported once, as before transactions.
func TestCommitOutOfMemory(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	s := New(rdb, storetest.Prefix(t))
	ctx := testCtx(t)
	ids := readEntries(t, ctx, s, 2)
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	var b Batch
	b.Out("gw1", []byte("reply"))
	b.Mark("gw1", "gw1-1", 2)
	for _, id := range ids {
		b.Ack(1, id)
	}
	var refused []string
	sent := 0
	err := s.Commit(ctx, &b, CommitOptions{Sent: func() { sent++ },
		Retry:   func(err error, _ time.Duration) { t.Fatalf("retry after %v", err) },
		Refused: func(cmd string, err error) { refused = append(refused, cmd) }})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(refused) != "[lpush hset]" {
		t.Errorf("refused %v, want [lpush hset], once each", refused)
	}
	if sent != 2 {
		t.Errorf("%d round trips, want 2 (the transaction, then the plain pipeline)", sent)
	}
	if p := pendingOf(t, ctx, s, 1); len(p) != 0 {
		t.Errorf("%d entries pending, want both acknowledged", len(p))
	}
}

// TestCommitOnCluster: a cluster client sends each node its share of a
// pipeline side by side, so Commit sends a batch in three round trips,
// one after the other: the gateways' commands, the partitions', then the
// forgotten marks. The gateway's list and the partition's stream live on
// different masters here, where one pipeline would let the
// acknowledgement land before the reply. A second gateway's replies go
// in the same round trip (its own slot).
func TestCommitOnCluster(t *testing.T) {
	c := storetest.StartCluster(t, 3, 0)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.MasterAddrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	s := New(rdb, storetest.Prefix(t))
	ctx := testCtx(t)
	gw := ""
	for i := range 100 {
		if g := "gw" + strconv.Itoa(i); c.MasterOf(s.Keys.Outbound(g)) != c.MasterOf(s.Keys.Inbound(1)) {
			gw = g
			break
		}
	}
	if err := LoadScripts(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	ids := readEntries(t, ctx, s, 3)
	rdb.Set(ctx, s.Keys.Queued(gw), 5, 0)
	rdb.HSet(ctx, s.Keys.Handled(gw), gw+"-old", 7)

	var b Batch
	for _, id := range ids {
		b.Ack(1, id)
	}
	b.Finished(gw, 3)
	b.ForgetHandled(gw, gw+"-old")
	b.Trim(1)
	for i := range 4 {
		b.Out(gw, []byte(fmt.Sprintf("reply %d", i)))
		b.Mark(gw, gw+"-"+strconv.Itoa(i%2), uint64(i+1))
	}
	other := gw + "x"
	b.Out(other, []byte("other reply"))
	b.Mark(other, other+"-1", 9)
	rec := &cmdRecorder{}
	rdb.AddHook(rec)
	sent := 0
	err := s.Commit(ctx, &b, CommitOptions{Sent: func() { sent++ },
		Retry:   func(err error, _ time.Duration) { t.Errorf("retry after %v", err) },
		Refused: func(cmd string, err error) { t.Errorf("%s refused: %v", cmd, err) }})
	if err != nil {
		t.Fatal(err)
	}
	var trips []string
	for _, trip := range rec.take() {
		var names []string
		for _, c := range trip {
			name, _, _ := strings.Cut(c, " ")
			if name != "multi" && name != "exec" && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
		trips = append(trips, fmt.Sprint(names))
	}
	if want := "[[lpush hset decrby] [xack evalsha] [hdel]]"; fmt.Sprint(trips) != want || sent != 3 {
		t.Errorf("%d round trips %v, want %s", sent, trips, want)
	}
	if msgs, _ := rdb.LRange(ctx, s.Keys.Outbound(other), 0, -1).Result(); fmt.Sprint(msgs) != "[other reply]" {
		t.Errorf("the other gateway's list %q, want its reply", msgs)
	}
	if msgs, _ := rdb.LRange(ctx, s.Keys.Outbound(gw), 0, -1).Result(); fmt.Sprint(msgs) != "[reply 3 reply 2 reply 1 reply 0]" {
		t.Errorf("outbound list %q, want the 4 replies (LPUSH: the first last)", msgs)
	}
	if marks, _ := rdb.HGetAll(ctx, s.Keys.Handled(gw)).Result(); fmt.Sprint(marks) != fmt.Sprintf("map[%s-0:3 %s-1:4]", gw, gw) {
		t.Errorf("handled marks %v, want the last of each connection, the old one forgotten", marks)
	}
	if p := pendingOf(t, ctx, s, 1); len(p) != 0 {
		t.Errorf("%d entries pending, want all acknowledged", len(p))
	}
}
