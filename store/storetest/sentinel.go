package storetest

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name a Sentinel setup monitors.
const SentinelMaster = "mymaster"

// Sentinel is a master, its replicas and three Sentinels watching them
// (quorum 2, down-after-milliseconds 1000), all redis-server processes on
// 127.0.0.1 started for a test and stopped by pid when it ends. Sentinels
// run as `redis-server <conf> --sentinel`, the same binary as the servers
// (Debian's redis-sentinel package only adds a service for it).
type Sentinel struct {
	// Servers are the data nodes: Servers[0] started as the master.
	Servers []*Server
	// Addrs are the sentinels' addresses.
	Addrs []string
	// Certs are the certificates of every server and Sentinel when they
	// speak TLS (StartSentinelOptions with Options.TLS), else nil.
	Certs *Certs

	tb         testing.TB
	clientAuth string
	sentinels  []*sentinelProc
}

type sentinelProc struct {
	addr string
	dir  string
	cmd  *exec.Cmd
}

// StartSentinel starts a master with replicas replicas and three
// Sentinels, and returns once the replicas are in sync and every Sentinel
// knows the master, its replicas and the other Sentinels.
func StartSentinel(tb testing.TB, replicas int) *Sentinel {
	tb.Helper()
	return StartSentinelOptions(tb, replicas, Options{})
}

// StartSentinelOptions is StartSentinel with options for the data nodes.
// With opts.TLS the servers and the Sentinels all speak only TLS, with the
// same certificates: clients, replicas (tls-replication yes) and the
// Sentinels (tls-replication yes in their config: toward the servers and
// each other) connect over TLS.
func StartSentinelOptions(tb testing.TB, replicas int, opts Options) *Sentinel {
	tb.Helper()
	opts = opts.withTLS(tb)
	st := &Sentinel{tb: tb, Certs: opts.Certs, clientAuth: opts.ClientAuth}
	args := append([]string{"--repl-diskless-sync-delay", "0"}, opts.Args...)
	o := opts
	o.Args = args
	master := Start(tb, o)
	st.Servers = append(st.Servers, master)
	for i := 0; i < replicas; i++ {
		o.Args = append(append([]string{}, args...), "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
		r := Start(tb, o)
		st.Servers = append(st.Servers, r)
	}
	for i := 0; i < 3; i++ {
		st.sentinels = append(st.sentinels, st.startSentinel(master.Port))
		st.Addrs = append(st.Addrs, st.sentinels[i].addr)
	}
	tb.Cleanup(st.stopSentinels)
	if err := st.WaitHealthy(30*time.Second, master.Addr); err != nil {
		tb.Fatalf("storetest: sentinel setup not ready: %v", err)
	}
	return st
}

func (st *Sentinel) startSentinel(masterPort int) *sentinelProc {
	tb := st.tb
	tb.Helper()
	dir := tb.TempDir()
	var lastErr error
	for try := 0; try < 5; try++ {
		port := freePort(tb)
		listen := []string{"port " + strconv.Itoa(port)}
		if st.Certs != nil {
			listen = st.Certs.confLines(strconv.Itoa(port), st.clientAuth)
		}
		conf := strings.Join(append(listen,
			"bind 127.0.0.1",
			"daemonize no",
			"logfile sentinel.log",
			"dir "+dir,
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", SentinelMaster, masterPort),
			"sentinel down-after-milliseconds "+SentinelMaster+" 1000",
			"sentinel failover-timeout "+SentinelMaster+" 5000",
			"sentinel parallel-syncs "+SentinelMaster+" 1",
		), "\n") + "\n"
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(binary(tb), path, "--sentinel")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			tb.Fatalf("storetest: start sentinel: %v", err)
		}
		p := &sentinelProc{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, cmd: cmd}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if pingTLS(p.addr, st.tlsConfig()) {
				return p
			}
		}
		log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
		lastErr = fmt.Errorf("not answering on %s; log: %s", p.addr, lastLines(string(log), 5))
		p.stop()
	}
	tb.Fatalf("storetest: sentinel did not start: %v", lastErr)
	return nil
}

func (p *sentinelProc) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	p.cmd = nil
}

func (st *Sentinel) stopSentinels() {
	for _, p := range st.sentinels {
		p.stop()
	}
}

// URL returns the farm's --redis setting:
// redis-sentinel://host:port,host:port,host:port/mymaster
// (rediss-sentinel:// with TLS).
func (st *Sentinel) URL() string {
	scheme := "redis-sentinel://"
	if st.Certs != nil {
		scheme = "rediss-sentinel://"
	}
	return scheme + strings.Join(st.Addrs, ",") + "/" + SentinelMaster
}

// tlsConfig is the harness's client TLS configuration (nil: plaintext).
func (st *Sentinel) tlsConfig() *tls.Config {
	if st.Certs == nil {
		return nil
	}
	return st.Certs.ClientConfig()
}

// MasterAddr returns the master's address as the first answering Sentinel
// reports it.
func (st *Sentinel) MasterAddr() string {
	st.tb.Helper()
	for _, a := range st.Addrs {
		if m, err := sentinelMaster(a, st.tlsConfig()); err == nil {
			return m
		}
	}
	st.tb.Fatal("storetest: no sentinel answers")
	return ""
}

func sentinelMaster(addr string, tc *tls.Config) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: tc})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("master address %v", hp)
	}
	return hp[0] + ":" + hp[1], nil
}

// Server returns the data node listening on addr.
func (st *Sentinel) Server(addr string) *Server {
	for _, s := range st.Servers {
		if s.Addr == addr {
			return s
		}
	}
	st.tb.Fatalf("storetest: no server on %s", addr)
	return nil
}

// KillMaster kills (SIGKILL) the current master and returns its address.
func (st *Sentinel) KillMaster() string {
	st.tb.Helper()
	m := st.MasterAddr()
	st.Server(m).Kill()
	return m
}

// WaitHealthy waits until every Sentinel names want as the master (and
// knows the other Sentinels), want says role:master, and every other live
// server replicates from it with its link up.
func (st *Sentinel) WaitHealthy(timeout time.Duration, want string) error {
	deadline := time.Now().Add(timeout)
	for {
		why := st.unhealthy(want)
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitFailover waits until the Sentinels promoted a server other than
// old and the setup is healthy again; it returns the new master.
func (st *Sentinel) WaitFailover(timeout time.Duration, old string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		m, err := sentinelMaster(st.Addrs[0], st.tlsConfig())
		if err == nil && m != old {
			if err := st.WaitHealthy(time.Until(deadline), m); err != nil {
				return "", err
			}
			return m, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no failover from %s within %v (sentinel says %q, %v)", old, timeout, m, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (st *Sentinel) unhealthy(want string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, a := range st.Addrs {
		m, err := sentinelMaster(a, st.tlsConfig())
		if err != nil {
			return fmt.Sprintf("sentinel %s: %v", a, err)
		}
		if m != want {
			return fmt.Sprintf("sentinel %s names master %s, want %s", a, m, want)
		}
		sc := redis.NewSentinelClient(&redis.Options{Addr: a, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: st.tlsConfig()})
		others, err := sc.Sentinels(ctx, SentinelMaster).Result()
		sc.Close()
		if err != nil || len(others) < len(st.Addrs)-1 {
			return fmt.Sprintf("sentinel %s knows %d other sentinels (%v)", a, len(others), err)
		}
	}
	for _, s := range st.Servers {
		if s.Pid() == 0 {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: st.tlsConfig()})
		repl, err := rdb.Info(ctx, "replication").Result()
		rdb.Close()
		if err != nil {
			return fmt.Sprintf("server %s: %v", s.Addr, err)
		}
		if s.Addr == want {
			if !strings.Contains(repl, "role:master") {
				return fmt.Sprintf("server %s is not yet master", s.Addr)
			}
			continue
		}
		if !strings.Contains(repl, "role:slave") || !strings.Contains(repl, "master_port:"+want[strings.LastIndexByte(want, ':')+1:]) ||
			!strings.Contains(repl, "master_link_status:up") {
			return fmt.Sprintf("server %s does not replicate from %s yet", s.Addr, want)
		}
	}
	return ""
}
