package queue

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store/storetest"
)

// testedScripts names every script of the scripts map with the test that
// runs it through the Broker's methods. TestScriptsAreTested fails when a
// script is added without a test.
var testedScripts = map[string]string{
	"lease_acquire":  "TestLease, TestLiveRound",
	"lease_release":  "TestLease, TestReleaseLeases",
	"dead_requeue":   "TestDeadLetter",
	"session_bind":   "TestBindUser",
	"session_unbind": "TestUnbindUser, TestForgetGateway",
	"timer_add":      "TestTimers",
	"timer_cancel":   "TestTimers",
	"timer_due":      "TestTimers, TestMoveDueTimersConcurrent",
	"cron_claim":     "TestClaimPeriod",
	"out_trim":       "TestTakeOut, TestTakeOutWait",
	"trim":           "TestTrim",
}

// backend is one Redis the store tests run against.
type backend struct {
	name string
	rdb  redis.UniversalClient
}

// backends starts a real redis-server and a miniredis (TTLs on the wall
// clock) for t, with one client each; both stop when t ends.
func backends(t *testing.T) []backend {
	t.Helper()
	srv := storetest.Start(t, storetest.Options{})
	m := storetest.Mini(t)
	bs := []backend{
		{"redis", redis.NewClient(&redis.Options{Addr: srv.Addr})},
		{"miniredis", redis.NewClient(&redis.Options{Addr: m.Addr()})},
	}
	for _, b := range bs {
		t.Cleanup(func() { _ = b.rdb.Close() })
	}
	return bs
}

// eachBackend runs f as a subtest on every backend, with a Broker under a
// key prefix of its own.
func eachBackend(t *testing.T, f func(t *testing.T, s *Broker)) {
	t.Helper()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			f(t, New(b.rdb, storetest.Prefix(t)))
		})
	}
}

// testCtx is the test's context, bounded so that a hung server fails the
// test instead of the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// envOf encodes an envelope of kind k for connection conn; frames carry cmd 1
// with body text.
func envOf(k Kind, conn string, seq uint64, text string) []byte {
	e := Envelope{Kind: k, Seq: seq, Gateway: "gw1", Conn: conn, Addr: "127.0.0.1:9", UID: "u-" + conn}
	if k == KindFrame || k == KindSystem {
		e.Frame = box.Append(nil, 1, 0, uint32(seq), []byte(text))
	}
	return AppendEnvelope(nil, &e)
}

// envEqual compares envelopes, taking a nil and an empty frame as equal.
func envEqual(a, b Envelope) bool {
	return a.Kind == b.Kind && a.Seq == b.Seq && a.Gateway == b.Gateway && a.Conn == b.Conn &&
		a.Addr == b.Addr && a.UID == b.UID && bytes.Equal(a.Frame, b.Frame)
}

// streamEnvelopes returns the raw "e" fields of a stream, in order.
func streamEnvelopes(t *testing.T, ctx context.Context, rdb redis.UniversalClient, key string) [][]byte {
	t.Helper()
	return streamField(t, ctx, rdb, key, "e", false)
}

// streamField returns field of every entry of a stream, in order; with
// required, an entry without it fails the test.
func streamField(t *testing.T, ctx context.Context, rdb redis.UniversalClient, key, field string, required bool) [][]byte {
	t.Helper()
	msgs, err := rdb.XRange(ctx, key, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", key, err)
	}
	out := make([][]byte, 0, len(msgs))
	for _, m := range msgs {
		v, ok := m.Values[field].(string)
		if !ok && required {
			t.Fatalf("entry %s of %s = %v, want field %s", m.ID, key, m.Values, field)
		}
		out = append(out, []byte(v))
	}
	return out
}

// frameOf decodes the Box frame of a raw envelope.
func frameOf(t *testing.T, raw []byte) (Kind, box.Box) {
	t.Helper()
	env, err := DecodeEnvelope(raw)
	if err != nil {
		t.Fatalf("DecodeEnvelope(%q): %v", raw, err)
	}
	b, err := box.Decode(env.Frame)
	if err != nil {
		t.Fatalf("box.Decode(%q): %v", env.Frame, err)
	}
	return env.Kind, b
}

func TestScriptsAreTested(t *testing.T) {
	files, err := os.ReadDir("lua")
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string]bool{}
	for _, f := range files {
		name, ok := strings.CutSuffix(f.Name(), ".lua")
		if !ok || f.IsDir() {
			continue
		}
		onDisk[name] = true
		if _, ok := scripts[name]; !ok {
			t.Errorf("lua/%s.lua has no entry in scripts", name)
		}
	}
	for name := range scripts {
		if !onDisk[name] {
			t.Errorf("scripts[%q] has no file lua/%s.lua", name, name)
		}
		if _, ok := testedScripts[name]; !ok {
			t.Errorf("script %q has no test: add one and list it in testedScripts", name)
		}
	}
	for name := range testedScripts {
		if _, ok := scripts[name]; !ok {
			t.Errorf("testedScripts names %q, which is not in scripts", name)
		}
	}
}

func TestEnqueue(t *testing.T) {
	const (
		F = KindFrame
		O = KindOpen
		C = KindClose
	)
	tests := []struct {
		name    string
		bound   int
		preload int // frames already queued (one entry)
		kinds   []Kind
		want    []bool
	}{
		{"no bound", 0, 5, []Kind{F, F, F}, []bool{true, true, true}},
		{"under bound", 5, 2, []Kind{F, F, F}, []bool{true, true, true}},
		{"fills up", 3, 1, []Kind{F, F, F, F}, []bool{true, true, false, false}},
		{"full refuses frames only", 2, 2, []Kind{O, F, C, F}, []bool{true, false, true, false}},
		{"open and close past bound", 1, 3, []Kind{O, C}, []bool{true, true}},
		{"open and close count", 3, 0, []Kind{O, F, F, C, F}, []bool{true, true, true, true, false}},
		{"all refused", 2, 2, []Kind{F, F}, []bool{false, false}},
		{"empty batch", 1, 0, nil, nil},
	}
	// Case i queues on partition i for gateway gw<i>: the bound counts the
	// gateway's frames (Keys.Queued), each case its own.
	gwOf := func(i int) string { return "gw" + strconv.Itoa(i) }
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		batches := make([]PartBatch, len(tests))
		preloads := make([][]byte, len(tests))
		for i, tt := range tests {
			var pre [][]byte
			for j := range tt.preload {
				pre = append(pre, envOf(F, "pre", uint64(j+1), "pre"))
			}
			if len(pre) > 0 {
				if err := s.Enqueue(ctx, gwOf(i), []PartBatch{{Part: i, Envelopes: pre}}, 0); err != nil {
					t.Fatalf("preload: %v", err)
				}
				preloads[i] = AppendEnvelopeBundle(nil, pre)
			}
			batches[i] = PartBatch{Part: i, Accepted: []bool{false, false, true}} // stale values are replaced
			for j, k := range tt.kinds {
				batches[i].Envelopes = append(batches[i].Envelopes, envOf(k, tt.name, uint64(j+1), strconv.Itoa(j)))
			}
		}
		// The bound differs per case, so each case is its own call
		// (TestEnqueueSeveralPartitionsOnePipeline queues many at once).
		for i, tt := range tests {
			if err := s.Enqueue(ctx, gwOf(i), batches[i:i+1], tt.bound); err != nil {
				t.Fatalf("%s: Enqueue: %v", tt.name, err)
			}
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				b := batches[i]
				if !slices.Equal(b.Accepted, tt.want) {
					t.Errorf("Accepted = %v, want %v", b.Accepted, tt.want)
				}
				// One entry per call: the accepted envelopes, in order, as
				// one bundle.
				var want [][]byte
				if preloads[i] != nil {
					want = append(want, preloads[i])
				}
				var accepted [][]byte
				for j, ok := range tt.want {
					if ok {
						accepted = append(accepted, b.Envelopes[j])
					}
				}
				if len(accepted) > 0 {
					want = append(want, AppendEnvelopeBundle(nil, accepted))
				}
				got := streamBundles(t, ctx, s.rdb, s.Keys.Inbound(i))
				if len(got) != len(want) {
					t.Fatalf("stream holds %d entries, want %d", len(got), len(want))
				}
				for j, w := range want {
					if !bytes.Equal(got[j], w) {
						t.Errorf("entry %d = %q, want %q", j, got[j], w)
					}
				}
				if n, err := s.Queued(ctx, gwOf(i)); err != nil || n != int64(tt.preload+len(accepted)) {
					t.Errorf("Queued(%s) = %d, %v; want %d", gwOf(i), n, err, tt.preload+len(accepted))
				}
			})
		}
		if err := s.Enqueue(ctx, "gw-none", nil, 1); err != nil {
			t.Errorf("Enqueue(no batches) = %v", err)
		}
		if n, err := s.Queued(ctx, "gw-none"); err != nil || n != 0 {
			t.Errorf("Queued after Enqueue(no batches) = %d, %v; want 0", n, err)
		}
	})
}

// streamBundles returns the raw "b" fields of a stream, in order, failing
// on an entry without one.
func streamBundles(t *testing.T, ctx context.Context, rdb redis.UniversalClient, key string) [][]byte {
	t.Helper()
	return streamField(t, ctx, rdb, key, "b", true)
}

// cmdRecorder records the commands a client sends: each single command and
// each pipeline as one round trip.
type cmdRecorder struct {
	mu    sync.Mutex
	trips [][]redis.Cmder
}

func (r *cmdRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *cmdRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.mu.Lock()
		r.trips = append(r.trips, []redis.Cmder{cmd})
		r.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (r *cmdRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.mu.Lock()
		r.trips = append(r.trips, slices.Clone(cmds))
		r.mu.Unlock()
		return next(ctx, cmds)
	}
}

// take returns, and forgets, the round trips recorded so far, each as its
// commands' names and first arguments ("xadd key", "incrby key n", "get
// key"), leaving out the connection's own commands (HELLO, CLIENT...).
func (r *cmdRecorder) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, trip := range r.trips {
		var cmds []string
		for _, c := range trip {
			args := c.Args()
			name := strings.ToLower(c.Name())
			switch name {
			case "xadd", "get":
				cmds = append(cmds, fmt.Sprint(name, " ", args[1]))
			case "incrby", "decrby", "set":
				cmds = append(cmds, fmt.Sprint(name, " ", args[1], " ", args[2]))
			case "hello", "client", "ping", "select", "auth":
			default:
				cmds = append(cmds, name)
			}
		}
		if len(cmds) > 0 {
			out = append(out, cmds)
		}
	}
	r.trips = nil
	return out
}

// TestEnqueueSeveralPartitionsOnePipeline: one call queues on many
// partitions in one round trip: an XADD per partition with accepted
// envelopes, then one INCRBY of the gateway's frame count by all of them.
// The bound counts the gateway's frames across the call's partitions, in
// batch order; open and close events still pass.
func TestEnqueueSeveralPartitionsOnePipeline(t *testing.T) {
	const gw = "gwP"
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			ctx := testCtx(t)
			rec := &cmdRecorder{}
			be.rdb.AddHook(rec)
			s := New(be.rdb, storetest.Prefix(t))
			// Partition p gets p+1 frames; the last partition also a close
			// event.
			var batches []PartBatch
			for p := range 6 {
				b := PartBatch{Part: p}
				for j := range p + 1 {
					b.Envelopes = append(b.Envelopes, envOf(KindFrame, "c"+strconv.Itoa(p), uint64(j+1), "x"))
				}
				batches = append(batches, b)
			}
			batches[5].Envelopes = append(batches[5].Envelopes, envOf(KindClose, "c5", 7, ""))
			// bound 8: 1 + 2 + 3 frames, then 2 of partition 3's 4; none
			// of partitions 4 and 5; the close event of partition 5.
			if err := s.Enqueue(ctx, gw, batches, 8); err != nil {
				t.Fatal(err)
			}
			trips := rec.take()
			taken := []int{1, 2, 3, 2, 0, 0}
			var wantTrip []string
			for p, b := range batches {
				var accepted [][]byte
				for j, ok := range b.Accepted {
					want := j < taken[p] || (p == 5 && j == 6)
					if ok != want {
						t.Errorf("partition %d: Accepted[%d] = %v, want %v", p, j, ok, want)
					}
					if want {
						accepted = append(accepted, b.Envelopes[j])
					}
				}
				if len(b.Accepted) != len(b.Envelopes) {
					t.Errorf("partition %d: %d Accepted for %d envelopes", p, len(b.Accepted), len(b.Envelopes))
				}
				got := streamBundles(t, ctx, s.rdb, s.Keys.Inbound(p))
				if len(accepted) == 0 {
					if len(got) != 0 {
						t.Errorf("partition %d: entries %q, want none (nothing accepted)", p, got)
					}
					continue
				}
				wantTrip = append(wantTrip, "xadd "+s.Keys.Inbound(p))
				if len(got) != 1 || !bytes.Equal(got[0], AppendEnvelopeBundle(nil, accepted)) {
					t.Errorf("partition %d: entries %q, want one bundle of its %d accepted envelopes", p, got, len(accepted))
				}
			}
			if n, err := s.Queued(ctx, gw); err != nil || n != 9 {
				t.Errorf("Queued = %d, %v; want 9", n, err)
			}
			// The count read first (Enqueue has no cached count), then one
			// pipeline: the XADDs, and the INCRBY after them.
			wantTrip = append(wantTrip, "incrby "+s.Keys.Queued(gw)+" 9")
			want := [][]string{{"get " + s.Keys.Queued(gw)}, wantTrip}
			if !slices.EqualFunc(trips, want, slices.Equal) {
				t.Errorf("round trips = %q, want %q", trips, want)
			}
			rec.take()

			// With the count cached: no read, one pipeline, the cache
			// updated from it.
			queued := int64(9)
			more := []PartBatch{
				{Part: 0, Envelopes: [][]byte{envOf(KindFrame, "c0", 2, "y")}},
				{Part: 1, Envelopes: [][]byte{envOf(KindFrame, "c1", 3, "y")}},
				{Part: 2, Envelopes: [][]byte{envOf(KindFrame, "c2", 4, "y")}},
			}
			if err := s.EnqueueCached(ctx, gw, more, 11, &queued); err != nil {
				t.Fatal(err)
			}
			for i, b := range more {
				if want := []bool{i < 2}; !slices.Equal(b.Accepted, want) {
					t.Errorf("cached call, partition %d: Accepted = %v, want %v", b.Part, b.Accepted, want)
				}
			}
			if queued != 11 {
				t.Errorf("cached count after the call = %d, want 11", queued)
			}
			want = [][]string{{"xadd " + s.Keys.Inbound(0), "xadd " + s.Keys.Inbound(1), "incrby " + s.Keys.Queued(gw) + " 2"}}
			if got := rec.take(); !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("cached call: round trips = %q, want %q", got, want)
			}
			if n, err := s.Queued(ctx, "other"); err != nil || n != 0 {
				t.Errorf("Queued(other) = %d, %v; want 0 (another gateway's count)", n, err)
			}
		})
	}
}

// TestEnqueueCounter: the bound counts the frames one gateway queued
// (Keys.Queued), across partitions and calls, not the streams' entries and
// not other gateways' frames; what workers finish leaves the count.
func TestEnqueueCounter(t *testing.T) {
	const (
		F = KindFrame
		O = KindOpen
		C = KindClose
	)
	const gw, other, bound = "gwC", "gwO", 5
	type part struct {
		p     int
		kinds []Kind
	}
	seq := uint64(0)
	batches := func(gw string, ps []part) []PartBatch {
		var bs []PartBatch
		for _, pt := range ps {
			b := PartBatch{Part: pt.p}
			for _, k := range pt.kinds {
				seq++
				b.Envelopes = append(b.Envelopes, envOf(k, gw+"-c"+strconv.Itoa(pt.p), seq, "x"))
			}
			bs = append(bs, b)
		}
		return bs
	}
	cached := func(n int64) *int64 { return &n }
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		if err := s.EnsureGroups(ctx, 4); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Queued(ctx, gw); err != nil || n != 0 {
			t.Errorf("Queued of a new gateway = %d, %v; want 0", n, err)
		}
		steps := []struct {
			name   string
			gw     string // "": gw
			parts  []part
			cached *int64 // EnqueueCached's count; nil: Enqueue
			finish []int  // before the call, finish (Finished, Ack) the entries of these steps
			want   [][]bool
			queued int64 // Queued of the step's gateway after
		}{
			{"first call", "", []part{{0, []Kind{F, F, F}}}, nil, nil, [][]bool{{true, true, true}}, 3},
			{"across partitions, in batch order", "", []part{{1, []Kind{O, F}}, {2, []Kind{F, F, F, C}}}, nil, nil,
				[][]bool{{true, true}, {false, false, false, true}}, 6},
			{"full", "", []part{{3, []Kind{F}}}, nil, nil, [][]bool{{false}}, 6},
			{"another gateway has its own count", other, []part{{0, []Kind{F, F, F}}, {3, []Kind{F, F, F}}}, nil, nil,
				[][]bool{{true, true, true}, {true, true, false}}, 5},
			{"and leaves this one's alone", "", []part{{3, []Kind{F}}}, nil, nil, [][]bool{{false}}, 6},
			// 3 frames in 1 entry finished, 3 left: the bound counts frames.
			{"finished frames free room", "", []part{{3, []Kind{F, F, F}}}, nil, []int{0}, [][]bool{{true, true, false}}, 5},
			{"cached count is used", "", []part{{0, []Kind{F}}, {1, []Kind{F}}}, cached(3), nil, [][]bool{{true}, {true}}, 7},
			{"cached count is stale", "", []part{{2, []Kind{F}}}, cached(0), nil, [][]bool{{true}}, 8},
			{"cached count at the bound", "", []part{{2, []Kind{F, O}}}, cached(bound), nil, [][]bool{{false, true}}, 9},
			{"Enqueue reads the count", "", []part{{1, []Kind{F}}}, nil, nil, [][]bool{{false}}, 9},
			// Steps 1, 5 and 6: 3 + 2 + 2 frames in 5 entries of 4
			// partitions, 2 frames left.
			{"finished in several partitions", "", []part{{0, []Kind{F, F, F}}}, nil, []int{1, 5, 6}, [][]bool{{true, true, true}}, 5},
		}
		// The entries each step queued, by reading them at once.
		stepEntries := make([][]Delivery, len(steps))
		for i, st := range steps {
			stepGW := cmp.Or(st.gw, gw)
			if len(st.finish) > 0 {
				pipe := s.rdb.Pipeline()
				for _, j := range st.finish {
					var n int64
					for _, d := range stepEntries[j] {
						if d.Index == 0 {
							n += int64(d.Count)
						}
					}
					// As the worker does: the count first, then the Ack.
					s.Finished(ctx, pipe, stepGW, n)
					for _, d := range stepEntries[j] {
						if d.Index == 0 {
							s.Ack(ctx, pipe, d.Part, d.ID)
						}
					}
				}
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
			}
			bs := batches(stepGW, st.parts)
			var err error
			if st.cached == nil {
				err = s.Enqueue(ctx, stepGW, bs, bound)
			} else {
				err = s.EnqueueCached(ctx, stepGW, bs, bound, st.cached)
			}
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			var parts []int
			for j, b := range bs {
				if !slices.Equal(b.Accepted, st.want[j]) {
					t.Errorf("%s: partition %d: Accepted = %v, want %v", st.name, b.Part, b.Accepted, st.want[j])
				}
				parts = append(parts, b.Part)
			}
			if stepEntries[i], err = s.ReadInbound(ctx, "w", parts, 100, -1); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Queued(ctx, stepGW); err != nil || n != st.queued {
				t.Errorf("%s: Queued(%s) = %d, %v; want %d", st.name, stepGW, n, err, st.queued)
			}
			// The cache learns the count from the same round trip.
			if st.cached != nil && *st.cached != st.queued {
				t.Errorf("%s: cached count = %d, want %d", st.name, *st.cached, st.queued)
			}
		}
		if n, err := s.Queued(ctx, other); err != nil || n != 5 {
			t.Errorf("Queued(%s) at the end = %d, %v; want 5", other, n, err)
		}

		t.Run("cache", func(t *testing.T) {
			const gw = "gwD"
			queued := int64(42)
			bs := []PartBatch{{Part: 5, Envelopes: [][]byte{envOf(F, "d", 1, "x")}}, {Part: 6}}
			if err := s.EnqueueCached(ctx, gw, bs, 0, &queued); err != nil {
				t.Fatal(err)
			}
			// Learnt with no bound too.
			if queued != 1 {
				t.Errorf("cached count after EnqueueCached = %d, want 1", queued)
			}
			for p, want := range map[int]int64{5: 1, 6: 0} {
				if n, _ := s.rdb.XLen(ctx, s.Keys.Inbound(p)).Result(); n != want {
					t.Errorf("partition %d holds %d entries, want %d (an empty batch adds none)", p, n, want)
				}
			}
			// A call with nothing to queue refreshes the count.
			queued = 42
			if err := s.EnqueueCached(ctx, gw, nil, bound, &queued); err != nil {
				t.Fatal(err)
			}
			if queued != 1 {
				t.Errorf("cached count after an empty EnqueueCached = %d, want 1", queued)
			}
		})

		t.Run("negative count", func(t *testing.T) {
			// A count that drifted below zero counts as zero, and the
			// enqueue that sees it puts it back to zero.
			const gw = "gwN"
			if err := s.rdb.Set(ctx, s.Keys.Queued(gw), -4, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Queued(ctx, gw); err != nil || n != 0 {
				t.Errorf("Queued of a count of -4 = %d, %v; want 0", n, err)
			}
			bs := []PartBatch{{Part: 1, Envelopes: [][]byte{envOf(F, "e", 1, "x"), envOf(F, "e", 2, "x"), envOf(F, "e", 3, "x")}}}
			if err := s.Enqueue(ctx, gw, bs, 2); err != nil {
				t.Fatal(err)
			}
			if want := []bool{true, true, false}; !slices.Equal(bs[0].Accepted, want) {
				t.Errorf("Accepted = %v, want %v", bs[0].Accepted, want)
			}
			queued := int64(0)
			bs[0].Envelopes = bs[0].Envelopes[:1]
			if err := s.EnqueueCached(ctx, gw, bs, 2, &queued); err != nil {
				t.Fatal(err)
			}
			if queued != 1 {
				t.Errorf("cached count after a count of -4 and 2+1 frames = %d, want 1 (reset to 0 at -2)", queued)
			}
			if n, err := s.Queued(ctx, gw); err != nil || n != 1 {
				t.Errorf("Queued after a count of -4 and 2+1 frames = %d, %v; want 1", n, err)
			}
		})
	})
}

func TestLease(t *testing.T) {
	type step struct {
		op        string // acquire, release, sleep
		worker    string
		ttl       time.Duration
		want      bool // acquire's result
		wantOwner string
	}
	long := 10 * time.Second
	tests := []struct {
		name  string
		steps []step
	}{
		{"take renew refuse release", []step{
			{"acquire", "w1", long, true, "w1"},
			{"acquire", "w2", long, false, "w1"},
			{"acquire", "w1", long, true, "w1"},
			{"release", "w2", 0, false, "w1"},
			{"release", "w1", 0, false, ""},
			{"release", "w1", 0, false, ""},
			{"acquire", "w2", long, true, "w2"},
		}},
		{"expires after ttl", []step{
			{"acquire", "w1", 200 * time.Millisecond, true, "w1"},
			{"acquire", "w2", 200 * time.Millisecond, false, "w1"},
			{"sleep", "", 350 * time.Millisecond, false, ""},
			{"acquire", "w2", long, true, "w2"},
		}},
		{"renewal extends", []step{
			{"acquire", "w1", 400 * time.Millisecond, true, "w1"},
			{"sleep", "", 200 * time.Millisecond, false, ""},
			{"acquire", "w1", 400 * time.Millisecond, true, "w1"},
			{"sleep", "", 250 * time.Millisecond, false, ""},
			{"acquire", "w2", long, false, "w1"}, // 450 ms after the first take
			{"sleep", "", 400 * time.Millisecond, false, ""},
			{"acquire", "w2", long, true, "w2"},
		}},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				for j, st := range tt.steps {
					switch st.op {
					case "sleep":
						time.Sleep(st.ttl)
						continue
					case "acquire":
						got, err := s.AcquireLease(ctx, i, st.worker, st.ttl)
						if err != nil {
							t.Fatalf("step %d: AcquireLease(%s): %v", j, st.worker, err)
						}
						if got != st.want {
							t.Errorf("step %d: AcquireLease(%s) = %v, want %v", j, st.worker, got, st.want)
						}
						if got {
							pttl, _ := s.rdb.PTTL(ctx, s.Keys.Owner(i)).Result()
							if pttl <= 0 || pttl > st.ttl {
								t.Errorf("step %d: PTTL = %v, want in (0, %v]", j, pttl, st.ttl)
							}
						}
					case "release":
						if err := s.ReleaseLease(ctx, i, st.worker); err != nil {
							t.Fatalf("step %d: ReleaseLease(%s): %v", j, st.worker, err)
						}
					}
					owner, err := s.rdb.Get(ctx, s.Keys.Owner(i)).Result()
					if err != nil && !errors.Is(err, redis.Nil) {
						t.Fatal(err)
					}
					if owner != st.wantOwner {
						t.Errorf("step %d (%s %s): owner = %q, want %q", j, st.op, st.worker, owner, st.wantOwner)
					}
				}
			})
		}
	})
}

// TestReleaseLeases: asked for every partition, it gives up those the
// caller holds and no other's, also with the script cache flushed (a
// restarted Redis).
func TestReleaseLeases(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		for _, flush := range []bool{false, true} {
			for p, w := range []string{"w1", "w2", "w1", ""} {
				if w == "" {
					continue
				}
				if ok, err := s.AcquireLease(ctx, p, w, time.Minute); err != nil || !ok {
					t.Fatalf("AcquireLease(%d, %s) = %v, %v", p, w, ok, err)
				}
			}
			if flush {
				if err := s.rdb.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.ReleaseLeases(ctx, []int{0, 1, 2, 3}, "w1"); err != nil {
				t.Fatalf("ReleaseLeases (flushed %v): %v", flush, err)
			}
			for p, want := range []string{"", "w2", "", ""} {
				owner, err := s.rdb.Get(ctx, s.Keys.Owner(p)).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					t.Fatal(err)
				}
				if owner != want {
					t.Errorf("flushed %v: partition %d owned by %q after w1 released all, want %q", flush, p, owner, want)
				}
			}
			if err := s.ReleaseLeases(ctx, []int{1}, "w2"); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestLiveRound: a worker is alive for the liveness it renewed, by Redis's
// clock; then dead, and its leases are free to whoever names it dead;
// then, after forget, not listed at all. A lease whose owner is not named
// dead stays with it. Each step runs as a first round (no worker known:
// the marks are read in a second round trip) and as a worker's next round
// (the workers it listed last read in the renewal's round trip; known
// holds a worker forgotten since and misses one that is new).
func TestLiveRound(t *testing.T) {
	for _, rounds := range []string{"first", "next"} {
		t.Run(rounds, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, s *Broker) {
				ctx := testCtx(t)
				known := map[string][]string{}
				round := func(id string, liveness, forget time.Duration) (live, dead []string, err error) {
					var k []string
					if rounds == "next" {
						k = append([]string{"w0"}, known[id]...)
					}
					live, dead, err = s.LiveRound(ctx, id, liveness, forget, k, nil)
					known[id] = append(slices.Clone(live), dead...)
					slices.Sort(live)
					slices.Sort(dead)
					return live, dead, err
				}
				testLiveRound(t, s, round)
			})
		})
	}
}

func testLiveRound(t *testing.T, s *Broker, round func(id string, liveness, forget time.Duration) ([]string, []string, error)) {
	ctx := testCtx(t)
	const short, forget = 200 * time.Millisecond, 600 * time.Millisecond
	if _, _, err := round("w2", time.Minute, forget); err != nil {
		t.Fatal(err)
	}
	if _, _, err := round("w1", short, forget); err != nil {
		t.Fatal(err)
	}
	live, dead, err := round("w2", time.Minute, forget)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(live, []string{"w1", "w2"}) || len(dead) != 0 {
		t.Errorf("both just renewed: live %q dead %q, want live [w1 w2]", live, dead)
	}
	if ok, err := s.AcquireLease(ctx, 7, "w1", time.Minute); err != nil || !ok {
		t.Fatalf("w1 takes partition 7: %v %v", ok, err)
	}
	if ok, _ := s.AcquireLease(ctx, 7, "w2", time.Minute, "w9"); ok {
		t.Error("w2 took w1's lease naming another worker dead")
	}

	time.Sleep(short + 100*time.Millisecond)
	live, dead, err = round("w2", time.Minute, forget)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(live, []string{"w2"}) || !slices.Equal(dead, []string{"w1"}) {
		t.Errorf("w1 silent past its liveness: live %q dead %q, want [w2] and [w1]", live, dead)
	}
	if ok, err := s.AcquireLease(ctx, 7, "w2", time.Minute, dead...); err != nil || !ok {
		t.Errorf("w2 takes dead w1's lease: %v %v", ok, err)
	}
	if owner, _ := s.rdb.Get(ctx, s.Keys.Owner(7)).Result(); owner != "w2" {
		t.Errorf("owner %q, want w2", owner)
	}

	time.Sleep(forget)
	live, dead, err = round("w2", time.Minute, forget)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(live, []string{"w2"}) || len(dead) != 0 {
		t.Errorf("w1 silent past forget: live %q dead %q, want [w2] and none", live, dead)
	}
	if n, _ := s.rdb.ZCard(ctx, s.Keys.Live()).Result(); n != 1 {
		t.Errorf("registry holds %d workers after w1 was forgotten, want 1", n)
	}
	if err := s.LiveForget(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.rdb.Exists(ctx, s.Keys.Live(), s.Keys.LiveMark("w2")).Result(); n != 0 {
		t.Errorf("%d liveness keys left after the last worker went, want 0", n)
	}
}

// TestLiveRoundProbesTimers: a liveness round carrying a TimerProbe finds
// the partitions with a timer due, and only those; MoveTimersOf moves
// their timers.
func TestLiveRoundProbesTimers(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		const parts = 4
		id, err := s.ScheduleAfter(ctx, parts, 0, 9, []byte("due"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ScheduleAfter(ctx, parts, time.Hour, 9, []byte("later")); err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(id[:strings.IndexByte(id, '.')])
		probe := &TimerProbe{Parts: []int{0, 1, 2, 3}, Now: time.Now().Add(time.Millisecond)}
		if _, _, err := s.LiveRound(ctx, "w1", time.Minute, time.Minute, nil, probe); err != nil {
			t.Fatal(err)
		}
		due, err := probe.Due()
		if err != nil || !slices.Equal(due, []int{p}) {
			t.Fatalf("probe found %v, %v; want [%d]", due, err, p)
		}
		n, err := s.MoveTimersOf(ctx, due, probe.Now, 10)
		if err != nil || !slices.Equal(n, []int{1}) {
			t.Fatalf("MoveTimersOf = %v, %v; want [1]", n, err)
		}
		if l, _ := s.rdb.XLen(ctx, s.Keys.Inbound(p)).Result(); l != 1 {
			t.Errorf("partition %d's stream holds %d entries, want 1", p, l)
		}
	})
}

// TestDeadLetter: DeadLetter copies an envelope to its partition's
// dead-letter stream and nothing more: the entry stays pending and the
// handled marks are left alone (the worker marks and acknowledges through
// its writer). Requeue puts it back as a lone envelope, marked requeued.
func TestDeadLetter(t *testing.T) {
	bundle := [][]byte{envOf(KindFrame, "c2", 7, "a"), envOf(KindFrame, "c2", 8, "boom"), envOf(KindFrame, "c3", 4, "b")}
	bundled := []any{"b", AppendBundle(nil, bundle)}
	tests := []struct {
		name       string
		fields     []any // the inbound entry
		index      int   // the envelope dead-lettered
		deliveries int64
		reason     string
		mark       string // its connection's handled mark before, and after ("": none)
		wantEnv    Envelope
	}{
		{
			name:       "client frame",
			fields:     []any{"e", envOf(KindFrame, "c1", 7, "boom")},
			deliveries: 3,
			reason:     "handler panicked: boom",
			wantEnv: Envelope{Kind: KindFrame, Seq: 7, Gateway: "gw1", Conn: "c1", Addr: "127.0.0.1:9", UID: "u-c1",
				Frame: box.Append(nil, 1, 0, 7, []byte("boom"))},
		},
		{
			name:       "operator frame, empty reason",
			fields:     []any{"cmd", "9", "body", "hello"},
			deliveries: 5,
			reason:     "",
			wantEnv:    Envelope{Kind: KindSystem, Frame: box.Append(nil, 9, 0, 0, []byte("hello"))},
		},
		{
			name:       "binary body",
			fields:     []any{"e", AppendEnvelope(nil, &Envelope{Kind: KindSystem, Frame: box.Append(nil, 2, 0, 0, []byte{0, 0xff, '\n', 0})})},
			deliveries: 1,
			reason:     "bad\x00reason",
			wantEnv:    Envelope{Kind: KindSystem, Frame: box.Append(nil, 2, 0, 0, []byte{0, 0xff, '\n', 0})},
		},
		{
			name:       "no sequence number",
			fields:     []any{"e", envOf(KindFrame, "c5", 0, "z")},
			deliveries: 2,
			reason:     "x",
			wantEnv:    mustDecode(envOf(KindFrame, "c5", 0, "z")),
		},
		{
			name:       "envelope of a bundle",
			fields:     bundled,
			index:      1,
			deliveries: 2,
			reason:     "max deliveries",
			wantEnv:    mustDecode(bundle[1]),
		},
		{"mark below is left alone", bundled, 1, 2, "r", "3", mustDecode(bundle[1])},
		{"mark above is left alone", bundled, 1, 2, "r", "12", mustDecode(bundle[1])},
		{"last of a bundle", bundled, 2, 4, "r", "", mustDecode(bundle[2])},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		for p, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.EnsureGroups(ctx, p+1); err != nil {
					t.Fatal(err)
				}
				in := s.Keys.Inbound(p)
				if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: in, Values: tt.fields}).Err(); err != nil {
					t.Fatal(err)
				}
				ds, err := s.ReadInbound(ctx, "w1", []int{p}, 10, -1)
				if err != nil || len(ds) <= tt.index {
					t.Fatalf("ReadInbound = %v, %v; want an envelope %d", ds, err, tt.index)
				}
				d := ds[tt.index]
				if d.Requeued {
					t.Errorf("delivery of a gateway's entry has Requeued set")
				}
				d.Deliveries = tt.deliveries
				// The marks of its gateway: another connection's, and its
				// own if the case has one.
				gw := d.Env.Gateway
				marks := s.Keys.Handled(gw)
				wantMarks := map[string]string{"other": "5"}
				if tt.mark != "" {
					wantMarks[d.Env.Conn] = tt.mark
				}
				pipe := s.rdb.TxPipeline()
				pipe.Del(ctx, marks)
				pipe.HSet(ctx, marks, wantMarks)
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
				if err := s.DeadLetter(ctx, d, tt.reason); err != nil {
					t.Fatalf("DeadLetter: %v", err)
				}
				// The entry stays pending: the worker acknowledges it once
				// its other envelopes are done.
				pend, err := s.rdb.XPending(ctx, in, keys.ConsumerGroup).Result()
				if err != nil || pend.Count != 1 {
					t.Errorf("XPENDING after DeadLetter = %+v, %v; want the entry still pending", pend, err)
				}
				// No handled mark set or moved: the worker's writer marks it.
				gotMarks, err := s.rdb.HGetAll(ctx, marks).Result()
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(gotMarks, wantMarks) {
					t.Errorf("handled marks of %q after DeadLetter = %v, want them unchanged: %v", gw, gotMarks, wantMarks)
				}
				pipe = s.rdb.Pipeline()
				s.Ack(ctx, pipe, p, d.ID)
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
				if pend, _ := s.rdb.XPending(ctx, in, keys.ConsumerGroup).Result(); pend.Count != 0 {
					t.Errorf("XPENDING after Ack = %+v, want nothing pending", pend)
				}

				// The dead-letter entry: exactly the envelope and where it
				// came from.
				raw, err := s.rdb.XRange(ctx, s.Keys.Dead(p), "-", "+").Result()
				if err != nil || len(raw) != 1 {
					t.Fatalf("dead-letter stream = %+v, %v; want one entry", raw, err)
				}
				wantFields := map[string]any{"e": string(d.Raw), "from": d.ID, "index": strconv.Itoa(tt.index),
					"deliveries": strconv.FormatInt(tt.deliveries, 10), "reason": tt.reason}
				if !maps.Equal(raw[0].Values, wantFields) {
					t.Errorf("dead-letter fields = %q, want %q", raw[0].Values, wantFields)
				}
				dls, err := s.DeadLetters(ctx, p, 10)
				if err != nil || len(dls) != 1 {
					t.Fatalf("DeadLetters = %+v, %v; want one", dls, err)
				}
				dl := dls[0]
				if dl.Part != p || dl.ID != raw[0].ID || dl.From != d.ID || dl.Index != tt.index || dl.Deliveries != tt.deliveries || dl.Reason != tt.reason {
					t.Errorf("DeadLetter = {Part %d ID %s From %s Index %d Deliveries %d Reason %q}, want {%d %s %s %d %d %q}",
						dl.Part, dl.ID, dl.From, dl.Index, dl.Deliveries, dl.Reason, p, raw[0].ID, d.ID, tt.index, tt.deliveries, tt.reason)
				}
				if !envEqual(dl.Env, tt.wantEnv) {
					t.Errorf("dead letter envelope = %+v, want %+v", dl.Env, tt.wantEnv)
				}

				if err := s.Requeue(ctx, p, dl.ID); err != nil {
					t.Fatalf("Requeue: %v", err)
				}
				if dls, _ := s.DeadLetters(ctx, p, 10); len(dls) != 0 {
					t.Errorf("DeadLetters after Requeue = %+v, want none", dls)
				}
				// Back as a lone envelope, marked requeued: workers run it
				// although its connection's mark may be past it.
				ds, err = s.ReadInbound(ctx, "w2", []int{p}, 10, -1)
				if err != nil || len(ds) != 1 {
					t.Fatalf("ReadInbound after Requeue = %v, %v; want one delivery", ds, err)
				}
				if r := ds[0]; r.ID == d.ID || r.Deliveries != 1 || r.Index != 0 || r.Count != 1 || r.Bundled || !r.Requeued || !envEqual(r.Env, tt.wantEnv) {
					t.Errorf("requeued delivery = %+v, want a new lone entry, Requeued, with envelope %+v", r, tt.wantEnv)
				}
				if err := s.Requeue(ctx, p, dl.ID); !errors.Is(err, ErrNotFound) {
					t.Errorf("second Requeue = %v, want ErrNotFound", err)
				}
			})
		}
		t.Run("requeue unknown or envelope-less", func(t *testing.T) {
			const p = 9
			if err := s.Requeue(ctx, p, "1-1"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Requeue(missing) = %v, want ErrNotFound", err)
			}
			id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Dead(p), Values: []any{"from", "1-1", "reason", "x"}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Requeue(ctx, p, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Requeue(no e field) = %v, want ErrNotFound", err)
			}
			if n, _ := s.rdb.XLen(ctx, s.Keys.Dead(p)).Result(); n != 1 {
				t.Errorf("dead letters = %d, want the envelope-less one kept", n)
			}
			if n, _ := s.rdb.XLen(ctx, s.Keys.Inbound(p)).Result(); n != 0 {
				t.Errorf("inbound = %d entries, want 0", n)
			}
		})
	})
}

// gatewayUsers returns the sorted members of a gateway's user set.
func gatewayUsers(t *testing.T, ctx context.Context, s *Broker, gw string) []string {
	t.Helper()
	m, err := s.rdb.SMembers(ctx, s.Keys.GatewayUsers(gw)).Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// sessionOf reads uid's session as BindUser wrote it (the zero Session if
// there is none).
func sessionOf(t *testing.T, ctx context.Context, s *Broker, uid string) Session {
	t.Helper()
	m, err := s.rdb.HMGet(ctx, s.Keys.Session(uid), "gw", "conn").Result()
	if err != nil {
		t.Fatal(err)
	}
	gw, _ := m[0].(string)
	conn, _ := m[1].(string)
	return Session{Gateway: gw, Conn: conn}
}

func TestBindUser(t *testing.T) {
	a1 := Session{Gateway: "gwA", Conn: "c1"}
	b2 := Session{Gateway: "gwB", Conn: "c2"}
	b3 := Session{Gateway: "gwB", Conn: "c3"}
	tests := []struct {
		name      string
		to        Session
		refuse    bool
		wantOld   Session
		wantBound bool
		wantNow   Session             // the session afterwards
		wantGW    map[string][]string // gateway user sets afterwards
	}{
		{"first login", a1, false, Session{}, true, a1, map[string][]string{"gwA": {"u1"}, "gwB": nil}},
		{"same conn again", a1, false, Session{}, true, a1, map[string][]string{"gwA": {"u1"}}},
		{"same conn, refuse mode", a1, true, Session{}, true, a1, map[string][]string{"gwA": {"u1"}}},
		{"refused elsewhere", b2, true, a1, false, a1, map[string][]string{"gwA": {"u1"}, "gwB": nil}},
		{"kick to other gateway", b2, false, a1, true, b2, map[string][]string{"gwA": nil, "gwB": {"u1"}}},
		{"kick, same gateway", b3, false, b2, true, b3, map[string][]string{"gwA": nil, "gwB": {"u1"}}},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		if got := sessionOf(t, ctx, s, "u1"); got != (Session{}) {
			t.Errorf("session before login = %+v, want none", got)
		}
		for _, tt := range tests {
			old, bound, err := s.BindUser(ctx, "u1", tt.to, tt.refuse)
			if err != nil || bound != tt.wantBound {
				t.Errorf("%s: BindUser(%+v, refuse %v) = %v, %v; want %v", tt.name, tt.to, tt.refuse, bound, err, tt.wantBound)
			}
			if old != tt.wantOld {
				t.Errorf("%s: BindUser(%+v, refuse %v) old = %+v, want %+v", tt.name, tt.to, tt.refuse, old, tt.wantOld)
			}
			if now := sessionOf(t, ctx, s, "u1"); now != tt.wantNow {
				t.Errorf("%s: session = %+v; want %+v", tt.name, now, tt.wantNow)
			}
			for gw, want := range tt.wantGW {
				if got := gatewayUsers(t, ctx, s, gw); !slices.Equal(got, want) {
					t.Errorf("%s: users of %s = %v, want %v", tt.name, gw, got, want)
				}
			}
		}
		// Another user is independent.
		if old, bound, err := s.BindUser(ctx, "u2", a1, true); err != nil || !bound || old != (Session{}) {
			t.Errorf("BindUser(u2) = %+v, %v, %v; want zero, true, nil", old, bound, err)
		}
		if got := sessionOf(t, ctx, s, "u1"); got != b3 {
			t.Errorf("session of u1 = %+v, want %+v", got, b3)
		}
		if got := sessionOf(t, ctx, s, "u2"); got != a1 {
			t.Errorf("session of u2 = %+v, want %+v", got, a1)
		}
	})
}

func TestUnbindUser(t *testing.T) {
	a1 := Session{Gateway: "gwA", Conn: "c1"}
	b2 := Session{Gateway: "gwB", Conn: "c2"}
	tests := []struct {
		name    string
		at      Session
		want    bool
		wantNow Session // zero: logged out
	}{
		{"old connection leaves newer login alone", a1, false, b2},
		{"unknown connection", Session{Gateway: "gwB", Conn: "c9"}, false, b2},
		{"current connection", b2, true, Session{}},
		{"twice", b2, false, Session{}},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		if _, _, err := s.BindUser(ctx, "u1", a1, false); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.BindUser(ctx, "u1", b2, false); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			got, err := s.UnbindUser(ctx, "u1", tt.at)
			if err != nil || got != tt.want {
				t.Errorf("%s: UnbindUser(%+v) = %v, %v; want %v", tt.name, tt.at, got, err, tt.want)
			}
			if now := sessionOf(t, ctx, s, "u1"); now != tt.wantNow {
				t.Errorf("%s: session = %+v; want %+v", tt.name, now, tt.wantNow)
			}
		}
		if got := gatewayUsers(t, ctx, s, "gwB"); len(got) != 0 {
			t.Errorf("users of gwB after unbind = %v, want none", got)
		}
	})
}

func TestForgetGateway(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		binds := []struct {
			uid string
			at  Session
		}{
			{"u1", Session{"gwA", "a1"}},
			{"u2", Session{"gwA", "a2"}},
			{"u3", Session{"gwB", "b3"}},
			{"u4", Session{"gwA", "a4"}},
			{"u4", Session{"gwB", "b4"}}, // moved on: gwA no longer owns u4
		}
		for _, b := range binds {
			if _, _, err := s.BindUser(ctx, b.uid, b.at, false); err != nil {
				t.Fatal(err)
			}
		}
		// A stale member (a login elsewhere raced with the set update)
		// must not lose its newer session.
		s.rdb.SAdd(ctx, s.Keys.GatewayUsers("gwA"), "u4", "ghost")
		pipe := s.rdb.Pipeline()
		s.PushOut(ctx, pipe, "gwA", "m1", "m2")
		s.PushOut(ctx, pipe, "gwB", "m3")
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		// gwA took a message it never had dropped: its take's number, and
		// a transit list as a gateway of the release before left it.
		if msgs, err := s.TakeOut(ctx, "gwA", new(OutPos), 1, true); err != nil || len(msgs) != 1 {
			t.Fatalf("TakeOut(gwA) = %q, %v", msgs, err)
		}
		if err := s.rdb.RPush(ctx, s.Keys.OutboundTransit("gwA"), "old").Err(); err != nil {
			t.Fatal(err)
		}
		// Frames of both gateways queued (their frame counts), and handled
		// marks of both gateways' connections.
		for _, gw := range []string{"gwA", "gwB"} {
			var bs []PartBatch
			for p := range 3 {
				bs = append(bs, PartBatch{Part: p, Envelopes: [][]byte{envOf(KindFrame, gw+"-c", uint64(p+1), "x")}})
			}
			if err := s.Enqueue(ctx, gw, bs, 0); err != nil {
				t.Fatal(err)
			}
		}
		pipe = s.rdb.Pipeline()
		s.MarkHandled(ctx, pipe, "gwA", "a1", uint64(1), "a2", uint64(9))
		s.MarkHandled(ctx, pipe, "gwB", "b3", uint64(4), "b4", uint64(2))
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, gw := range []string{"gwA", "gwB"} {
			if err := s.Heartbeat(ctx, s.Keys.Gateways(), gw, now); err != nil {
				t.Fatal(err)
			}
		}

		for _, key := range []string{s.Keys.Queued("gwA"), s.Keys.Handled("gwA")} {
			if n, _ := s.rdb.Exists(ctx, key).Result(); n != 1 {
				t.Fatalf("%s missing before reap", key)
			}
		}

		n, err := s.ForgetGateway(ctx, "gwA")
		if err != nil || n != 2 {
			t.Errorf("ForgetGateway(gwA) = %d, %v; want 2", n, err)
		}
		want := map[string]Session{"u3": {"gwB", "b3"}, "u4": {"gwB", "b4"}}
		for _, uid := range []string{"u1", "u2", "u3", "u4", "ghost"} {
			if got := sessionOf(t, ctx, s, uid); got != want[uid] {
				t.Errorf("session of %s after forgetting gwA = %+v, want %+v", uid, got, want[uid])
			}
		}
		for _, key := range []string{s.Keys.GatewayUsers("gwA"), s.Keys.Outbound("gwA"),
			s.Keys.OutboundTransit("gwA"), s.Keys.OutboundBatch("gwA"), s.Keys.Queued("gwA"), s.Keys.Handled("gwA")} {
			if n, _ := s.rdb.Exists(ctx, key).Result(); n != 0 {
				t.Errorf("%s still exists after reap", key)
			}
		}
		// Nor any other key of the gateway's.
		if left, _ := s.rdb.Keys(ctx, s.Keys.Prefix+":*{gw:gwA}*").Result(); len(left) != 0 {
			t.Errorf("keys of gwA left after forgetting it: %v", left)
		}
		// The other gateway's count and marks are kept.
		if n, err := s.Queued(ctx, "gwB"); err != nil || n != 3 {
			t.Errorf("Queued(gwB) after reaping gwA = %d, %v; want 3", n, err)
		}
		qs := []HandledQuery{{Gateway: "gwB", Conns: []string{"b3", "b4"}}, {Gateway: "gwA", Conns: []string{"a1", "a2"}}}
		if err := s.HandledSeqs(ctx, qs); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(qs[0].Seqs, []uint64{4, 2}) {
			t.Errorf("handled marks of gwB after reaping gwA = %v, want [4 2]", qs[0].Seqs)
		}
		if !slices.Equal(qs[1].Seqs, []uint64{0, 0}) {
			t.Errorf("handled marks of gwA after reaping it = %v, want [0 0]", qs[1].Seqs)
		}
		// The streams are left alone: the frames gwA queued stay.
		for p := range 3 {
			if n, _ := s.rdb.XLen(ctx, s.Keys.Inbound(p)).Result(); n != 2 {
				t.Errorf("partition %d holds %d entries after reap, want 2", p, n)
			}
		}
		if got := gatewayUsers(t, ctx, s, "gwB"); !slices.Equal(got, []string{"u3", "u4"}) {
			t.Errorf("users of gwB = %v, want [u3 u4]", got)
		}
		if msgs, _ := s.rdb.LRange(ctx, s.Keys.Outbound("gwB"), 0, -1).Result(); !slices.Equal(msgs, []string{"m3"}) {
			t.Errorf("gwB outbound = %v, want [m3]", msgs)
		}
		alive, _ := s.Alive(ctx, s.Keys.Gateways(), now, time.Minute)
		if !slices.Equal(alive, []string{"gwB"}) {
			t.Errorf("gateways after reap = %v, want [gwB]", alive)
		}
		if n, err := s.ForgetGateway(ctx, "gwA"); err != nil || n != 0 {
			t.Errorf("second ForgetGateway(gwA) = %d, %v; want 0", n, err)
		}
	})
}

// timerPart returns the partition of a timer id.
func timerPart(t *testing.T, id string) int {
	t.Helper()
	ps, _, _ := strings.Cut(id, ".")
	p, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatalf("timer id %q has no partition", id)
	}
	return p
}

// systemBodies returns the bodies of the system frames in partitions
// 0..parts-1, checking that each carries cmd.
func systemBodies(t *testing.T, ctx context.Context, s *Broker, parts int, cmd int32) []string {
	t.Helper()
	var out []string
	for p := range parts {
		for _, raw := range streamEnvelopes(t, ctx, s.rdb, s.Keys.Inbound(p)) {
			k, b := frameOf(t, raw)
			if k != KindSystem || b.Cmd != cmd {
				t.Errorf("partition %d: entry kind %v cmd %d, want system cmd %d", p, k, b.Cmd, cmd)
			}
			out = append(out, string(b.Body))
		}
	}
	sort.Strings(out)
	return out
}

func TestTimers(t *testing.T) {
	const parts = 4
	tests := []struct {
		name    string
		delays  []time.Duration // one timer each, body "t<i>"
		cancel  []int           // indexes cancelled before moving
		at      time.Duration   // MoveDueTimers' now, relative to the test
		max     int
		want    int // moved in total (one pass over every partition)
		wantBod []string
	}{
		{"due moves", []time.Duration{-time.Second, 0}, nil, time.Second, 10, 2, []string{"t0", "t1"}},
		{"not yet due", []time.Duration{time.Hour}, nil, time.Second, 10, 0, nil},
		{"later due", []time.Duration{time.Hour}, nil, 2 * time.Hour, 10, 1, []string{"t0"}},
		{"cancelled never moves", []time.Duration{-time.Second, -time.Second, -time.Second}, []int{0, 2}, time.Second, 10, 1, []string{"t1"}},
		{"all cancelled", []time.Duration{time.Hour}, []int{0}, 2 * time.Hour, 10, 0, nil},
	}
	eachBackend(t, func(t *testing.T, s0 *Broker) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := testCtx(t)
				s := New(s0.rdb, storetest.Prefix(t))
				var ids []string
				for i, d := range tt.delays {
					id, err := s.ScheduleAfter(ctx, parts, d, 42, []byte("t"+strconv.Itoa(i)))
					if err != nil {
						t.Fatalf("ScheduleAfter: %v", err)
					}
					if p := timerPart(t, id); p < 0 || p >= parts {
						t.Fatalf("timer id %q: partition out of range", id)
					}
					ids = append(ids, id)
				}
				for _, i := range tt.cancel {
					if ok, err := s.CancelTimer(ctx, ids[i]); err != nil || !ok {
						t.Errorf("CancelTimer(%s) = %v, %v; want true", ids[i], ok, err)
					}
					if ok, err := s.CancelTimer(ctx, ids[i]); err != nil || ok {
						t.Errorf("second CancelTimer(%s) = %v, %v; want false", ids[i], ok, err)
					}
				}
				moved := 0
				at := time.Now().Add(tt.at)
				for p := range parts {
					n, err := s.MoveDueTimers(ctx, p, at, tt.max)
					if err != nil {
						t.Fatalf("MoveDueTimers(%d): %v", p, err)
					}
					moved += n
				}
				if moved != tt.want {
					t.Errorf("moved %d timers, want %d", moved, tt.want)
				}
				if got := systemBodies(t, ctx, s, parts, 42); !slices.Equal(got, tt.wantBod) {
					t.Errorf("queued bodies = %q, want %q", got, tt.wantBod)
				}
				// A second pass moves nothing more, and fired timers can no
				// longer be cancelled.
				for p := range parts {
					if n, err := s.MoveDueTimers(ctx, p, at, tt.max); err != nil || n != 0 {
						t.Errorf("second MoveDueTimers(%d) = %d, %v; want 0", p, n, err)
					}
				}
				for i, id := range ids {
					pending := tt.at <= tt.delays[i] && !slices.Contains(tt.cancel, i)
					ok, err := s.CancelTimer(ctx, id)
					if err != nil || ok != pending {
						t.Errorf("CancelTimer(%s) after moving = %v, %v; want %v", id, ok, err, pending)
					}
				}
			})
		}
		t.Run("max per call", func(t *testing.T) {
			ctx := testCtx(t)
			s := New(s0.rdb, storetest.Prefix(t))
			for i := range 5 {
				if _, err := s.ScheduleAfter(ctx, 1, -time.Duration(i)*time.Second, 7, []byte{byte('a' + i)}); err != nil {
					t.Fatal(err)
				}
			}
			var got []int
			for range 4 {
				n, err := s.MoveDueTimers(ctx, 0, time.Now(), 2)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, n)
			}
			if !slices.Equal(got, []int{2, 2, 1, 0}) {
				t.Errorf("MoveDueTimers(max 2) moved %v, want [2 2 1 0]", got)
			}
			// Earliest due first: "e" was due 4 s ago.
			var order []string
			for _, raw := range streamEnvelopes(t, ctx, s.rdb, s.Keys.Inbound(0)) {
				_, b := frameOf(t, raw)
				order = append(order, string(b.Body))
			}
			if !slices.Equal(order, []string{"e", "d", "c", "b", "a"}) {
				t.Errorf("fired in order %q, want [e d c b a]", order)
			}
		})
		t.Run("several partitions in one round trip", func(t *testing.T) {
			ctx := testCtx(t)
			s := New(s0.rdb, storetest.Prefix(t))
			due := make([]int, 3) // timers per partition
			for range 12 {
				id, err := s.ScheduleAfter(ctx, 3, -time.Second, 7, []byte{'x'})
				if err != nil {
					t.Fatal(err)
				}
				p, _ := strconv.Atoi(id[:strings.Index(id, ".")])
				due[p]++
			}
			// A Redis that restarted has no scripts: the pipeline reloads them.
			if err := s.rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			got, err := s.MoveDueTimersOf(ctx, []int{0, 1, 2}, time.Now(), 2)
			want := []int{min(due[0], 2), min(due[1], 2), min(due[2], 2)}
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("MoveDueTimersOf(max 2) = %v, %v; want %v (timers per partition %v)", got, err, want, due)
			}
			got, err = s.MoveDueTimersOf(ctx, []int{2, 0, 1}, time.Now(), 100)
			want = []int{max(due[2]-2, 0), max(due[0]-2, 0), max(due[1]-2, 0)}
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("second MoveDueTimersOf = %v, %v; want %v", got, err, want)
			}
			for p := range 3 {
				if n := len(streamEnvelopes(t, ctx, s.rdb, s.Keys.Inbound(p))); n != due[p] {
					t.Errorf("partition %d stream holds %d timers, want %d", p, n, due[p])
				}
			}
		})
		t.Run("bad ids", func(t *testing.T) {
			ctx := testCtx(t)
			for _, id := range []string{"", "nodot", "x.abc", ".abc"} {
				if _, err := s0.CancelTimer(ctx, id); err == nil {
					t.Errorf("CancelTimer(%q) = nil error, want one", id)
				}
			}
		})
	})
}

func TestMoveDueTimersConcurrent(t *testing.T) {
	const (
		parts  = 3
		timers = 60
	)
	tests := []struct {
		name string
		max  int // per call; movers loop until a call moves nothing
	}{
		{"one at a time", 1},
		{"small batches", 3},
		{"all at once", 1000},
	}
	eachBackend(t, func(t *testing.T, s0 *Broker) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := testCtx(t)
				s := New(s0.rdb, storetest.Prefix(t))
				var want []string
				for i := range timers {
					body := fmt.Sprintf("t%02d", i)
					if _, err := s.ScheduleAfter(ctx, parts, -time.Millisecond, 5, []byte(body)); err != nil {
						t.Fatal(err)
					}
					want = append(want, body)
				}
				now := time.Now()
				var (
					wg    sync.WaitGroup
					mu    sync.Mutex
					total int
				)
				for p := range parts {
					for range 2 { // two movers per partition
						wg.Go(func() {
							for {
								n, err := s.MoveDueTimers(ctx, p, now, tt.max)
								if err != nil {
									t.Errorf("MoveDueTimers(%d): %v", p, err)
									return
								}
								if n == 0 {
									return
								}
								mu.Lock()
								total += n
								mu.Unlock()
							}
						})
					}
				}
				wg.Wait()
				if total != timers {
					t.Errorf("movers moved %d timers in all, want %d", total, timers)
				}
				if got := systemBodies(t, ctx, s, parts, 5); !slices.Equal(got, want) {
					t.Errorf("queued bodies = %q, want each of %d exactly once", got, timers)
				}
				for p := range parts {
					z, _ := s.rdb.ZCard(ctx, s.Keys.Timers(p)).Result()
					h, _ := s.rdb.HLen(ctx, s.Keys.TimerData(p)).Result()
					if z != 0 || h != 0 {
						t.Errorf("partition %d: %d timers and %d timer envelopes left, want none", p, z, h)
					}
				}
			})
		}
	})
}

func TestClaimPeriod(t *testing.T) {
	const (
		parts    = 8
		claimers = 8
	)
	tests := []struct {
		job  string
		n    int64
		want int // winners among the concurrent claimers
	}{
		{"daily", 1, 1},
		{"daily", 1, 0}, // already started
		{"daily", 2, 1}, // the next period can be won again
		{"daily", 1, 0}, // an older period never runs late
		{"daily", 5, 1}, // periods may be skipped
		{"daily", 4, 0},
		{"hourly", 1, 1}, // another job is independent
		{"hourly", 0, 0},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		wantRuns := map[string]int{}
		for _, tt := range tests {
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				wins int
			)
			start := make(chan struct{})
			for range claimers {
				wg.Go(func() {
					<-start
					won, err := s.ClaimPeriod(ctx, parts, tt.job, tt.n, time.Second)
					if err != nil {
						t.Errorf("ClaimPeriod(%s, %d): %v", tt.job, tt.n, err)
					}
					if won {
						mu.Lock()
						wins++
						mu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			if wins != tt.want {
				t.Errorf("ClaimPeriod(%s, %d): %d of %d claimers won, want %d", tt.job, tt.n, wins, claimers, tt.want)
			}
			wantRuns[tt.job] += tt.want
		}
		for job, want := range wantRuns {
			p := PartitionOf(job, parts)
			var runs int
			for _, raw := range streamEnvelopes(t, ctx, s.rdb, s.Keys.Inbound(p)) {
				k, b := frameOf(t, raw)
				if k == KindJob && string(b.Body) == job {
					runs++
				}
			}
			if runs != want {
				t.Errorf("job %s: %d runs queued on partition %d, want %d", job, runs, p, want)
			}
			pttl, _ := s.rdb.PTTL(ctx, s.Keys.Cron(p, job)).Result()
			if pttl <= 0 || pttl > time.Minute {
				t.Errorf("job %s: cron key PTTL = %v, want in (0, 1m]", job, pttl)
			}
		}
	})
}

func TestTakeOut(t *testing.T) {
	type step struct {
		push []any // PushOut these first
		trim bool
		lost bool // the reply is lost: the gateway's position stays
		n    int
		want []string
		left int64 // messages in the list after the take (-1: not checked)
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first in, first out; lost replies repeat the take", []step{
			{nil, true, false, 10, nil, 0},
			{[]any{"m1", "m2", "m3"}, true, false, 2, []string{"m1", "m2"}, 3},
			{nil, true, true, 2, []string{"m3"}, 1},  // m1, m2 dropped, but the reply was lost...
			{nil, true, false, 2, []string{"m3"}, 1}, // ...so m3 comes again, and nothing is dropped twice
			{[]any{"m4"}, true, true, 10, []string{"m4"}, 1},
			{nil, true, true, 10, []string{"m4"}, 1}, // lost twice
			{nil, true, false, 10, []string{"m4"}, 1},
			{nil, true, false, 10, nil, 0},
			{nil, true, false, 10, nil, 0},
			{[]any{"m5"}, true, false, 10, []string{"m5"}, 1},
		}},
		{"takes without a trim read past what was handed out", []step{
			{[]any{"a", "b", "c", "d", "e"}, true, false, 2, []string{"a", "b"}, 5},
			{nil, false, false, 2, []string{"c", "d"}, 5},
			{nil, false, true, 2, []string{"e"}, 5}, // lost: read again
			{nil, false, false, 2, []string{"e"}, 5},
			{nil, false, false, 2, nil, 5},
			{[]any{"f"}, false, false, 2, []string{"f"}, 6},
			{[]any{"g"}, true, true, 10, []string{"g"}, 1}, // a to f dropped, the reply lost
			{nil, true, false, 10, []string{"g"}, 1},
			{nil, false, false, 10, nil, 1},
			{nil, true, false, 10, nil, 0},
		}},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		for i, tt := range tests {
			gw := "gw" + strconv.Itoa(i)
			var pos OutPos
			for j, st := range tt.steps {
				if len(st.push) > 0 {
					pipe := s.rdb.Pipeline()
					s.PushOut(ctx, pipe, gw, st.push...)
					if _, err := pipe.Exec(ctx); err != nil {
						t.Fatal(err)
					}
				}
				p := pos
				msgs, err := s.TakeOut(ctx, gw, &p, st.n, st.trim)
				if err != nil || !slices.Equal(msgs, st.want) {
					t.Errorf("%s: step %d: TakeOut(n %d, trim %v) = %q, %v; want %q", tt.name, j, st.n, st.trim, msgs, err, st.want)
				}
				if n, _ := s.rdb.LLen(ctx, s.Keys.Outbound(gw)).Result(); st.left >= 0 && n != st.left {
					t.Errorf("%s: step %d: %d messages left in the list, want %d", tt.name, j, n, st.left)
				}
				if !st.lost {
					pos = p
				}
			}
		}
	})
}

// TestTakeOutWait: a take that finds nothing blocks until a message comes
// and returns it in the same round trip; the next take drops it, never
// hands it out twice; what is waiting is returned at once, the BLMOVE's
// copy of it ignored; and a take whose reply was lost (pos not moved on)
// hands its message out again.
func TestTakeOutWait(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		push := func(v ...any) {
			pipe := s.rdb.Pipeline()
			s.PushOut(ctx, pipe, "gw", v...)
			if _, err := pipe.Exec(ctx); err != nil {
				t.Error(err)
			}
		}
		var pos OutPos
		msgs, err := s.TakeOut(ctx, "gw", &pos, 10, true)
		if err != nil || len(msgs) != 0 {
			t.Fatalf("first TakeOut = %v, %v", msgs, err)
		}
		// pushLater pushes v after 100 ms; wait for the channel it returns.
		pushLater := func(v string) chan struct{} {
			done := make(chan struct{})
			go func() { defer close(done); time.Sleep(100 * time.Millisecond); push(v) }()
			return done
		}
		// Nothing waiting: it blocks until x comes.
		pushed := pushLater("x")
		start := time.Now()
		msgs, err = s.TakeOutWait(ctx, s.rdb, "gw", &pos, 10, 5*time.Second)
		if err != nil || !slices.Equal(msgs, []string{"x"}) || pos.Taken != 1 {
			t.Fatalf("blocking TakeOutWait = %q, %v, pos %+v; want x, taken 1", msgs, err, pos)
		}
		<-pushed
		if d := time.Since(start); d < 90*time.Millisecond || d > 4*time.Second {
			t.Errorf("blocking TakeOutWait returned after %v; want when x came (100 ms)", d)
		}
		push("z") // came meanwhile, at the head
		msgs, err = s.TakeOutWait(ctx, s.rdb, "gw", &pos, 10, time.Second)
		if err != nil || !slices.Equal(msgs, []string{"z"}) {
			t.Fatalf("TakeOutWait after x = %q, %v; want z only (x was handed out)", msgs, err)
		}
		push("a", "b")
		msgs, err = s.TakeOutWait(ctx, s.rdb, "gw", &pos, 10, time.Second)
		if err != nil || !slices.Equal(msgs, []string{"a", "b"}) || pos.Taken != 2 {
			t.Fatalf("TakeOutWait with two waiting = %q, %v, pos %+v; want a b, taken 2", msgs, err, pos)
		}
		// Nothing comes: it returns nothing after the timeout, with the
		// list empty.
		if msgs, err := s.TakeOutWait(ctx, s.rdb, "gw", &pos, 10, time.Second); err != nil || len(msgs) != 0 || pos.Taken != 0 {
			t.Fatalf("idle TakeOutWait = %q, %v, pos %+v; want nothing", msgs, err, pos)
		}
		// A take whose reply was lost: the message is still in the list,
		// and the same call made again (pos as before) hands it out.
		push("y")
		lost := pos
		if msgs, err := s.TakeOutWait(ctx, s.rdb, "gw", &lost, 10, time.Second); err != nil || !slices.Equal(msgs, []string{"y"}) {
			t.Fatalf("TakeOutWait = %q, %v; want y", msgs, err)
		}
		if msgs, err := s.TakeOutWait(ctx, s.rdb, "gw", &pos, 10, time.Second); err != nil || !slices.Equal(msgs, []string{"y"}) {
			t.Fatalf("TakeOutWait after a lost reply = %q, %v; want y again", msgs, err)
		}
		// A Redis that restarted has no scripts: the take blocks until a
		// message comes (nothing to hand out before), then loads the
		// script and takes it.
		if err := s.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		pushed = pushLater("w")
		msgs, err = s.TakeOutWait(ctx, s.rdb, "gw", &pos, 10, 5*time.Second)
		<-pushed
		if err != nil || !slices.Equal(msgs, []string{"w"}) {
			t.Fatalf("TakeOutWait without the script loaded = %q, %v; want w (y was handed out)", msgs, err)
		}
		if msgs, _ := s.TakeOut(ctx, "gw", &pos, 10, true); len(msgs) != 0 {
			t.Fatalf("after w was handed out, TakeOut = %q; want nothing", msgs)
		}
		if n, _ := s.rdb.LLen(ctx, s.Keys.Outbound("gw")).Result(); n != 0 {
			t.Errorf("outbound list holds %d messages after everything was handed out", n)
		}
	})
}
