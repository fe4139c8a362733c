package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store/storetest"
)

func TestBackoff(t *testing.T) {
	b := New(10*time.Millisecond, 50*time.Millisecond)
	var got []time.Duration
	for range 5 {
		got = append(got, b.Delay())
		b.cur = min(2*b.Delay(), b.Max) // what Wait does, without the wait
	}
	if want := "[10ms 20ms 40ms 50ms 50ms]"; fmt.Sprint(got) != want {
		t.Errorf("delays %v, want %s", got, want)
	}
	b.Reset()
	if d := b.Delay(); d != 10*time.Millisecond {
		t.Errorf("after Reset: %v, want 10ms", d)
	}
	start := time.Now()
	if !b.Wait(t.Context()) {
		t.Error("Wait on a live context reported it ended")
	}
	if took := time.Since(start); took < 10*time.Millisecond {
		t.Errorf("Wait took %v, want 10ms", took)
	}
	if d := b.Delay(); d != 20*time.Millisecond {
		t.Errorf("after a Wait: %v, want 20ms", d)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b = New(time.Hour, time.Hour)
	if b.Wait(ctx) {
		t.Error("Wait on an ended context reported it live")
	}
}

// reply is an error reply of Redis.
type reply string

func (e reply) Error() string { return string(e) }
func (reply) RedisError()     {}

// TestTransientAndRefused sorts the errors a Redis call meets: the network
// and a failover are transient, an error reply is a refusal, anything else
// (a game's own error) neither.
func TestTransientAndRefused(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	ctx := t.Context()
	rdb.Set(ctx, "s", "x", 0)
	wrongType := rdb.LPush(ctx, "s", "y").Err()
	m.Close()
	down := rdb.Get(ctx, "s").Err()
	tests := []struct {
		name               string
		err                error
		transient, refused bool
	}{
		{"nil", nil, false, false},
		{"game error", errors.New("no such card"), false, false},
		{"EOF", io.EOF, true, false},
		{"wrapped EOF", fmt.Errorf("store: x: %w", io.ErrUnexpectedEOF), true, false},
		{"refused", syscall.ECONNREFUSED, true, false},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true, false},
		{"closed client", redis.ErrClosed, true, false},
		{"pool timeout", redis.ErrPoolTimeout, true, false},
		{"server down", down, true, false},
		{"WRONGTYPE", wrongType, false, true},
		{"OOM", reply("OOM command not allowed when used memory > 'maxmemory'"), false, true},
		{"LOADING", reply("LOADING Redis is loading the dataset in memory"), true, false},
		{"READONLY", reply("READONLY You can't write against a read only replica."), true, false},
		{"CLUSTERDOWN", fmt.Errorf("x: %w", reply("CLUSTERDOWN The cluster is down")), true, false},
		{"MASTERDOWN", reply("MASTERDOWN Link with MASTER is down"), true, false},
		{"TRYAGAIN", reply("TRYAGAIN Multiple keys request during rehashing of slot"), true, false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.transient {
			t.Errorf("IsTransient(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.transient)
		}
		if got := IsRefused(tt.err); got != tt.refused {
			t.Errorf("IsRefused(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.refused)
		}
	}
}
