package queue

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/store/storetest"
)

// keySlot is the slot function of the Redis Cluster spec.
var keySlot = storetest.KeySlot

func TestDefaultPartitionsSpreadOverThreeMasters(t *testing.T) {
	ranges := [][2]int{{0, 5461}, {5461, 10922}, {10922, 16384}} // a 3-master cluster
	k := keys.New("")
	per := make([][]int, len(ranges))
	slots := map[int]bool{}
	for p := range DefaultPartitions {
		s := keySlot(k.Inbound(p))
		slots[s] = true
		for i, r := range ranges {
			if s >= r[0] && s < r[1] {
				per[i] = append(per[i], p)
			}
		}
	}
	for i, r := range ranges {
		t.Logf("slots [%d,%d): partitions %v", r[0], r[1], per[i])
		if len(per[i]) == 0 {
			t.Errorf("no default partition hashes to slots [%d,%d): one master of three gets no inbound queue", r[0], r[1])
		}
	}
	if len(slots) != DefaultPartitions {
		t.Errorf("the %d default partitions use only %d slots", DefaultPartitions, len(slots))
	}
}

// evalRecorder records the keys of every EVAL and EVALSHA a client sends,
// and of every plain command that takes several keys (multiKeyCommands).
type evalRecorder struct {
	byHash map[string]string // script hash -> name
	mu     sync.Mutex
	calls  []evalCall
}

type evalCall struct {
	script string // name in scripts, or the command's name if cmd
	cmd    bool   // a plain multi-key command, not a script
	keys   []string
}

// multiKeyCommands are the plain commands whose arguments are all keys,
// which Redis Cluster refuses (CROSSSLOT) unless they share a slot.
var multiKeyCommands = map[string]bool{"del": true, "unlink": true, "exists": true, "touch": true, "mget": true}

func newEvalRecorder() *evalRecorder {
	r := &evalRecorder{byHash: map[string]string{}}
	for name, s := range scripts {
		r.byHash[s.Hash()] = name
	}
	return r
}

func (r *evalRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *evalRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record(cmd)
		return next(ctx, cmd)
	}
}

func (r *evalRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			r.record(c)
		}
		return next(ctx, cmds)
	}
}

func (r *evalRecorder) record(cmd redis.Cmder) {
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	if multiKeyCommands[name] && len(args) > 2 {
		var keys []string
		for _, a := range args[1:] {
			keys = append(keys, fmt.Sprint(a))
		}
		r.mu.Lock()
		r.calls = append(r.calls, evalCall{name, true, keys})
		r.mu.Unlock()
		return
	}
	if len(args) < 3 || (name != "eval" && name != "evalsha" && name != "eval_ro" && name != "evalsha_ro") {
		return
	}
	id := fmt.Sprint(args[1])
	if strings.HasPrefix(name, "eval") && !strings.HasPrefix(name, "evalsha") {
		h := sha1.Sum([]byte(id))
		id = hex.EncodeToString(h[:])
	}
	script, ok := r.byHash[id]
	if !ok {
		script = "unknown script " + id
	}
	n, _ := strconv.Atoi(fmt.Sprint(args[2]))
	var keys []string
	for i := 0; i < n && 3+i < len(args); i++ {
		keys = append(keys, fmt.Sprint(args[3+i]))
	}
	r.mu.Lock()
	r.calls = append(r.calls, evalCall{script, false, keys})
	r.mu.Unlock()
}

// take returns and forgets the calls recorded so far.
func (r *evalRecorder) take() []evalCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// TestScriptKeysShareSlot runs every Broker method that runs a script and
// checks, on the commands actually sent, that each script call's keys
// share one hash slot, so that it runs on Redis Cluster; so must the keys
// of each multi-key command the call sites send.
func TestScriptKeysShareSlot(t *testing.T) {
	const parts = 16
	type site struct {
		name    string
		run     func(ctx context.Context, s *Broker) error
		scripts []string // scripts the call site must run
	}
	var timerID string
	sites := []site{
		{"Enqueue", func(ctx context.Context, s *Broker) error {
			var bs []PartBatch
			for p := range parts {
				bs = append(bs, PartBatch{Part: p, Envelopes: [][]byte{envOf(KindOpen, "c", 1, "")}})
			}
			return s.Enqueue(ctx, "gw1", bs, 10)
		}, nil},
		{"EnqueueCached", func(ctx context.Context, s *Broker) error {
			var bs []PartBatch
			for p := range parts {
				bs = append(bs, PartBatch{Part: p, Envelopes: [][]byte{envOf(KindFrame, "c", 2, "x")}})
			}
			queued := int64(0)
			return s.EnqueueCached(ctx, "gw1", bs, 100, &queued)
		}, nil},
		{"AcquireLease", func(ctx context.Context, s *Broker) error {
			_, err := s.AcquireLease(ctx, 3, "w", time.Second)
			return err
		}, []string{"lease_acquire"}},
		{"LiveRound", func(ctx context.Context, s *Broker) error {
			_, _, err := s.LiveRound(ctx, "w", time.Second, time.Second, nil, nil)
			return err
		}, nil},
		{"ReleaseLease", func(ctx context.Context, s *Broker) error {
			return s.ReleaseLease(ctx, 3, "w")
		}, []string{"lease_release"}},
		{"ReleaseLeases", func(ctx context.Context, s *Broker) error {
			return s.ReleaseLeases(ctx, []int{0, 1, 2, 3}, "w")
		}, []string{"lease_release"}},
		{"DeadLetter, Requeue", func(ctx context.Context, s *Broker) error {
			if err := s.EnsureGroups(ctx, parts); err != nil {
				return err
			}
			for p := range parts {
				ds, err := s.ReadInbound(ctx, "w", []int{p}, 1, -1)
				if err != nil || len(ds) != 1 {
					return fmt.Errorf("partition %d: read %d, %v", p, len(ds), err)
				}
				if err := s.DeadLetter(ctx, ds[0], "x"); err != nil {
					return err
				}
				dls, err := s.DeadLetters(ctx, p, 1)
				if err != nil || len(dls) != 1 {
					return fmt.Errorf("partition %d: %d dead letters, %v", p, len(dls), err)
				}
				if err := s.Requeue(ctx, p, dls[0].ID); err != nil {
					return err
				}
			}
			return nil
		}, []string{"dead_requeue"}},
		{"BindUser, UnbindUser", func(ctx context.Context, s *Broker) error {
			if _, _, err := s.BindUser(ctx, "alice", Session{"gw1", "c1"}, false); err != nil {
				return err
			}
			_, err := s.UnbindUser(ctx, "alice", Session{"gw1", "c1"})
			return err
		}, []string{"session_bind", "session_unbind"}},
		{"ForgetGateway", func(ctx context.Context, s *Broker) error {
			for _, uid := range []string{"u1", "u2", "u3"} {
				if _, _, err := s.BindUser(ctx, uid, Session{"gw2", "c-" + uid}, false); err != nil {
					return err
				}
			}
			if err := s.Enqueue(ctx, "gw2", []PartBatch{{Part: 1, Envelopes: [][]byte{envOf(KindOpen, "c-u1", 1, "")}}}, 0); err != nil {
				return err
			}
			pipe := s.rdb.Pipeline()
			s.MarkHandled(ctx, pipe, "gw2", "c-u1", uint64(3))
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			_, err := s.ForgetGateway(ctx, "gw2")
			return err
		}, []string{"session_bind", "session_unbind"}},
		{"ScheduleAfter", func(ctx context.Context, s *Broker) (err error) {
			for range 8 {
				if timerID, err = s.ScheduleAfter(ctx, parts, -time.Second, 1, nil); err != nil {
					return err
				}
			}
			return nil
		}, []string{"timer_add"}},
		{"CancelTimer", func(ctx context.Context, s *Broker) error {
			_, err := s.CancelTimer(ctx, timerID)
			return err
		}, []string{"timer_cancel"}},
		{"MoveDueTimers", func(ctx context.Context, s *Broker) error {
			for p := range parts {
				if _, err := s.MoveDueTimers(ctx, p, time.Now(), 10); err != nil {
					return err
				}
			}
			return nil
		}, []string{"timer_due"}},
		{"MoveDueTimersOf", func(ctx context.Context, s *Broker) error {
			// A timer due now: the script runs only where one is.
			if _, err := s.ScheduleAfter(ctx, parts, 0, 1, nil); err != nil {
				return err
			}
			all := make([]int, parts)
			for p := range all {
				all[p] = p
			}
			_, err := s.MoveDueTimersOf(ctx, all, time.Now(), 10)
			return err
		}, []string{"timer_due"}},
		{"TakeOut", func(ctx context.Context, s *Broker) error {
			pipe := s.rdb.Pipeline()
			s.PushOut(ctx, pipe, "gw3", "m1", "m2")
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			var pos OutPos
			if _, err := s.TakeOut(ctx, "gw3", &pos, 1, true); err != nil {
				return err
			}
			_, err := s.TakeOut(ctx, "gw3", &pos, 1, true)
			return err
		}, []string{"out_trim"}},
		{"Trim", func(ctx context.Context, s *Broker) error {
			if err := s.EnsureGroups(ctx, 3); err != nil {
				return err
			}
			if err := LoadScripts(ctx, s.rdb); err != nil {
				return err
			}
			pipe := s.rdb.Pipeline()
			for p := 0; p < 3; p++ {
				s.Trim(ctx, pipe, p)
			}
			_, err := pipe.Exec(ctx)
			return err
		}, []string{"trim"}},
		{"ClaimPeriod", func(ctx context.Context, s *Broker) error {
			for _, job := range []string{"daily", "hourly", "{odd}"} {
				if _, err := s.ClaimPeriod(ctx, parts, job, 1, time.Minute); err != nil {
					return err
				}
			}
			return nil
		}, []string{"cron_claim"}},
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := testCtx(t)
			rec := newEvalRecorder()
			b.rdb.AddHook(rec)
			s := New(b.rdb, storetest.Prefix(t))
			ran := map[string]bool{}
			multiKey := 0
			for _, st := range sites {
				if err := st.run(ctx, s); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				seen := map[string]bool{}
				for _, c := range rec.take() {
					what := "script " + c.script
					if c.cmd {
						what = "command " + strings.ToUpper(c.script)
						multiKey++
					} else {
						seen[c.script] = true
						ran[c.script] = true
					}
					if len(c.keys) == 0 {
						t.Errorf("%s: %s called with no keys", st.name, what)
						continue
					}
					want := keySlot(c.keys[0])
					for _, key := range c.keys[1:] {
						if got := keySlot(key); got != want {
							t.Errorf("%s: %s: key %s in slot %d, key %s in slot %d (CROSSSLOT on a cluster)",
								st.name, what, c.keys[0], want, key, got)
						}
					}
				}
				for _, name := range st.scripts {
					if !seen[name] {
						t.Errorf("%s ran no %s script (ran %v)", st.name, name, seen)
					}
				}
			}
			for name := range scripts {
				if !ran[name] {
					t.Errorf("no call site ran script %s", name)
				}
			}
			if multiKey == 0 {
				t.Errorf("no multi-key command recorded (ForgetGateway deletes its gateway keys in one UNLINK)")
			}
			for name := range ran {
				if _, ok := scripts[name]; !ok {
					t.Errorf("a call site ran %s", name)
				}
			}
		})
	}
}
