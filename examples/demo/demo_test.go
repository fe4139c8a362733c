package demo

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/worker"
)

// lockedBuffer is a log destination for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLoginNameTooLong: the demo's login (cmd 2) with a user id over
// store.MaxNameLen answers -10001 (handler failed), binds nobody, and the
// worker's log says why.
func TestLoginNameTooLong(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	ro := &redis.UniversalOptions{Addrs: []string{srv.Addr}}
	prefix := storetest.Prefix(t)
	var logs lockedBuffer
	w, err := worker.New(New(), worker.Options{Redis: ro, Prefix: prefix, Partitions: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("worker did not start: %v", err)
	}

	rdb := redis.NewUniversalClient(ro)
	t.Cleanup(func() { rdb.Close() })
	st := queue.New(rdb, prefix)
	uid := strings.Repeat("u", store.MaxNameLen+1)
	env := queue.Envelope{Kind: queue.KindFrame, Seq: 1, At: time.Now().UnixNano(), Gateway: "gwx", Conn: "gwx-1",
		Frame: box.Append(nil, CmdLogin, 0, 5, []byte(uid))}
	b := queue.PartBatch{Part: 0, Envelopes: [][]byte{queue.AppendEnvelope(nil, &env)}}
	if err := st.Enqueue(t.Context(), "gwx", []queue.PartBatch{b}, 0); err != nil {
		t.Fatal(err)
	}

	var reply []byte
	for deadline := time.Now().Add(5 * time.Second); reply == nil; {
		if time.Now().After(deadline) {
			t.Fatal("no reply to the login")
		}
		msgs, err := rdb.LRange(t.Context(), st.Keys.Outbound("gwx"), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 {
			m, err := queue.DecodeOut([]byte(msgs[0]))
			if err != nil {
				t.Fatal(err)
			}
			reply = m.Frames
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, err := box.Decode(reply)
	if err != nil {
		t.Fatal(err)
	}
	if r.Cmd != CmdLogin || r.SN != 5 || r.Ret != box.RetHandlerFailed {
		t.Errorf("reply cmd %d sn %d ret %d, want cmd %d sn 5 ret %d", r.Cmd, r.SN, r.Ret, CmdLogin, box.RetHandlerFailed)
	}
	if _, err := store.New(rdb, prefix).SessionOf(t.Context(), uid); err == nil {
		t.Error("a session was bound")
	}
	if log := logs.String(); !strings.Contains(log, "handler failed") || !strings.Contains(log, "name longer than 128 bytes") {
		t.Errorf("the log does not say why the login failed:\n%s", log)
	}
}
