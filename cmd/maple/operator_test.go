package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/box"
	"github.com/maple-farm/maple/internal/keys"
	"github.com/maple-farm/maple/internal/queue"
	"github.com/maple-farm/maple/store/storetest"
	"github.com/maple-farm/maple/trigger"
)

// runApp runs the maple command line in-process and returns its output.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &out
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := app.RunContext(ctx, append([]string{"maple"}, args...))
	return out.String(), err
}

// redisKeys lists every key of a server.
func redisKeys(t *testing.T, rdb redis.UniversalClient) []string {
	t.Helper()
	keys, err := rdb.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

func testRedis(t *testing.T) (*storetest.Server, *redis.Client) {
	t.Helper()
	srv := storetest.Start(t, storetest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	return srv, rdb
}

// TestTriggerRefusesNoFarm: `maple trigger` and `maple dead` under a
// --prefix with no farm behind it fail with a clear error and write
// nothing (write_to_worker used to create <prefix>:partitions = 16 and a
// queue nobody reads, print "queued" and exit 0); --force acts anyway;
// a farm's prefix works.
func TestTriggerRefusesNoFarm(t *testing.T) {
	srv, rdb := testRedis(t)
	ctx := t.Context()
	// A farm under "maple": its first process set the partition count.
	if _, err := queue.New(rdb, "maple").Partitions(ctx, 4); err != nil {
		t.Fatal(err)
	}
	before := redisKeys(t, rdb)
	r := "--redis=" + srv.URL()
	for _, args := range [][]string{
		{"trigger", "write_to_worker", r, "--prefix", "nope", "--cmd", "9", "--body", "reload config"},
		{"trigger", "write_to_users", r, "--prefix", "nope", "--uids", "42", "--cmd", "100", "--body", "hi"},
		{"trigger", "write_to_group", r, "--prefix", "nope", "--group", "lobby", "--cmd", "100"},
		{"trigger", "broadcast", r, "--prefix", "nope", "--cmd", "100"},
		{"trigger", "close_users", r, "--prefix", "nope", "--uids", "42"},
		{"dead", "list", r, "--prefix", "nope"},
		{"dead", "requeue", r, "--prefix", "nope", "--all"},
		{"dead", "requeue", r, "--prefix", "nope", "0/1-1"},
	} {
		out, err := runApp(t, args...)
		if after := redisKeys(t, rdb); !slices.Equal(after, before) {
			t.Fatalf("%v wrote to Redis although refused: keys %v, were %v", args, after, before)
		}
		if err == nil {
			t.Errorf("%v: no error; output %q", args, out)
			continue
		}
		msg := err.Error()
		for _, want := range []string{`no farm under --prefix "nope"`, "nope:partitions", "--force"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%v: error %q lacks %q", args, msg, want)
			}
		}
		if strings.Contains(out, "queued") || strings.Contains(out, "published") {
			t.Errorf("%v: printed %q although refused", args, out)
		}
	}

	// With --force, as before.
	if out, err := runApp(t, "trigger", "write_to_worker", r, "--prefix", "nope", "--cmd", "9", "--force"); err != nil || !strings.Contains(out, "queued") {
		t.Fatalf("write_to_worker --force: %q, %v", out, err)
	}
	if n, _ := rdb.Get(ctx, "nope:partitions").Int(); n != queue.DefaultPartitions {
		t.Errorf("nope:partitions = %d after --force, want %d", n, queue.DefaultPartitions)
	}
	// dead list --force on a prefix without a partition count reads the
	// default partitions and sets nothing.
	before = redisKeys(t, rdb)
	if out, err := runApp(t, "dead", "list", r, "--prefix", "other", "--force"); err != nil || !strings.Contains(out, "0 dead letters") {
		t.Fatalf("dead list --force: %q, %v", out, err)
	}
	if after := redisKeys(t, rdb); !slices.Equal(after, before) {
		t.Errorf("dead list --force wrote to Redis: keys %v, were %v", after, before)
	}

	// The farm's own prefix: queued on one of its 4 partitions.
	if out, err := runApp(t, "trigger", "write_to_worker", r, "--cmd", "9", "--body", "reload config"); err != nil || out != "write_to_worker: queued\n" {
		t.Fatalf("write_to_worker: %q, %v", out, err)
	}
	queued := int64(0)
	for p := range 4 {
		n, _ := rdb.XLen(ctx, keys.New("maple").Inbound(p)).Result()
		queued += n
	}
	if queued != 1 {
		t.Errorf("%d entries queued under the farm's prefix, want 1", queued)
	}
	// A farm with only live gateways or workers registered counts too.
	for _, reg := range []string{"gw:gateways", "wk:workers"} {
		prefix, _, _ := strings.Cut(reg, ":")
		if err := queue.New(rdb, prefix).Heartbeat(ctx, reg, "id1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if out, err := runApp(t, "trigger", "broadcast", r, "--prefix", prefix, "--cmd", "100"); err != nil || !strings.Contains(out, "published to 0 gateways") {
			t.Errorf("broadcast under %q (%s set): %q, %v", prefix, reg, out, err)
		}
	}
}

// TestTriggerFlags: --cmd is required and shows no default; --group has
// a usage text; --id and --body-b64 reach the published message.
func TestTriggerFlags(t *testing.T) {
	for _, op := range []string{"write_to_users", "write_to_group", "broadcast", "write_to_worker"} {
		help, err := runApp(t, "trigger", op, "--help")
		if err != nil {
			t.Fatal(err)
		}
		var cmdLine string
		for _, l := range strings.Split(help, "\n") {
			if strings.Contains(l, "--cmd ") {
				cmdLine = l
			}
		}
		if cmdLine == "" || strings.Contains(cmdLine, "default") || !strings.Contains(cmdLine, "required") {
			t.Errorf("%s --help: --cmd line %q, want it marked required, with no default", op, cmdLine)
		}
		if !strings.Contains(help, "--body-b64") {
			t.Errorf("%s --help has no --body-b64:\n%s", op, help)
		}
		if op != "write_to_worker" && !strings.Contains(help, "--id ") {
			t.Errorf("%s --help has no --id:\n%s", op, help)
		}
		// The usage on --group's own line (the column's width follows the
		// longest flag name: --redis-tls-server-name).
		if op == "write_to_group" && !regexp.MustCompile(`--group value +name of the group`).MatchString(help) {
			t.Errorf("write_to_group --help: --group has no usage:\n%s", help)
		}
	}

	srv, rdb := testRedis(t)
	ctx := t.Context()
	if _, err := queue.New(rdb, "maple").Partitions(ctx, 2); err != nil {
		t.Fatal(err)
	}
	sub := rdb.Subscribe(ctx, keys.New("maple").TriggerChannel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	r := "--redis=" + srv.URL()
	bin := []byte{0, 0xff, '\n', 7}
	b64 := base64.StdEncoding.EncodeToString(bin)
	out, err := runApp(t, "trigger", "write_to_users", r, "--uids", "42,43", "--cmd", "100", "--ret", "-3", "--body-b64", b64, "--id", "deploy-7")
	if err != nil || out != "write_to_users: published to 1 gateways\n" {
		t.Fatalf("write_to_users: %q, %v", out, err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, body, err := trigger.Parse([]byte(msg.Payload))
	if err != nil || m.ID != "deploy-7" || m.Cmd != 100 || m.Ret != -3 || !bytes.Equal(body, bin) || !slices.Equal(m.UIDs, []string{"42", "43"}) {
		t.Errorf("published %s: %+v, body %q, %v", msg.Payload, m, body, err)
	}
	out, err = runApp(t, "trigger", "close_users", r, "--uids", "42", "--id", "x")
	if err != nil {
		t.Fatalf("close_users: %q, %v", out, err)
	}
	if msg, err := sub.ReceiveMessage(ctx); err != nil || !strings.Contains(msg.Payload, `"id":"x"`) {
		t.Errorf("close_users published %v, %v; want its id", msg, err)
	}

	// write_to_worker with a binary body: the envelope carries it.
	if out, err := runApp(t, "trigger", "write_to_worker", r, "--cmd", "9", "--body-b64", b64); err != nil {
		t.Fatalf("write_to_worker --body-b64: %q, %v", out, err)
	}
	var got []byte
	for p := range 2 {
		msgs, _ := rdb.XRange(ctx, keys.New("maple").Inbound(p), "-", "+").Result()
		for _, x := range msgs {
			e, _ := queue.DecodeEnvelope([]byte(x.Values["e"].(string)))
			got = e.Frame[24:]
		}
	}
	if !bytes.Equal(got, bin) {
		t.Errorf("write_to_worker queued body %q, want %q", got, bin)
	}

	// Errors name the flag, once.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"broadcast", "--cmd", "0"}, "--cmd 0: frames need a non-zero cmd"},
		{[]string{"broadcast", "--cmd", "x"}, `--cmd "x": want a route number`},
		{[]string{"broadcast", "--cmd", "4294967297"}, "32-bit"},
		{[]string{"broadcast", "--cmd", "1", "--ret", "4294967297"}, "--ret 4294967297: out of range"},
		{[]string{"broadcast", "--cmd", "1", "--body", "a", "--body-b64", "YQ=="}, "--body and --body-b64: give one"},
		{[]string{"write_to_worker", "--cmd", "1", "--body-b64", "!!"}, "--body-b64: not standard base64"},
		{[]string{"broadcast"}, `Required flag "cmd" not set`},
	} {
		out, err := runApp(t, append(append([]string{"trigger"}, tt.args...), r)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("trigger %v: %v (output %q), want an error with %q", tt.args, err, out, tt.want)
		}
	}
}

// TestDeadUnreadable: `maple dead list` shows an entry no worker could
// read as unreadable, with why (it showed kind(0) and an empty body), and
// `maple dead requeue` refuses it with a clear error (it reported success
// and put it back, to be dead-lettered again); readable ones still go
// back, and a missing one is said once ("store: requeue ...: store: not
// found" before).
func TestDeadUnreadable(t *testing.T) {
	srv, rdb := testRedis(t)
	ctx := t.Context()
	st := queue.New(rdb, "maple")
	if _, err := st.Partitions(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureGroups(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Partition 0: an operator frame whose cmd is no number (unreadable)
	// and a readable client frame; a worker dead-letters both.
	in := st.Keys.Inbound(0)
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: in, Values: []any{"cmd", "nine", "body", "hi"}})
	env := queue.Envelope{Kind: queue.KindFrame, Seq: 3, Gateway: "g1", Conn: "g1-1", Addr: "127.0.0.1:9", UID: "alice",
		Frame: box.Append(nil, 50, 0, 5, []byte("ok"))}
	rdb.XAdd(ctx, &redis.XAddArgs{Stream: in, Values: []any{"e", queue.AppendEnvelope(nil, &env)}})
	ds, err := st.ReadInbound(ctx, "w1", []int{0}, 10, -1)
	if err != nil || len(ds) != 2 || ds[0].Env.Kind != 0 || ds[1].Env.Kind != queue.KindFrame {
		t.Fatalf("ReadInbound = %+v, %v", ds, err)
	}
	if err := st.DeadLetter(ctx, ds[0], "unreadable entry"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeadLetter(ctx, ds[1], "max deliveries"); err != nil {
		t.Fatal(err)
	}
	dls, _ := st.DeadLetters(ctx, 0, 10)
	if len(dls) != 2 {
		t.Fatalf("dead letters = %+v", dls)
	}
	bad, good := "0/"+dls[0].ID, "0/"+dls[1].ID
	r := "--redis=" + srv.URL()

	out, err := runApp(t, "dead", "list", r)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 ||
		!strings.HasPrefix(lines[0], bad+"  unreadable (bad envelope: version): 0 bytes from entry "+ds[0].ID) ||
		!strings.Contains(lines[0], `reason="unreadable entry"`) ||
		!strings.HasPrefix(lines[1], good+"  frame cmd=50 sn=5 conn=g1-1 uid=alice deliveries=1") || !strings.HasSuffix(lines[1], `body="ok"`) ||
		lines[2] != "2 dead letters, 1 unreadable (they cannot be re-queued)" {
		t.Errorf("dead list:\n%s", out)
	}
	if strings.Contains(out, "kind(0)") {
		t.Errorf("dead list shows kind(0):\n%s", out)
	}
	out, err = runApp(t, "dead", "list", r, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &first); err != nil ||
		first["id"] != bad || first["unreadable"] != "bad envelope: version" || first["kind"] != nil {
		t.Errorf("dead list --json: %v, %v\n%s", first, err, out)
	}

	// The unreadable one is refused, by name; nothing reaches the queue.
	inLen := func() int64 { n, _ := rdb.XLen(ctx, in).Result(); return n }
	before := inLen()
	out, err = runApp(t, "dead", "requeue", r, bad)
	if err == nil || !strings.Contains(err.Error(), "unreadable envelope (bad envelope: version)") ||
		!strings.Contains(err.Error(), bad) || strings.Count(err.Error(), "store:") > 1 || !errors.Is(err, queue.ErrUnreadable) {
		t.Errorf("requeue %s: %v (output %q), want it refused as unreadable", bad, err, out)
	}
	if out != "re-queued 0 of 1\n" || inLen() != before {
		t.Errorf("requeue of an unreadable one printed %q; queue %d entries, was %d", out, inLen(), before)
	}
	// --all: the readable one goes back, the unreadable one stays, and
	// the command fails naming it.
	out, err = runApp(t, "dead", "requeue", r, "--all")
	if err == nil || !strings.Contains(err.Error(), bad) || out != "re-queued 1 of 2\n" {
		t.Errorf("requeue --all: %q, %v; want 1 of 2 and an error naming %s", out, err, bad)
	}
	if inLen() != before+1 {
		t.Errorf("queue has %d entries after requeue --all, want %d", inLen(), before+1)
	}
	if dls, _ := st.DeadLetters(ctx, 0, 10); len(dls) != 1 || dls[0].Unreadable == "" {
		t.Errorf("dead letters after requeue --all = %+v, want the unreadable one", dls)
	}
	// A missing one: said once.
	out, err = runApp(t, "dead", "requeue", r, good)
	if err == nil || err.Error() != "store: requeue "+good+": no such dead letter" {
		t.Errorf("requeue of a missing one: %v (output %q)", err, out)
	}
	if _, err := runApp(t, "dead", "requeue", r, "2/1-1"); err == nil || !strings.Contains(err.Error(), "partition below 2") {
		t.Errorf("requeue of a partition past the farm's: %v", err)
	}
}
