package queue

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store/storetest"
)

// testGW is the gateway the helpers below queue for (the gateway of
// envOf's envelopes).
const testGW = "gw1"

// enqueueFrames queues n frames of connection conn on partition p (seq
// first, first+1, ...) for gateway testGW in one call, which makes one
// stream entry (a bundle), and returns their envelopes.
func enqueueFrames(t *testing.T, s *Broker, p int, conn string, first, n int) [][]byte {
	t.Helper()
	b := PartBatch{Part: p}
	var out [][]byte
	for i := range n {
		e := envOf(KindFrame, conn, uint64(first+i), "f"+strconv.Itoa(first+i))
		out = append(out, e)
		b.Envelopes = append(b.Envelopes, e)
	}
	if err := s.Enqueue(testCtx(t), testGW, []PartBatch{b}, 0); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return out
}

// queuedEntry is what one stream entry holds: its envelopes, and whether
// it is a gateway's bundle (counted in its Queued) or a lone "e" envelope.
type queuedEntry struct {
	envs    [][]byte
	bundled bool
}

// enqueueEntries queues on partition p one call of sizes[i] frames of
// connection conn for each i, sequence numbers counting on from first, and
// returns the entries made.
func enqueueEntries(t *testing.T, s *Broker, p int, conn string, first int, sizes ...int) []queuedEntry {
	t.Helper()
	var out []queuedEntry
	for _, n := range sizes {
		out = append(out, queuedEntry{enqueueFrames(t, s, p, conn, first, n), true})
		first += n
	}
	return out
}

// addLone adds env as a lone "e" entry on partition p, as timers, periodic
// jobs and requeued dead letters do.
func addLone(t *testing.T, s *Broker, p int, env []byte) queuedEntry {
	t.Helper()
	err := s.rdb.XAdd(testCtx(t), &redis.XAddArgs{Stream: s.Keys.Inbound(p), Values: []any{"e", env}}).Err()
	if err != nil {
		t.Fatal(err)
	}
	return queuedEntry{[][]byte{env}, false}
}

// envelopesIn counts the envelopes of entries.
func envelopesIn(entries []queuedEntry) int64 {
	var n int64
	for _, e := range entries {
		n += int64(len(e.envs))
	}
	return n
}

// pendingOf returns the pending entries of partition p (up to 100).
func pendingOf(t *testing.T, ctx context.Context, s *Broker, p int) []redis.XPendingExt {
	t.Helper()
	pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: s.Keys.Inbound(p), Group: keys.ConsumerGroup, Start: "-", End: "+", Count: 100,
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return pend
}

// entryIDs returns the distinct entry ids of ds, in order.
func entryIDs(ds []Delivery) []string {
	var ids []string
	for _, d := range ds {
		if len(ids) == 0 || ids[len(ids)-1] != d.ID {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// checkDeliveries compares deliveries with the entries wanted: one
// delivery per envelope, in order, entry by entry, each telling its
// position in the entry.
func checkDeliveries(t *testing.T, what string, got []Delivery, part int, deliveries int64, want []queuedEntry) {
	t.Helper()
	var flat []Delivery // what got should be, without ids
	for _, e := range want {
		for j, raw := range e.envs {
			flat = append(flat, Delivery{Part: part, Index: j, Count: len(e.envs), Bundled: e.bundled,
				Deliveries: deliveries, Env: mustDecode(raw), Raw: raw})
		}
	}
	if len(got) != len(flat) {
		t.Fatalf("%s: %d deliveries, want %d", what, len(got), len(flat))
	}
	for i, d := range got {
		w := flat[i]
		if d.Part != w.Part || d.Index != w.Index || d.Count != w.Count || d.Bundled != w.Bundled ||
			d.Deliveries != w.Deliveries || !bytes.Equal(StandaloneEnvelope(d.Raw, &d.Env), w.Raw) || !envEqual(d.Env, w.Env) {
			t.Errorf("%s[%d] = {Part %d Index %d Count %d Bundled %v Deliveries %d Env %+v}, want {%d %d %d %v %d %+v}",
				what, i, d.Part, d.Index, d.Count, d.Bundled, d.Deliveries, d.Env,
				w.Part, w.Index, w.Count, w.Bundled, w.Deliveries, w.Env)
		}
		if i == 0 {
			continue
		}
		// The envelopes of one entry share its id; entries come in
		// stream order.
		if c := CompareIDs(got[i-1].ID, d.ID); (w.Index > 0) != (c == 0) || c > 0 {
			t.Errorf("%s: delivery %d (index %d) has id %s after %s", what, i, w.Index, d.ID, got[i-1].ID)
		}
	}
}

// TestReadInbound reads through ReadInbound and through one InboundReads,
// whose arguments are built again as the partitions read change.
func TestReadInbound(t *testing.T) {
	for _, via := range []string{"ReadInbound", "InboundReads"} {
		t.Run(via, func(t *testing.T) { testReadInbound(t, via) })
	}
}

func testReadInbound(t *testing.T, via string) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		reads := map[string]*InboundReads{"w1": s.InboundReads("w1"), "w2": s.InboundReads("w2")}
		readAs := func(consumer string, parts []int, count int64, block time.Duration) ([]Delivery, error) {
			if via == "InboundReads" {
				return reads[consumer].Read(ctx, parts, count, max(block, 10*time.Millisecond))
			}
			return s.ReadInbound(ctx, consumer, parts, count, block)
		}
		read := func(parts []int, count int64, block time.Duration) ([]Delivery, error) {
			return readAs("w1", parts, count, block)
		}
		parts := []int{0, 1, 2, 3}
		sizes := map[int][]int{0: {1}, 1: {2}, 2: {1, 3}, 3: {4, 1, 2}}
		want := map[int][]queuedEntry{}
		// Queued before any group exists: still served.
		for _, p := range parts {
			want[p] = enqueueEntries(t, s, p, "c"+strconv.Itoa(p), 1, sizes[p]...)
		}
		for range 2 { // idempotent
			if err := s.EnsureGroups(ctx, len(parts)); err != nil {
				t.Fatalf("EnsureGroups: %v", err)
			}
		}
		ds, err := read(parts, 100, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		byPart := map[int][]Delivery{}
		for _, d := range ds {
			byPart[d.Part] = append(byPart[d.Part], d)
		}
		for _, p := range parts {
			checkDeliveries(t, "partition "+strconv.Itoa(p), byPart[p], p, 1, want[p])
		}
		if len(byPart) != len(parts) {
			t.Errorf("deliveries from partitions %v, want %v", slices.Sorted(maps.Keys(byPart)), parts)
		}

		tests := []struct {
			name    string
			queue   map[int][]int // partition -> frames of each new entry
			read    []int
			count   int64
			wantPer map[int][]int // partition -> envelopes of each entry delivered
		}{
			{"nothing new", nil, parts, 10, nil},
			{"only the partitions read", map[int][]int{0: {1}, 2: {2}}, []int{2}, 10, map[int][]int{2: {2}}},
			{"left over one", nil, []int{0, 1}, 10, map[int][]int{0: {1}}},
			{"count is entries per partition", map[int][]int{1: {3, 1, 2}, 3: {1, 1, 1}}, []int{1, 3}, 2,
				map[int][]int{1: {3, 1}, 3: {1, 1}}},
			{"rest", nil, parts, 2, map[int][]int{1: {2}, 3: {1}}},
		}
		for _, tt := range tests {
			for p, sizes := range tt.queue {
				enqueueEntries(t, s, p, "x", 100, sizes...)
			}
			ds, err := read(tt.read, tt.count, 50*time.Millisecond)
			if err != nil {
				t.Fatalf("%s: ReadInbound: %v", tt.name, err)
			}
			byPart := map[int][]Delivery{}
			for _, d := range ds {
				byPart[d.Part] = append(byPart[d.Part], d)
			}
			got := map[int][]int{}
			for p, pds := range byPart {
				for _, d := range pds {
					if d.Index == 0 {
						got[p] = append(got[p], d.Count)
					}
				}
				if n := len(entryIDs(pds)); n != len(got[p]) {
					t.Errorf("%s: partition %d: %d entries, %d with an index 0", tt.name, p, n, len(got[p]))
				}
			}
			if len(got) != len(tt.wantPer) {
				t.Errorf("%s: entry sizes per partition %v, want %v", tt.name, got, tt.wantPer)
			}
			for p, sizes := range tt.wantPer {
				if !slices.Equal(got[p], sizes) {
					t.Errorf("%s: entry sizes per partition %v, want %v", tt.name, got, tt.wantPer)
					break
				}
				n := 0
				for _, k := range sizes {
					n += k
				}
				if len(byPart[p]) != n {
					t.Errorf("%s: partition %d: %d deliveries, want %d", tt.name, p, len(byPart[p]), n)
				}
			}
		}

		t.Run("block wakes on enqueue", func(t *testing.T) {
			done := make(chan []Delivery, 1)
			go func() {
				ds, err := readAs("w2", []int{1, 2}, 10, 3*time.Second)
				if err != nil {
					t.Errorf("blocked ReadInbound: %v", err)
				}
				done <- ds
			}()
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			enqueueFrames(t, s, 2, "late", 1, 2)
			ds := <-done
			if len(ds) != 2 || ds[0].Part != 2 || ds[0].Env.Conn != "late" || ds[1].Env.Conn != "late" {
				t.Errorf("blocked ReadInbound = %+v, want the two late frames of partition 2", ds)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("blocked ReadInbound woke after %v", d)
			}
		})

		t.Run("stream deleted", func(t *testing.T) {
			if err := s.rdb.Del(ctx, s.Keys.Inbound(3)).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := read([]int{3}, 10, -1); err == nil {
				t.Errorf("ReadInbound on a deleted stream = nil error, want one")
			}
			// The failed read recreated the group: the next one works.
			enqueueFrames(t, s, 3, "again", 1, 1)
			ds, err := read([]int{3}, 10, -1)
			if err != nil || len(ds) != 1 || ds[0].Env.Conn != "again" {
				t.Errorf("ReadInbound after recreate = %+v, %v; want the new frame", ds, err)
			}
		})
	})
}

func TestClaimPending(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		const p = 2
		if err := s.EnsureGroups(ctx, p+1); err != nil {
			t.Fatal(err)
		}
		// Bundles of several sizes, and a lone envelope (a timer) among
		// them.
		entries := enqueueEntries(t, s, p, "c", 1, 2)
		entries = append(entries, addLone(t, s, p, envOf(KindSystem, "", 0, "timer")))
		entries = append(entries, enqueueEntries(t, s, p, "c", 3, 3, 1, 2)...)
		read, err := s.ReadInbound(ctx, "dead", []int{p}, 100, -1)
		if err != nil {
			t.Fatal(err)
		}
		checkDeliveries(t, "read", read, p, 1, entries)
		ids := entryIDs(read)
		if len(ids) != len(entries) {
			t.Fatalf("read %d entries, want %d", len(ids), len(entries))
		}

		tests := []struct {
			name     string
			before   func() // changes to the group first
			consumer string
			want     []int // indexes into entries
			wantN    int64 // Deliveries of each
		}{
			{"other consumer takes all, in order", nil, "live", []int{0, 1, 2, 3, 4}, 2},
			{"own entries are not claimed", nil, "live", nil, 0},
			{"taken again", nil, "third", []int{0, 1, 2, 3, 4}, 3},
			{"acknowledged and deleted are skipped", func() {
				pipe := s.rdb.Pipeline()
				s.Finished(ctx, pipe, testGW, envelopesIn([]queuedEntry{entries[0], entries[3]}))
				s.Ack(ctx, pipe, p, ids[0], ids[3])
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
				if err := s.rdb.XDel(ctx, s.Keys.Inbound(p), ids[1]).Err(); err != nil {
					t.Fatal(err)
				}
			}, "fourth", []int{2, 4}, 4},
		}
		for _, tt := range tests {
			if tt.before != nil {
				tt.before()
			}
			got, err := s.ClaimPending(ctx, p, tt.consumer)
			if err != nil {
				t.Fatalf("%s: ClaimPending: %v", tt.name, err)
			}
			var want []queuedEntry
			var wantIDs []string
			for _, i := range tt.want {
				want = append(want, entries[i])
				wantIDs = append(wantIDs, ids[i])
			}
			checkDeliveries(t, tt.name, got, p, tt.wantN, want)
			if gotIDs := entryIDs(got); !slices.Equal(gotIDs, wantIDs) {
				t.Errorf("%s: claimed entries %v, want %v", tt.name, gotIDs, wantIDs)
			}
		}
		// The deleted entry is no longer pending: it was acknowledged.
		pend := pendingOf(t, ctx, s, p)
		var pendIDs []string
		for _, pe := range pend {
			pendIDs = append(pendIDs, pe.ID)
			if pe.Consumer != "fourth" {
				t.Errorf("entry %s pending for %s, want fourth", pe.ID, pe.Consumer)
			}
		}
		if want := []string{ids[2], ids[4]}; !slices.Equal(pendIDs, want) {
			t.Errorf("pending after claims = %v, want %v", pendIDs, want)
		}
		// The bundles not finished are still counted, claims or not.
		if n, err := s.Queued(ctx, testGW); err != nil || n != envelopesIn([]queuedEntry{entries[2], entries[4]}) {
			t.Errorf("Queued = %d, %v; want %d", n, err, envelopesIn([]queuedEntry{entries[2], entries[4]}))
		}
	})
}

func TestTrim(t *testing.T) {
	sizes := []int{1, 2, 3, 2, 1} // the frames of each of 5 entries
	tests := []struct {
		name    string
		read    int // entries delivered to consumer "w" (of 5)
		acked   int // the first this many of them acknowledged
		lost    int // then this many delivered to "ghost" and never acknowledged
		keepIdx int // index of the first entry that must survive
	}{
		{"nothing acked", 5, 0, 0, 0},
		{"some acked", 5, 2, 0, 2},
		{"all acked keeps the last delivered", 5, 5, 0, 4},
		{"undelivered kept", 3, 3, 0, 2},
		{"taken but never received kept", 2, 2, 2, 2},
	}
	eachBackend(t, func(t *testing.T, s0 *Broker) {
		ctx := testCtx(t)
		if err := LoadScripts(ctx, s0.rdb); err != nil { // Trim pipelines EVALSHA
			t.Fatal(err)
		}
		for p, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := New(s0.rdb, storetest.Prefix(t)) // a frame count of its own
				if err := s.EnsureGroups(ctx, p+1); err != nil {
					t.Fatal(err)
				}
				entries := enqueueEntries(t, s, p, "c", 1, sizes...)
				all, err := s.rdb.XRange(ctx, s.Keys.Inbound(p), "-", "+").Result()
				if err != nil || len(all) != len(sizes) {
					t.Fatalf("XRange = %d, %v", len(all), err)
				}
				ds, err := s.ReadInbound(ctx, "w", []int{p}, int64(tt.read), -1)
				if err != nil || len(entryIDs(ds)) != tt.read {
					t.Fatalf("ReadInbound = %d entries, %v", len(entryIDs(ds)), err)
				}
				if tt.lost > 0 {
					if _, err := s.ReadInbound(ctx, "ghost", []int{p}, int64(tt.lost), -1); err != nil {
						t.Fatal(err)
					}
				}
				pipe := s.rdb.Pipeline()
				if ack := entryIDs(ds)[:tt.acked]; len(ack) > 0 {
					s.Finished(ctx, pipe, testGW, envelopesIn(entries[:tt.acked]))
					s.Ack(ctx, pipe, p, ack...)
				}
				s.Trim(ctx, pipe, p)
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
				msgs, err := s.rdb.XRange(ctx, s.Keys.Inbound(p), "-", "+").Result()
				if err != nil {
					t.Fatal(err)
				}
				var got, want []string
				for _, m := range msgs {
					got = append(got, m.ID)
				}
				for _, m := range all[tt.keepIdx:] {
					want = append(want, m.ID)
				}
				if !slices.Equal(got, want) {
					t.Errorf("after Trim ids = %v, want %v", got, want)
				}
				// Trim leaves the frame count alone: the frames not yet
				// finished, whether trimmed or not.
				if n, err := s.Queued(ctx, testGW); err != nil || n != envelopesIn(entries[tt.acked:]) {
					t.Errorf("Queued = %d, %v; want %d", n, err, envelopesIn(entries[tt.acked:]))
				}
			})
		}
	})
}

// TestAck: acknowledging entries takes them off the pending list, and only
// that: the gateway's frame count is Finished's.
func TestAck(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			ctx := testCtx(t)
			rec := &cmdRecorder{}
			be.rdb.AddHook(rec)
			s := New(be.rdb, storetest.Prefix(t))
			const p = 1
			if err := s.EnsureGroups(ctx, p+1); err != nil {
				t.Fatal(err)
			}
			entries := enqueueEntries(t, s, p, "c", 1, 3, 2, 1)
			entries = append(entries, addLone(t, s, p, envOf(KindSystem, "", 0, "timer")))
			ds, err := s.ReadInbound(ctx, "w", []int{p}, 10, -1)
			if err != nil {
				t.Fatal(err)
			}
			checkDeliveries(t, "read", ds, p, 1, entries)
			ids := entryIDs(ds)
			steps := []struct {
				name     string
				ids      []string
				wantPend []string // entries pending after
			}{
				{"nothing acked", nil, ids},
				{"first bundle", ids[:1], ids[1:]},
				{"several at once, lone envelope too", []string{ids[1], ids[3]}, ids[2:3]},
				{"again: nothing more", ids[:2], ids[2:3]},
				{"last bundle", ids[2:3], nil},
			}
			rec.take()
			for _, st := range steps {
				if len(st.ids) > 0 {
					pipe := s.rdb.Pipeline()
					s.Ack(ctx, pipe, p, st.ids...)
					if _, err := pipe.Exec(ctx); err != nil {
						t.Fatalf("%s: Ack: %v", st.name, err)
					}
					if got := rec.take(); !slices.EqualFunc(got, [][]string{{"xack"}}, slices.Equal) {
						t.Errorf("%s: Ack sent %q, want one XACK", st.name, got)
					}
				}
				var got []string
				for _, pe := range pendingOf(t, ctx, s, p) {
					got = append(got, pe.ID)
				}
				if !slices.Equal(got, st.wantPend) {
					t.Errorf("%s: pending %v, want %v", st.name, got, st.wantPend)
				}
				if n, err := s.Queued(ctx, testGW); err != nil || n != 6 {
					t.Errorf("%s: Queued = %d, %v; want 6 (Ack leaves the count alone)", st.name, n, err)
				}
				rec.take()
			}
		})
	}
}

// TestFinished: finished envelopes leave their gateway's frame count, and
// only that gateway's, with one DECRBY that acknowledges nothing; a count
// below zero reads as zero.
func TestFinished(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			ctx := testCtx(t)
			rec := &cmdRecorder{}
			be.rdb.AddHook(rec)
			s := New(be.rdb, storetest.Prefix(t))
			if err := s.EnsureGroups(ctx, 2); err != nil {
				t.Fatal(err)
			}
			enqueueEntries(t, s, 0, "c", 1, 3, 2)
			other := []PartBatch{{Part: 1, Envelopes: [][]byte{envOf(KindOpen, "d", 1, ""), envOf(KindFrame, "d", 2, "x"),
				envOf(KindFrame, "d", 3, "x"), envOf(KindClose, "d", 4, "")}}}
			if err := s.Enqueue(ctx, "gw2", other, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReadInbound(ctx, "w", []int{0, 1}, 10, -1); err != nil {
				t.Fatal(err)
			}
			rec.take()
			steps := []struct {
				gw    string
				n     int64
				want1 int64 // Queued(testGW) after
				want2 int64 // Queued(gw2) after
			}{
				{testGW, 3, 2, 4},
				{testGW, 0, 2, 4},
				{"gw2", 4, 2, 0},
				{testGW, 2, 0, 0},
				{testGW, 4, 0, 0}, // below zero
				{"never", 1, 0, 0},
			}
			for i, st := range steps {
				pipe := s.rdb.Pipeline()
				s.Finished(ctx, pipe, st.gw, st.n)
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
				want := [][]string{{"decrby " + s.Keys.Queued(st.gw) + " " + strconv.FormatInt(st.n, 10)}}
				if got := rec.take(); !slices.EqualFunc(got, want, slices.Equal) {
					t.Errorf("step %d: Finished(%s, %d) sent %q, want %q", i, st.gw, st.n, got, want)
				}
				n1, err1 := s.Queued(ctx, testGW)
				n2, err2 := s.Queued(ctx, "gw2")
				if err1 != nil || err2 != nil || n1 != st.want1 || n2 != st.want2 {
					t.Errorf("step %d: Finished(%s, %d): Queued = %d, %d (%v, %v); want %d, %d",
						i, st.gw, st.n, n1, n2, err1, err2, st.want1, st.want2)
				}
				rec.take()
			}
			// Nothing was acknowledged.
			for p, want := range []int64{2, 1} {
				if pend, err := s.rdb.XPending(ctx, s.Keys.Inbound(p), keys.ConsumerGroup).Result(); err != nil || pend.Count != want {
					t.Errorf("partition %d: XPENDING = %+v, %v; want %d pending", p, pend, err, want)
				}
			}
		})
	}
}

// TestHandledMarks: the handled marks of connections, per gateway, as a
// worker taking over an entry reads them.
func TestHandledMarks(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		query := func(name string, qs []HandledQuery, want [][]uint64) {
			t.Helper()
			if err := s.HandledSeqs(ctx, qs); err != nil {
				t.Fatalf("%s: HandledSeqs: %v", name, err)
			}
			for i, q := range qs {
				if !slices.Equal(q.Seqs, want[i]) || q.Seqs == nil {
					t.Errorf("%s: marks of %v of %s = %v, want %v", name, q.Conns, q.Gateway, q.Seqs, want[i])
				}
			}
		}
		queries := func() []HandledQuery {
			return []HandledQuery{
				{Gateway: "gw1", Conns: []string{"c1", "c2", "c3"}, Seqs: []uint64{9, 9, 9, 9}}, // stale Seqs are replaced
				{Gateway: "gw2", Conns: []string{"c1", "c2"}},
				{Gateway: "gw3", Conns: []string{"c1"}},
			}
		}
		query("none yet", queries(), [][]uint64{{0, 0, 0}, {0, 0}, {0}})
		if err := s.HandledSeqs(ctx, nil); err != nil {
			t.Errorf("HandledSeqs(nil) = %v", err)
		}

		// The same connection ids on other gateways are other connections.
		pipe := s.rdb.Pipeline()
		s.MarkHandled(ctx, pipe, "gw1", "c1", uint64(5), "c2", uint64(7))
		s.MarkHandled(ctx, pipe, "gw3", "c1", uint64(9))
		s.MarkHandled(ctx, pipe, "gw2", "c1", uint64(1<<63+3))
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		query("marked", queries(), [][]uint64{{5, 7, 0}, {1<<63 + 3, 0}, {9}})

		pipe = s.rdb.Pipeline()
		s.MarkHandled(ctx, pipe, "gw1", "c1", uint64(6), "c3", uint64(2))
		s.ForgetHandled(ctx, pipe, "gw1", "c2")
		s.ForgetHandled(ctx, pipe, "gw3", "c1", "never")
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		query("moved on and forgotten", queries(), [][]uint64{{6, 0, 2}, {1<<63 + 3, 0}, {0}})

		// One hash per gateway, in the gateway's slot (Keys.Handled).
		if got, err := s.rdb.HGetAll(ctx, s.Keys.Handled("gw1")).Result(); err != nil ||
			!maps.Equal(got, map[string]string{"c1": "6", "c3": "2"}) {
			t.Errorf("HGETALL %s = %v, %v; want c1 6, c3 2", s.Keys.Handled("gw1"), got, err)
		}

		// What a worker did not write reads as no mark.
		if err := s.rdb.HSet(ctx, s.Keys.Handled("gw2"), "c2", "junk").Err(); err != nil {
			t.Fatal(err)
		}
		query("unreadable", queries()[1:2], [][]uint64{{1<<63 + 3, 0}})
	})
}

// TestTries: the start counts of a redelivered entry's envelopes.
func TestTries(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		steps := []struct {
			p     int
			id    string
			index int
			want  int64
		}{
			{3, "1-0", 0, 1},
			{3, "1-0", 0, 2},
			{3, "1-0", 2, 1},
			{3, "1-0", 0, 3},
			{3, "2-0", 0, 1}, // another entry
			{4, "1-0", 0, 1}, // the same id on another partition
			{3, "1-0", 2, 2},
		}
		for i, st := range steps {
			n, err := s.StartTry(ctx, st.p, st.id, st.index)
			if err != nil || n != st.want {
				t.Errorf("step %d: StartTry(%d, %s, %d) = %d, %v; want %d", i, st.p, st.id, st.index, n, err, st.want)
			}
		}
		// The counts do not outlive a day, even if no worker clears them.
		for _, key := range []string{s.Keys.Tries(3, "1-0"), s.Keys.Tries(4, "1-0")} {
			if pttl, err := s.rdb.PTTL(ctx, key).Result(); err != nil || pttl <= 0 || pttl > 24*time.Hour {
				t.Errorf("PTTL %s = %v, %v; want in (0, 24h]", key, pttl, err)
			}
		}
		pipe := s.rdb.Pipeline()
		s.ClearTries(ctx, pipe, 3, "1-0")
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.rdb.Exists(ctx, s.Keys.Tries(3, "1-0")).Result(); n != 0 {
			t.Errorf("tries of 1-0 still exist after ClearTries")
		}
		for _, st := range []struct {
			p     int
			id    string
			index int
			want  int64
		}{
			{3, "1-0", 0, 1}, // counting starts over
			{3, "2-0", 0, 2}, // others are untouched
			{4, "1-0", 0, 2},
		} {
			if n, err := s.StartTry(ctx, st.p, st.id, st.index); err != nil || n != st.want {
				t.Errorf("after ClearTries: StartTry(%d, %s, %d) = %d, %v; want %d", st.p, st.id, st.index, n, err, st.want)
			}
		}
	})
}

func TestNextID(t *testing.T) {
	tests := []struct{ id, want string }{
		{"0-0", "0-1"},
		{"1-0", "1-1"},
		{"1526919030474-55", "1526919030474-56"},
		{"1-9", "1-10"},
		{"1-18446744073709551614", "1-18446744073709551615"},
		{"1-18446744073709551615", "2-0"}, // the sequence is full: next millisecond
		{"5", "5"},                        // not a full id: unchanged
		{"5-x", "5-x"},
	}
	for _, tt := range tests {
		if got := NextID(tt.id); got != tt.want {
			t.Errorf("NextID(%q) = %q, want %q", tt.id, got, tt.want)
		}
		if CompareIDs(tt.id, tt.want) > 0 {
			t.Errorf("CompareIDs(%q, NextID) > 0", tt.id)
		}
	}
}

func TestCompareIDs(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"1-1", "1-0", 1},
		{"1-9", "1-10", -1}, // numeric, not lexicographic
		{"9-0", "10-0", -1},
		{"10-0", "9-99", 1},
		{"2-0", "1-18446744073709551615", 1},
		{"0-0", "0-0", 0},
		{"5", "5-0", 0}, // a bare millisecond is seq 0
		{"1526919030474-55", "1526919030474-56", -1},
	}
	for _, tt := range tests {
		if got := CompareIDs(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareIDs(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestPartOf(t *testing.T) {
	tests := []struct {
		key  string
		want int
	}{
		{keys.New("").Inbound(0), 0},
		{keys.New("").Inbound(15), 15},
		{keys.New("t123_4").Inbound(7), 7},
		{keys.New("game:eu").Inbound(1024), 1024},
		{"maple:{p3}:dead", -1},
		{"maple:{p3}:owner", -1},
		{"maple:{gw:x}:out", -1},
		{"", -1},
	}
	s := New(nil, "")
	for _, tt := range tests {
		if got := s.partOf(tt.key); got != tt.want {
			t.Errorf("partOf(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}

func TestToDeliveries(t *testing.T) {
	frameEnv := envOf(KindFrame, "c1", 3, "hi")
	bundle := [][]byte{envOf(KindOpen, "c2", 1, ""), envOf(KindFrame, "c2", 2, "a"),
		envOf(KindFrame, "c3", 5, "b"), envOf(KindClose, "c2", 3, "")}
	badInside := [][]byte{envOf(KindFrame, "c4", 1, "x"), []byte("zz"), envOf(KindFrame, "c4", 2, "y")}
	type want struct {
		env Envelope
		raw []byte // nil: the encoding of env
	}
	decoded := func(raws ...[]byte) []want {
		var out []want
		for _, r := range raws {
			out = append(out, want{mustDecode(r), r})
		}
		return out
	}
	tests := []struct {
		name    string
		fields  []any // XADD field/value pairs, as redis-cli would send them
		bundled bool
		want    []want // one per delivery
	}{
		{"operator frame", []any{"cmd", "9", "body", "hello"}, false,
			[]want{{Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, []byte("hello"))}, nil}}},
		{"operator frame, fields swapped", []any{"body", "hello", "cmd", "9"}, false,
			[]want{{Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, []byte("hello"))}, nil}}},
		{"operator frame without body", []any{"cmd", "9"}, false,
			[]want{{Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, nil)}, nil}}},
		{"operator negative cmd", []any{"cmd", "-3", "body", "x"}, false,
			[]want{{Envelope{Kind: KindSystem, Frame: box.Append(nil, -3, 0, 0, []byte("x"))}, nil}}},
		{"operator bad cmd", []any{"cmd", "nine", "body", "x"}, false, []want{{Envelope{}, []byte{}}}},
		{"operator cmd over int32", []any{"cmd", "4294967296"}, false, []want{{Envelope{}, []byte{}}}},
		{"neither e, b nor cmd", []any{"foo", "bar"}, false, []want{{Envelope{}, []byte{}}}},
		{"envelope", []any{"e", frameEnv}, false, decoded(frameEnv)},
		{"bad envelope", []any{"e", "zz"}, false, []want{{Envelope{}, []byte("zz")}}},
		{"bundle", []any{"b", AppendBundle(nil, bundle)}, true, decoded(bundle...)},
		{"bundle of one", []any{"b", AppendBundle(nil, bundle[2:3])}, true, decoded(bundle[2])},
		// One unreadable envelope does not spoil the others of its bundle.
		{"bundle with a bad envelope", []any{"b", AppendBundle(nil, badInside)}, true,
			[]want{{mustDecode(badInside[0]), badInside[0]}, {Envelope{}, badInside[1]}, {mustDecode(badInside[2]), badInside[2]}}},
		// An unreadable bundle is one unreadable delivery, for the dead
		// letters.
		{"bad bundle", []any{"b", "\x05ab"}, false, []want{{Envelope{}, []byte("\x05ab")}}},
		{"empty bundle", []any{"b", ""}, false, []want{{Envelope{}, []byte{}}}},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		const p = 5
		if err := s.EnsureGroups(ctx, p+1); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			args := append([]any{"XADD", s.Keys.Inbound(p), "*"}, tt.fields...)
			if err := s.rdb.Do(ctx, args...).Err(); err != nil {
				t.Fatalf("%s: %v: %v", tt.name, args, err)
			}
		}
		msgs, err := s.rdb.XRange(ctx, s.Keys.Inbound(p), "-", "+").Result()
		if err != nil || len(msgs) != len(tests) {
			t.Fatalf("XRANGE = %d entries, %v; want %d", len(msgs), err, len(tests))
		}
		read, err := s.ReadInbound(ctx, "w", []int{p}, 100, -1)
		if err != nil {
			t.Fatal(err)
		}
		var all []Delivery
		for i, tt := range tests {
			prefix := []Delivery{{ID: "before"}}
			ds := toDeliveries(prefix, p, msgs[i], 4)
			if len(ds) == 0 || ds[0].ID != "before" {
				t.Fatalf("%s: toDeliveries lost what out held", tt.name)
			}
			ds = ds[1:]
			all = append(all, ds...)
			if len(ds) != len(tt.want) {
				t.Errorf("%s: %d deliveries, want %d", tt.name, len(ds), len(tt.want))
				continue
			}
			for j, d := range ds {
				w := tt.want[j]
				if d.Part != p || d.ID != msgs[i].ID || d.Deliveries != 4 || d.Index != j || d.Count != len(tt.want) || d.Bundled != tt.bundled {
					t.Errorf("%s[%d]: toDeliveries = {Part %d ID %s Deliveries %d Index %d Count %d Bundled %v}, want {%d %s 4 %d %d %v}",
						tt.name, j, d.Part, d.ID, d.Deliveries, d.Index, d.Count, d.Bundled, p, msgs[i].ID, j, len(tt.want), tt.bundled)
				}
				if !envEqual(d.Env, w.env) {
					t.Errorf("%s[%d]: toDeliveries env = %+v, want %+v", tt.name, j, d.Env, w.env)
				}
				wantRaw := w.raw
				if wantRaw == nil {
					wantRaw = AppendEnvelope(nil, &w.env)
				}
				if !bytes.Equal(d.Raw, wantRaw) {
					t.Errorf("%s[%d]: Raw = %q, want %q", tt.name, j, d.Raw, wantRaw)
				}
				if d.Env.Kind != 0 {
					// Raw is what a dead letter keeps: it decodes to Env.
					if env, err := DecodeEnvelope(d.Raw); err != nil || !envEqual(env, d.Env) {
						t.Errorf("%s[%d]: DecodeEnvelope(Raw) = %+v, %v; want %+v", tt.name, j, env, err, d.Env)
					}
				}
			}
		}
		if len(read) != len(all) {
			t.Fatalf("ReadInbound = %d deliveries, toDeliveries %d", len(read), len(all))
		}
		for i, r := range read {
			d := all[i]
			if r.ID != d.ID || r.Index != d.Index || r.Count != d.Count || r.Bundled != d.Bundled || r.Deliveries != 1 ||
				!envEqual(r.Env, d.Env) || !bytes.Equal(r.Raw, d.Raw) {
				t.Errorf("ReadInbound[%d] = %+v, want the same as toDeliveries: %+v", i, r, d)
			}
		}
	})
}

func mustDecode(b []byte) Envelope {
	e, err := DecodeEnvelope(b)
	if err != nil {
		panic(err)
	}
	return e
}
