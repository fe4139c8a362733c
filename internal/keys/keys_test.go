package keys

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/store/storetest"
)

// TestNames pins every key name: they are a wire format, read and written
// by gateways and workers of different releases during a rolling upgrade.
func TestNames(t *testing.T) {
	k := New("")
	tests := []struct{ got, want string }{
		{k.Inbound(3), "maple:{p3}:in"},
		{k.Queued("g1"), "maple:{gw:g1}:queued"},
		{k.Handled("g1"), "maple:{gw:g1}:handled"},
		{k.Tries(3, "1-2"), "maple:{p3}:tries:1-2"},
		{k.Owner(3), "maple:{p3}:owner"},
		{k.Dead(3), "maple:{p3}:dead"},
		{k.Timers(3), "maple:{p3}:timers"},
		{k.TimerData(3), "maple:{p3}:timerdata"},
		{k.Outbound("g1"), "maple:{gw:g1}:out"},
		{k.OutboundTransit("g1"), "maple:{gw:g1}:transit"},
		{k.OutboundBatch("g1"), "maple:{gw:g1}:batch"},
		{k.GatewayUsers("g1"), "maple:{gw:g1}:users"},
		{k.Gateways(), "maple:gateways"},
		{k.Workers(), "maple:workers"},
		{k.Live(), "maple:{live}"},
		{k.LiveMark("w1-abc"), "maple:{live}:w1-abc"},
		{k.PartitionCount(), "maple:partitions"},
		{k.Session("ann"), "maple:{u:ann}:session"},
		{k.UserGroups("ann"), "maple:{u:ann}:groups"},
		{k.User("ann"), "maple:{u:ann}:data"},
		{k.Group("lobby"), "maple:{g:lobby}:members"},
		{k.Counter("n"), "maple:{c:n}:counter"},
		{k.Cron(3, "daily"), "maple:{p3}:cron:daily"},
		{k.Stat("worker", "w1"), "maple:stat:worker:w1"},
		{k.StatPattern(), "maple:stat:*"},
		{k.TriggerOnce("ab"), "maple:trigger:once:ab"},
		{k.TriggerChannel(), "maple:trigger"},
		{k.Tagged("ttt", "m1", "board"), "maple:{ttt:m1}:board"},
		{New("t1").Tagged("u", "ann", "data"), "t1:{u:ann}:data"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("key %q, want %q", tt.got, tt.want)
		}
	}
	if got, want := fmt.Sprint(k.GatewayKeys("g1")), "[maple:{gw:g1}:users maple:{gw:g1}:out maple:{gw:g1}:transit maple:{gw:g1}:batch maple:{gw:g1}:queued maple:{gw:g1}:handled]"; got != want {
		t.Errorf("GatewayKeys = %s, want %s", got, want)
	}
}

// The slot functions of the Redis Cluster spec, shared with the cluster
// tests.
var (
	crc16   = storetest.CRC16
	keySlot = storetest.KeySlot
)

func TestKeySlot(t *testing.T) {
	if got := crc16([]byte("123456789")); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#04x, want 0x31c3", got)
	}
	tests := []struct {
		key  string
		want int
	}{
		// Values from CLUSTER KEYSLOT of a Redis 7 cluster.
		{"foo", 12182},
		{"bar", 5061},
		{"hello", 866},
		{"somekey", 11058},
		{"{user1000}.following", keySlot("user1000")},
		{"{user1000}.followers", keySlot("user1000")},
		{"foo{}{bar}", int(crc16([]byte("foo{}{bar}")) % 16384)}, // empty tag: whole key
		{"foo{{bar}}zap", keySlot("{bar")},
		{"foo{bar}{zap}", keySlot("bar")},
		{"{", int(crc16([]byte("{")) % 16384)},
		{"", 0},
	}
	for _, tt := range tests {
		if got := keySlot(tt.key); got != tt.want {
			t.Errorf("keySlot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}

// TestKeySlotMatchesServer checks keySlot against CLUSTER KEYSLOT of a
// cluster-enabled redis-server (a plain one refuses the command, and
// miniredis answers 163 for every key).
func TestKeySlotMatchesServer(t *testing.T) {
	srv := storetest.Start(t, storetest.Options{Args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	keys := []string{"foo", "bar", "a{b}c", "{}x", "foo{{bar}}zap", "x}{y"}
	for _, prefix := range []string{"", "t1_2", "a{b"} {
		k := New(prefix)
		for p := range 16 {
			keys = append(keys, k.Inbound(p))
		}
		keys = append(keys, k.Session("alice"), k.Outbound("gw-1"), k.Queued("gw-1"), k.Handled("gw-1"),
			k.Cron(2, "{daily}"), k.Counter("n"))
	}
	for _, key := range keys {
		got, err := rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
		}
		if int(got) != keySlot(key) {
			t.Errorf("keySlot(%q) = %d, server says %d", key, keySlot(key), got)
		}
	}
}

func TestKeysShareSlot(t *testing.T) {
	prefixes := []string{"", "maple", "t123_4", "game:eu", "a{b", "x}y"}
	type group struct {
		name string
		keys []string
	}
	var groups []group
	for _, prefix := range prefixes {
		k := New(prefix)
		for _, p := range []int{0, 1, 7, 15, 16, 255, 100000} {
			groups = append(groups, group{
				fmt.Sprintf("prefix %q partition %d", prefix, p),
				[]string{k.Inbound(p), k.Owner(p), k.Dead(p), k.Timers(p), k.TimerData(p),
					k.Tries(p, "1-0"), k.Cron(p, "daily"), k.Cron(p, "{other}"), k.Cron(p, "a}b")},
			})
		}
		for _, uid := range []string{"u1", "alice@example.com", "", "x:y", "with space"} {
			groups = append(groups, group{
				fmt.Sprintf("prefix %q user %q", prefix, uid),
				[]string{k.Session(uid), k.UserGroups(uid), k.User(uid)},
			})
		}
		for _, gw := range []string{"gw-1", "10.0.0.1:7000", ""} {
			groups = append(groups, group{
				fmt.Sprintf("prefix %q gateway %q", prefix, gw),
				[]string{k.Outbound(gw), k.GatewayUsers(gw), k.OutboundTransit(gw), k.OutboundBatch(gw),
					k.Queued(gw), k.Handled(gw)},
			})
		}
	}
	for _, g := range groups {
		// One slot, but each key its own: none may alias another.
		seen := map[string]bool{}
		for _, key := range g.keys {
			if seen[key] {
				t.Errorf("%s: key %s is named twice", g.name, key)
			}
			seen[key] = true
		}
		want := keySlot(g.keys[0])
		for _, key := range g.keys[1:] {
			if got := keySlot(key); got != want {
				t.Errorf("%s: %s is in slot %d, %s in slot %d", g.name, g.keys[0], want, key, got)
			}
		}
	}
}
