package storetest

import (
	"context"
	"crypto/tls"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of redis-server processes started for a test:
// masters with replicas, every node on 127.0.0.1, all stopped by pid when
// the test ends. Nodes run with --cluster-node-timeout 1000, so a killed
// master's replica takes over within about two seconds.
type Cluster struct {
	// Addrs are the seed addresses of every node (masters and replicas,
	// dead ones included), in start order.
	Addrs []string
	// Certs are the nodes' certificates when the cluster speaks TLS
	// (StartClusterOptions with Options.TLS), else nil.
	Certs *Certs

	tb    testing.TB
	mu    sync.Mutex
	nodes map[string]*Server // by address
}

// clusterNodeTimeout is each node's --cluster-node-timeout.
const clusterNodeTimeout = 1000 * time.Millisecond

// StartCluster starts masters*(1+replicasPerMaster) cluster-enabled
// redis-servers, joins them with redis-cli --cluster create, and returns
// once every node says cluster_state:ok and every replica is in sync. Each
// node uses a port p whose cluster bus port p+10000 was free too; both lie
// below the kernel's ephemeral range, so they do not collide with the
// ports of outgoing connections or of listeners on port 0.
func StartCluster(tb testing.TB, masters, replicasPerMaster int) *Cluster {
	tb.Helper()
	return StartClusterOptions(tb, masters, replicasPerMaster, Options{})
}

// StartClusterOptions is StartCluster with options for every node. With
// opts.TLS the nodes speak only TLS, to clients and to each other
// (tls-cluster yes: the cluster bus and CLUSTER SLOTS use the TLS ports;
// tls-replication yes), all with the same certificates.
func StartClusterOptions(tb testing.TB, masters, replicasPerMaster int, opts Options) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("storetest: a Redis Cluster needs at least 3 masters, not %d", masters)
	}
	opts = opts.withTLS(tb)
	if opts.TLS {
		opts.Args = append(append([]string{}, opts.Args...), "--tls-cluster", "yes")
	}
	cli := cliBinary(tb)
	c := &Cluster{tb: tb, nodes: map[string]*Server{}, Certs: opts.Certs}
	n := masters * (1 + replicasPerMaster)
	for i := 0; i < n; i++ {
		s := startClusterNode(tb, opts)
		c.nodes[s.Addr] = s
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	if c.Certs != nil {
		args = append(c.Certs.cliArgs(), args...)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("storetest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		tb.Fatalf("storetest: cluster not ready: %v", err)
	}
	return c
}

// startClusterNode runs one cluster-enabled redis-server.
func startClusterNode(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s := &Server{Dir: tb.TempDir(), tb: tb, Certs: opts.Certs, clientAuth: opts.ClientAuth}
	s.args = []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.Dir, "--daemonize", "no", "--logfile", "redis.log",
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout.Milliseconds())),
		// Replicas sync at once instead of waiting 5 s for more replicas.
		"--repl-diskless-sync-delay", "0"}
	if opts.AOF {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	}
	s.args = append(s.args, opts.Args...)
	var err error
	for try := 0; try < 10; try++ {
		s.Port = clusterPort(tb)
		if err = s.start(); err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("storetest: cluster node did not start: %v", err)
	return nil
}

// clusterPort returns a port p such that p and p+10000 (the cluster bus)
// were both free a moment ago, both below 32768.
func clusterPort(tb testing.TB) int {
	tb.Helper()
	for try := 0; try < 200; try++ {
		p := 12000 + mrand.IntN(10000)
		if portFree(p) && portFree(p+10000) {
			return p
		}
	}
	tb.Fatal("storetest: no free port pair (p, p+10000) found")
	return 0
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func cliBinary(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("redis-cli"); err == nil {
		return p
	}
	tb.Fatal("storetest: redis-cli is not installed (Debian/Ubuntu: apt-get install redis-tools)")
	return ""
}

// URL returns the farm's --redis setting for the cluster:
// redis-cluster://host:port,host:port,... (rediss-cluster:// with TLS).
func (c *Cluster) URL() string {
	if c.Certs != nil {
		return "rediss-cluster://" + strings.Join(c.Addrs, ",")
	}
	return "redis-cluster://" + strings.Join(c.Addrs, ",")
}

// tlsConfig is the harness's client TLS configuration (nil: plaintext).
func (c *Cluster) tlsConfig() *tls.Config {
	if c.Certs == nil {
		return nil
	}
	return c.Certs.ClientConfig()
}

// Node returns the process listening on addr.
func (c *Cluster) Node(addr string) *Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[addr]
}

// live returns the addresses of the nodes still running.
func (c *Cluster) live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, a := range c.Addrs {
		if c.nodes[a].Pid() != 0 {
			out = append(out, a)
		}
	}
	return out
}

// Client returns a client of the single node at addr, closed when the test
// ends (for DBSIZE, SCAN, INFO on that node).
func (c *Cluster) Client(addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, TLSConfig: c.tlsConfig()})
	c.tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// Shard is a slot range and the node serving it, as a live node sees it.
type Shard struct {
	Start, End int // slots, inclusive
	Master     string
	Replicas   []string
}

// Shards returns the slot ranges and their masters, ordered by slot, as
// the first live node that answers sees them.
func (c *Cluster) Shards() ([]Shard, error) {
	var last error
	for _, a := range c.live() {
		sh, err := shardsFrom(a, c.tlsConfig())
		if err == nil {
			return sh, nil
		}
		last = err
	}
	return nil, fmt.Errorf("no live node answers CLUSTER SLOTS: %v", last)
}

func shardsFrom(addr string, tc *tls.Config) ([]Shard, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: tc})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []Shard
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		sh := Shard{Start: s.Start, End: s.End, Master: s.Nodes[0].Addr}
		for _, n := range s.Nodes[1:] {
			sh.Replicas = append(sh.Replicas, n.Addr)
		}
		out = append(out, sh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out, nil
}

// MasterAddrs returns the address of each master, ordered by the lowest
// slot it serves: after a failover the promoted replica takes its old
// master's place in the list.
func (c *Cluster) MasterAddrs() []string {
	c.tb.Helper()
	sh, err := c.Shards()
	if err != nil {
		c.tb.Fatalf("storetest: %v", err)
	}
	var out []string
	for _, s := range sh {
		if !slices.Contains(out, s.Master) {
			out = append(out, s.Master)
		}
	}
	return out
}

// MasterOf returns the address of the master serving key's slot.
func (c *Cluster) MasterOf(key string) string {
	c.tb.Helper()
	slot := KeySlot(key)
	sh, err := c.Shards()
	if err != nil {
		c.tb.Fatalf("storetest: %v", err)
	}
	for _, s := range sh {
		if slot >= s.Start && slot <= s.End {
			return s.Master
		}
	}
	c.tb.Fatalf("storetest: no master serves slot %d", slot)
	return ""
}

// KillMaster kills (SIGKILL, as a crash would) the i-th master of
// MasterAddrs and returns its address. Its replica, if any, takes over
// after the node timeout; WaitHealthy waits for that.
func (c *Cluster) KillMaster(i int) string {
	c.tb.Helper()
	m := c.MasterAddrs()
	if i < 0 || i >= len(m) {
		c.tb.Fatalf("storetest: KillMaster(%d) of %d masters", i, len(m))
	}
	c.Node(m[i]).Kill()
	return m[i]
}

// WaitHealthy waits until every live node says cluster_state:ok, every
// slot is served by a live master, every live node agrees on who serves
// what, and every live replica's link to its master is up.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var why string
	for {
		why = c.unhealthy()
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) unhealthy() string {
	live := c.live()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var first []Shard
	for i, a := range live {
		rdb := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: c.tlsConfig()})
		info, err := rdb.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = fmt.Errorf("cluster_state not ok")
		}
		var repl string
		if err == nil {
			repl, err = rdb.Info(ctx, "replication").Result()
		}
		rdb.Close()
		if err != nil {
			return fmt.Sprintf("node %s: %v", a, err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Sprintf("replica %s: link to master down", a)
		}
		sh, err := shardsFrom(a, c.tlsConfig())
		if err != nil {
			return fmt.Sprintf("node %s: cluster slots: %v", a, err)
		}
		covered := 0
		for _, s := range sh {
			if !slices.Contains(live, s.Master) {
				return fmt.Sprintf("node %s: slots %d-%d still on dead master %s", a, s.Start, s.End, s.Master)
			}
			covered += s.End - s.Start + 1
		}
		if covered != 16384 {
			return fmt.Sprintf("node %s: %d of 16384 slots covered", a, covered)
		}
		if i == 0 {
			first = sh
		} else if !slices.EqualFunc(first, sh, func(x, y Shard) bool {
			return x.Start == y.Start && x.End == y.End && x.Master == y.Master
		}) {
			return fmt.Sprintf("nodes %s and %s disagree on the slot map", live[0], a)
		}
	}
	return ""
}

// Logs returns the last lines of every node's log, for a failing test.
func (c *Cluster) Logs(n int) string {
	var b strings.Builder
	for _, a := range c.Addrs {
		log, _ := os.ReadFile(filepath.Join(c.Node(a).Dir, "redis.log"))
		fmt.Fprintf(&b, "--- %s\n%s\n", a, lastLines(string(log), n))
	}
	return b.String()
}

// KeySlot is the Redis Cluster hash slot of key (CRC16 of the key, or of
// its {hash tag} when it has a non-empty one, mod 16384).
func KeySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(CRC16([]byte(key)) % 16384)
}

// CRC16 is CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum
// of the Redis Cluster spec.
func CRC16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
