package queue

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestDeadLetterUnreadable: entries a worker cannot read are dead-lettered
// as "unreadable entry"; DeadLetters says so (it used to show kind(0) and
// an empty body), and Requeue refuses them (it used to put them back, to
// be dead-lettered again, and report success).
func TestDeadLetterUnreadable(t *testing.T) {
	bundle := AppendBundle(nil, [][]byte{envOf(KindFrame, "c1", 1, "fine"), {envelopeInBundle, byte(KindFrame), 0xff}})
	tests := []struct {
		name   string
		fields []any
		index  int
		why    string
	}{
		// Its own bytes are kept (they cannot be read without the
		// envelope before them).
		{"envelope of a bundle", []any{"b", bundle}, 1, "bad envelope: an envelope of a bundle, without the one before it"},
		{"bundle", []any{"b", "\xff\xff"}, 0, "bad envelope: version"},
		{"lone envelope", []any{"e", "x"}, 0, "bad envelope: version"},
		{"operator frame", []any{"cmd", "nine", "body", "hi"}, 0, "bad envelope: version"},
	}
	eachBackend(t, func(t *testing.T, s *Broker) {
		ctx := testCtx(t)
		for p, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.EnsureGroups(ctx, p+1); err != nil {
					t.Fatal(err)
				}
				if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Inbound(p), Values: tt.fields}).Err(); err != nil {
					t.Fatal(err)
				}
				ds, err := s.ReadInbound(ctx, "w1", []int{p}, 10, -1)
				if err != nil || len(ds) <= tt.index || ds[tt.index].Env.Kind != 0 {
					t.Fatalf("ReadInbound = %+v, %v; want envelope %d unreadable", ds, err, tt.index)
				}
				// What a worker does with it (worker.handle).
				if err := s.DeadLetter(ctx, ds[tt.index], "unreadable entry"); err != nil {
					t.Fatal(err)
				}
				dls, err := s.DeadLetters(ctx, p, 10)
				if err != nil || len(dls) != 1 {
					t.Fatalf("DeadLetters = %+v, %v; want one", dls, err)
				}
				dl := dls[0]
				if dl.Unreadable != tt.why || dl.Env.Kind != 0 || dl.Reason != "unreadable entry" || dl.From != ds[tt.index].ID {
					t.Errorf("dead letter = %+v, want Unreadable %q", dl, tt.why)
				}
				inBefore, _ := s.rdb.XLen(ctx, s.Keys.Inbound(p)).Result()
				err = s.Requeue(ctx, p, dl.ID)
				if !errors.Is(err, ErrUnreadable) || errors.Is(err, ErrNotFound) {
					t.Fatalf("Requeue(unreadable) = %v, want ErrUnreadable", err)
				}
				if msg := err.Error(); strings.Count(msg, "store:") != 1 || !strings.Contains(msg, tt.why) || !strings.Contains(msg, dl.ID) {
					t.Errorf("Requeue error %q: want one store: prefix, the id and %q", msg, tt.why)
				}
				if n, _ := s.rdb.XLen(ctx, s.Keys.Inbound(p)).Result(); n != inBefore {
					t.Errorf("inbound has %d entries after a refused Requeue, want %d", n, inBefore)
				}
				if dls, _ := s.DeadLetters(ctx, p, 10); len(dls) != 1 {
					t.Errorf("dead letters after a refused Requeue = %d, want the unreadable one kept", len(dls))
				}
			})
		}
		// A readable dead letter beside them still goes back; a missing one
		// is not found, said once.
		p := len(tests)
		if err := s.EnsureGroups(ctx, p+1); err != nil {
			t.Fatal(err)
		}
		s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.Keys.Inbound(p), Values: []any{"e", envOf(KindFrame, "c9", 3, "ok")}})
		ds, err := s.ReadInbound(ctx, "w1", []int{p}, 10, -1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("ReadInbound = %+v, %v", ds, err)
		}
		if err := s.DeadLetter(ctx, ds[0], "max deliveries"); err != nil {
			t.Fatal(err)
		}
		dls, _ := s.DeadLetters(ctx, p, 10)
		if len(dls) != 1 || dls[0].Unreadable != "" || dls[0].Env.Conn != "c9" || len(dls[0].Raw) == 0 {
			t.Fatalf("DeadLetters = %+v, want the readable one", dls)
		}
		if err := s.Requeue(ctx, p, dls[0].ID); err != nil {
			t.Fatalf("Requeue(readable) = %v", err)
		}
		err = s.Requeue(ctx, p, dls[0].ID)
		if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnreadable) {
			t.Fatalf("Requeue(gone) = %v, want ErrNotFound", err)
		}
		if msg := err.Error(); strings.Count(msg, "store:") != 1 || strings.Count(msg, "not found")+strings.Count(msg, "no such") != 1 {
			t.Errorf("Requeue(gone) error %q repeats itself", msg)
		}
	})
}
