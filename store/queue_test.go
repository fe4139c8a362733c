package store

import (
	"bytes"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
)

// enqueueFrames queues n frames of connection conn on partition p (seq
// first, first+1, ...) and returns their envelopes.
func enqueueFrames(t *testing.T, s *Store, p int, conn string, first, n int) [][]byte {
	t.Helper()
	b := PartBatch{Part: p}
	var out [][]byte
	for i := range n {
		e := envOf(KindFrame, conn, uint64(first+i), "f"+strconv.Itoa(first+i))
		out = append(out, e)
		b.Envelopes = append(b.Envelopes, e)
	}
	if err := s.Enqueue(testCtx(t), []PartBatch{b}, 0); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return out
}

// checkDeliveries compares deliveries with the envelopes wanted, in order.
func checkDeliveries(t *testing.T, what string, got []Delivery, part int, deliveries int64, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d deliveries, want %d", what, len(got), len(want))
	}
	for i, d := range got {
		env, _ := DecodeEnvelope(want[i])
		if d.Part != part || d.Deliveries != deliveries || !bytes.Equal(d.Raw, want[i]) || !envEqual(d.Env, env) {
			t.Errorf("%s[%d] = {Part %d Deliveries %d Env %+v}, want {%d %d %+v}",
				what, i, d.Part, d.Deliveries, d.Env, part, deliveries, env)
		}
		if i > 0 && CompareIDs(got[i-1].ID, d.ID) >= 0 {
			t.Errorf("%s: id %s after %s, want stream order", what, d.ID, got[i-1].ID)
		}
	}
}

func TestReadInbound(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		parts := []int{0, 1, 2, 3}
		want := map[int][][]byte{}
		// Queued before any group exists: still served.
		for _, p := range parts {
			want[p] = enqueueFrames(t, s, p, "c"+strconv.Itoa(p), 1, p+1)
		}
		for range 2 { // idempotent
			if err := s.EnsureGroups(ctx, len(parts)); err != nil {
				t.Fatalf("EnsureGroups: %v", err)
			}
		}
		ds, err := s.ReadInbound(ctx, "w1", parts, 100, 100*time.Millisecond)
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
			queue   map[int]int // partition -> new frames
			read    []int
			count   int64
			wantPer map[int]int // partition -> deliveries
		}{
			{"nothing new", nil, parts, 10, nil},
			{"only the partitions read", map[int]int{0: 1, 2: 2}, []int{2}, 10, map[int]int{2: 2}},
			{"left over one", nil, []int{0, 1}, 10, map[int]int{0: 1}},
			{"count is per partition", map[int]int{1: 3, 3: 3}, []int{1, 3}, 2, map[int]int{1: 2, 3: 2}},
			{"rest", nil, parts, 2, map[int]int{1: 1, 3: 1}},
		}
		for _, tt := range tests {
			for p, n := range tt.queue {
				enqueueFrames(t, s, p, "x", 100, n)
			}
			ds, err := s.ReadInbound(ctx, "w1", tt.read, tt.count, 50*time.Millisecond)
			if err != nil {
				t.Fatalf("%s: ReadInbound: %v", tt.name, err)
			}
			got := map[int]int{}
			for _, d := range ds {
				got[d.Part]++
			}
			if len(got) != len(tt.wantPer) {
				t.Errorf("%s: deliveries per partition %v, want %v", tt.name, got, tt.wantPer)
			}
			for p, n := range tt.wantPer {
				if got[p] != n {
					t.Errorf("%s: deliveries per partition %v, want %v", tt.name, got, tt.wantPer)
					break
				}
			}
		}

		t.Run("block wakes on enqueue", func(t *testing.T) {
			done := make(chan []Delivery, 1)
			go func() {
				ds, err := s.ReadInbound(ctx, "w2", []int{1, 2}, 10, 3*time.Second)
				if err != nil {
					t.Errorf("blocked ReadInbound: %v", err)
				}
				done <- ds
			}()
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			enqueueFrames(t, s, 2, "late", 1, 1)
			ds := <-done
			if len(ds) != 1 || ds[0].Part != 2 || ds[0].Env.Conn != "late" {
				t.Errorf("blocked ReadInbound = %+v, want the late frame of partition 2", ds)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("blocked ReadInbound woke after %v", d)
			}
		})

		t.Run("stream deleted", func(t *testing.T) {
			if err := s.rdb.Del(ctx, s.Keys.Inbound(3)).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReadInbound(ctx, "w1", []int{3}, 10, -1); err == nil {
				t.Errorf("ReadInbound on a deleted stream = nil error, want one")
			}
			// The failed read recreated the group: the next one works.
			enqueueFrames(t, s, 3, "again", 1, 1)
			ds, err := s.ReadInbound(ctx, "w1", []int{3}, 10, -1)
			if err != nil || len(ds) != 1 || ds[0].Env.Conn != "again" {
				t.Errorf("ReadInbound after recreate = %+v, %v; want the new frame", ds, err)
			}
		})
	})
}

func TestClaimPending(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		const p = 2
		if err := s.EnsureGroups(ctx, p+1); err != nil {
			t.Fatal(err)
		}
		envs := enqueueFrames(t, s, p, "c", 1, 5)
		read, err := s.ReadInbound(ctx, "dead", []int{p}, 100, -1)
		if err != nil || len(read) != 5 {
			t.Fatalf("ReadInbound = %d deliveries, %v; want 5", len(read), err)
		}
		ids := make([]string, len(read))
		for i, d := range read {
			ids[i] = d.ID
		}

		tests := []struct {
			name     string
			before   func() // changes to the group first
			consumer string
			want     []int // indexes into envs
			wantN    int64 // Deliveries of each
		}{
			{"other consumer takes all, in order", nil, "live", []int{0, 1, 2, 3, 4}, 2},
			{"own entries are not claimed", nil, "live", nil, 0},
			{"taken again", nil, "third", []int{0, 1, 2, 3, 4}, 3},
			{"acknowledged and deleted are skipped", func() {
				if err := s.rdb.XAck(ctx, s.Keys.Inbound(p), ConsumerGroup, ids[0], ids[3]).Err(); err != nil {
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
			var want [][]byte
			for _, i := range tt.want {
				want = append(want, envs[i])
			}
			checkDeliveries(t, tt.name, got, p, tt.wantN, want)
			for i, d := range got {
				if d.ID != ids[tt.want[i]] {
					t.Errorf("%s: claimed[%d].ID = %s, want %s", tt.name, i, d.ID, ids[tt.want[i]])
				}
			}
		}
		// The deleted entry is no longer pending: it was acknowledged.
		pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: s.Keys.Inbound(p), Group: ConsumerGroup, Start: "-", End: "+", Count: 100,
		}).Result()
		if err != nil {
			t.Fatal(err)
		}
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
	})
}

func TestTrim(t *testing.T) {
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
	eachBackend(t, func(t *testing.T, s *Store) {
		ctx := testCtx(t)
		if err := LoadScripts(ctx, s.rdb); err != nil { // Trim pipelines EVALSHA
			t.Fatal(err)
		}
		for p, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.EnsureGroups(ctx, p+1); err != nil {
					t.Fatal(err)
				}
				enqueueFrames(t, s, p, "c", 1, 5)
				all, err := s.rdb.XRange(ctx, s.Keys.Inbound(p), "-", "+").Result()
				if err != nil || len(all) != 5 {
					t.Fatalf("XRange = %d, %v", len(all), err)
				}
				ds, err := s.ReadInbound(ctx, "w", []int{p}, int64(tt.read), -1)
				if err != nil || len(ds) != tt.read {
					t.Fatalf("ReadInbound = %d, %v", len(ds), err)
				}
				if tt.lost > 0 {
					if _, err := s.ReadInbound(ctx, "ghost", []int{p}, int64(tt.lost), -1); err != nil {
						t.Fatal(err)
					}
				}
				pipe := s.rdb.Pipeline()
				var ack []string
				for _, d := range ds[:tt.acked] {
					ack = append(ack, d.ID)
				}
				if len(ack) > 0 {
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
				if n, _ := s.QueueLen(ctx, p); n != int64(len(want)) {
					t.Errorf("QueueLen = %d, want %d", n, len(want))
				}
			})
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
		{NewKeys("").Inbound(0), 0},
		{NewKeys("").Inbound(15), 15},
		{NewKeys("t123_4").Inbound(7), 7},
		{NewKeys("game:eu").Inbound(1024), 1024},
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

func TestToDelivery(t *testing.T) {
	frameEnv := envOf(KindFrame, "c1", 3, "hi")
	tests := []struct {
		name    string
		fields  []any // XADD field/value pairs, as redis-cli would send them
		want    Envelope
		wantRaw []byte // nil: the encoding of want
	}{
		{"operator frame", []any{"cmd", "9", "body", "hello"},
			Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, []byte("hello"))}, nil},
		{"operator frame, fields swapped", []any{"body", "hello", "cmd", "9"},
			Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, []byte("hello"))}, nil},
		{"operator frame without body", []any{"cmd", "9"},
			Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, nil)}, nil},
		{"operator negative cmd", []any{"cmd", "-3", "body", "x"},
			Envelope{Kind: KindSystem, Frame: box.Append(nil, -3, 0, 0, []byte("x"))}, nil},
		{"operator bad cmd", []any{"cmd", "nine", "body", "x"}, Envelope{}, []byte{}},
		{"operator cmd over int32", []any{"cmd", "4294967296"}, Envelope{}, []byte{}},
		{"neither e nor cmd", []any{"foo", "bar"}, Envelope{}, []byte{}},
		{"envelope", []any{"e", frameEnv}, mustDecode(frameEnv), frameEnv},
		{"bad envelope", []any{"e", "zz"}, Envelope{}, []byte("zz")},
	}
	eachBackend(t, func(t *testing.T, s *Store) {
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
		if err != nil || len(read) != len(tests) {
			t.Fatalf("ReadInbound = %d, %v; want %d", len(read), err, len(tests))
		}
		for i, tt := range tests {
			d := toDelivery(p, msgs[i], 4)
			if d.Part != p || d.ID != msgs[i].ID || d.Deliveries != 4 {
				t.Errorf("%s: toDelivery = {Part %d ID %s Deliveries %d}, want {%d %s 4}", tt.name, d.Part, d.ID, d.Deliveries, p, msgs[i].ID)
			}
			if !envEqual(d.Env, tt.want) {
				t.Errorf("%s: toDelivery env = %+v, want %+v", tt.name, d.Env, tt.want)
			}
			wantRaw := tt.wantRaw
			if wantRaw == nil {
				wantRaw = AppendEnvelope(nil, &tt.want)
			}
			if !bytes.Equal(d.Raw, wantRaw) {
				t.Errorf("%s: Raw = %q, want %q", tt.name, d.Raw, wantRaw)
			}
			if d.Env.Kind != 0 {
				// Raw is what a dead letter keeps: it decodes to Env.
				if env, err := DecodeEnvelope(d.Raw); err != nil || !envEqual(env, d.Env) {
					t.Errorf("%s: DecodeEnvelope(Raw) = %+v, %v; want %+v", tt.name, env, err, d.Env)
				}
			}
			if r := read[i]; r.ID != d.ID || r.Deliveries != 1 || !envEqual(r.Env, d.Env) {
				t.Errorf("%s: ReadInbound gave %+v, want the same entry as toDelivery", tt.name, r)
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
