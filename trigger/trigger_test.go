package trigger

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store"
	"github.com/maple-farm/maple/store/storetest"
)

// TestFarmExists: a prefix has a farm behind it once any of its gateway
// or worker registries or its partition count exists; looking writes
// nothing.
func TestFarmExists(t *testing.T) {
	for name, addr := range map[string]func(t *testing.T) string{
		"redis":     func(t *testing.T) string { return storetest.Start(t, storetest.Options{}).Addr },
		"miniredis": func(t *testing.T) string { return storetest.Mini(t).Addr() },
	} {
		t.Run(name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: addr(t)})
			defer rdb.Close()
			ctx := t.Context()
			check := func(prefix string, want bool) {
				t.Helper()
				got, err := FarmExists(ctx, rdb, prefix)
				if err != nil || got != want {
					t.Errorf("FarmExists(%q) = %v, %v; want %v", prefix, got, err, want)
				}
			}
			check("", false)
			check("nope", false)
			if n, _ := rdb.DBSize(ctx).Result(); n != 0 {
				t.Fatalf("FarmExists wrote %d keys", n)
			}
			if _, err := queue.New(rdb, "").Partitions(ctx, 0); err != nil {
				t.Fatal(err)
			}
			check("", true) // the default prefix
			check("maple", true)
			check("nope", false)
			st := queue.New(rdb, "g")
			st.Heartbeat(ctx, st.Keys.Gateways(), "gw1", time.Now())
			check("g", true)
			st = queue.New(rdb, "w")
			st.Heartbeat(ctx, st.Keys.Workers(), "w1", time.Now())
			check("w", true)
			check("gw", false)
		})
	}
}

// TestParseBounds: a trigger reaches every gateway and acts on any player,
// so Parse refuses what no gateway should act on before any does: an
// unknown op, more than MaxUIDs user ids, an empty user id, a user id or
// group name over store.MaxNameLen bytes or with a brace, a message over
// MaxMessage. What is within the bounds, up to them, is taken.
func TestParseBounds(t *testing.T) {
	name := strings.Repeat("u", store.MaxNameLen)
	uids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "u" + strconv.Itoa(i)
		}
		return out
	}
	msg := func(m Message) []byte {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Just under MaxMessage once encoded: {"op":"broadcast","cmd":1,"body":"..."}.
	bigBody := strings.Repeat("b", MaxMessage-len(`{"op":"broadcast","cmd":1,"body":""}`))
	for _, c := range []struct {
		name string
		data []byte
		bad  string // "" if taken, else a part of the error
	}{
		{"write_to_users", msg(Message{Op: OpWriteToUsers, UIDs: []string{"42"}, Cmd: 100, Body: "hi"}), ""},
		{"MaxUIDs uids", msg(Message{Op: OpWriteToUsers, UIDs: uids(MaxUIDs), Cmd: 100}), ""},
		{"uid of MaxNameLen", msg(Message{Op: OpCloseUsers, UIDs: []string{name}}), ""},
		{"group of MaxNameLen", msg(Message{Op: OpWriteToGroup, Group: name, Cmd: 100}), ""},
		{"broadcast", msg(Message{Op: OpBroadcast, Cmd: 100, BodyB64: "AAEC"}), ""},
		{"write_to_worker", msg(Message{Op: OpWriteToWorker, Cmd: 9, Body: "reload", ID: "x"}), ""},
		{"message of MaxMessage", msg(Message{Op: OpBroadcast, Cmd: 1, Body: bigBody}), ""},

		{"unknown op", []byte(`{"op":"write_to_everyone","cmd":1}`), `unknown op "write_to_everyone"`},
		{"no op", []byte(`{"cmd":1}`), "no op"},
		{"not json", []byte(`op=broadcast`), "malformed"},
		{"message over MaxMessage", msg(Message{Op: OpBroadcast, Cmd: 1, Body: bigBody + "b"}), "more than 8388608"},
		{"no uids", msg(Message{Op: OpWriteToUsers, Cmd: 100}), "needs uids"},
		{"MaxUIDs+1 uids", msg(Message{Op: OpWriteToUsers, UIDs: uids(MaxUIDs + 1), Cmd: 100}), "names 10001 uids, more than 10000"},
		{"MaxUIDs+1 uids to close", msg(Message{Op: OpCloseUsers, UIDs: uids(MaxUIDs + 1)}), "names 10001 uids"},
		{"empty uid", msg(Message{Op: OpWriteToUsers, UIDs: []string{"42", ""}, Cmd: 100}), "uids[1] is empty"},
		{"uid over MaxNameLen", msg(Message{Op: OpCloseUsers, UIDs: []string{"42", name + "u"}}), "uids[1]: store: name longer than 128 bytes"},
		{"uid with a brace", msg(Message{Op: OpWriteToUsers, UIDs: []string{"x}{evil"}, Cmd: 100}), "uids[0]: store: name with { or }"},
		{"no group", msg(Message{Op: OpWriteToGroup, Cmd: 100}), "needs group"},
		{"group over MaxNameLen", msg(Message{Op: OpWriteToGroup, Group: name + "g", Cmd: 100}), "group: store: name longer than 128 bytes"},
		{"group with a brace", msg(Message{Op: OpWriteToGroup, Group: "lobby}", Cmd: 100}), "group: store: name with { or }"},
		{"no cmd", msg(Message{Op: OpBroadcast, Body: "x"}), "needs a non-zero cmd"},
		{"body and body_b64", msg(Message{Op: OpBroadcast, Cmd: 1, Body: "x", BodyB64: "AAEC"}), "both set"},
		{"bad body_b64", msg(Message{Op: OpBroadcast, Cmd: 1, BodyB64: "!!"}), "body_b64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Parse(c.data)
			switch {
			case c.bad == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.bad != "" && err == nil:
				t.Errorf("taken, want refused with %q", c.bad)
			case c.bad != "" && (!errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.bad)):
				t.Errorf("error %q (ErrMalformed: %v), want one with %q", err, errors.Is(err, ErrMalformed), c.bad)
			}
		})
	}
}

// TestPublishRefusesMalformed: Publisher checks a message as gateways
// would before sending it, so a Go caller gets the error, and nothing is
// published.
func TestPublishRefusesMalformed(t *testing.T) {
	m := storetest.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	ctx := t.Context()
	sub := rdb.Subscribe(ctx, keys.New("").TriggerChannel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(rdb, "")
	if _, err := p.WriteToUsers(ctx, []string{"42", strings.Repeat("u", store.MaxNameLen+1)}, 100, []byte("hi")); !errors.Is(err, ErrMalformed) {
		t.Errorf("WriteToUsers with a uid over MaxNameLen: %v, want ErrMalformed", err)
	}
	if _, err := p.WriteToGroup(ctx, "a{b", 100, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("WriteToGroup with a brace: %v, want ErrMalformed", err)
	}
	if _, err := p.CloseUsers(ctx, make([]string, MaxUIDs+1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("CloseUsers of MaxUIDs+1: %v, want ErrMalformed", err)
	}
	if n, err := p.Broadcast(ctx, 100, []byte("ok")); err != nil || n != 1 {
		t.Fatalf("Broadcast = %d, %v; want 1 subscriber", n, err)
	}
	// Only the broadcast went out.
	msg, err := sub.ReceiveTimeout(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.(*redis.Message).Payload; !strings.Contains(got, `"op":"broadcast"`) {
		t.Errorf("first message published: %s", got)
	}
}

// TestWriteToWorkerViaGateways: the write_to_worker of a user that may
// only publish goes out as a trigger that gateways parse, each call with
// its own id (gateways take identical messages within seconds once), and
// reports how many gateways received it.
func TestWriteToWorkerViaGateways(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := t.Context()
	p := NewPublisher(rdb, "f")
	if n, err := p.WriteToWorkerViaGateways(ctx, 9, []byte("reload")); err != nil || n != 0 {
		t.Fatalf("with no gateway: %d, %v; want 0 receivers", n, err)
	}
	sub := rdb.Subscribe(ctx, keys.New("f").TriggerChannel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for range 2 {
		n, err := p.WriteToWorkerViaGateways(ctx, 9, []byte{0, 1, 2})
		if err != nil || n != 1 {
			t.Fatalf("WriteToWorkerViaGateways = %d, %v; want 1 receiver", n, err)
		}
		msg, err := sub.ReceiveTimeout(ctx, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		m, body, err := Parse([]byte(msg.(*redis.Message).Payload))
		if err != nil || m.Op != OpWriteToWorker || m.Cmd != 9 || string(body) != "\x00\x01\x02" || m.ID == "" {
			t.Errorf("published %+v, body %q, %v", m, body, err)
		}
		ids[m.ID] = true
	}
	if len(ids) != 2 {
		t.Errorf("two calls published ids %v, want two different ones", ids)
	}
	if n, _ := rdb.DBSize(ctx).Result(); n != 0 {
		t.Errorf("publishing wrote %d keys", n)
	}
}
