// Package storetest starts Redis servers for tests, as httptest starts HTTP
// servers: a real redis-server on a free port in a temp dir, stopped by pid
// when the test ends, or an in-process miniredis.
package storetest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Server is a redis-server process started for a test.
type Server struct {
	Addr string // host:port
	Dir  string // its working directory (AOF files live here)
	Port int
	// Certs are the certificates of a TLS server (Options.TLS), else nil.
	Certs *Certs

	clientAuth string
	args       []string
	cmd        *exec.Cmd
	tb         testing.TB
}

// URL returns the redis:// URL of the server (rediss:// for a TLS server).
func (s *Server) URL() string {
	if s.Certs != nil {
		return "rediss://" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// TLSConfig returns a client TLS configuration for a TLS server (trusting
// its CA, presenting the client certificate), or nil for a plaintext one.
func (s *Server) TLSConfig() *tls.Config {
	if s.Certs == nil {
		return nil
	}
	return s.Certs.ClientConfig()
}

// Options tune a Server.
type Options struct {
	// AOF turns on append-only persistence with fsync on every write.
	AOF bool
	// Args are extra redis-server arguments.
	Args []string
	// TLS starts a server that speaks only TLS: no plaintext port (--port
	// 0), --tls-port on the free port, tls-replication yes, the
	// certificates of Certs (NewCerts(tb) if nil). Its URL is rediss://.
	TLS   bool
	Certs *Certs
	// ClientAuth is the server's --tls-auth-clients: "optional" when empty
	// (a client certificate is checked if one is sent), "yes" (required)
	// or "no".
	ClientAuth string
}

// withTLS fills in the defaults of a TLS server's options.
func (o Options) withTLS(tb testing.TB) Options {
	if !o.TLS {
		o.Certs, o.ClientAuth = nil, ""
		return o
	}
	if o.Certs == nil {
		o.Certs = NewCerts(tb)
	}
	if o.ClientAuth == "" {
		o.ClientAuth = "optional"
	}
	return o
}

var prefixSeq atomic.Int64

// Prefix returns a key prefix unique to this test process and call, so
// tests can share a server.
func Prefix(tb testing.TB) string {
	return fmt.Sprintf("t%d_%d", os.Getpid(), prefixSeq.Add(1))
}

// binary finds redis-server, failing the test with advice if it is missing.
func binary(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	tb.Fatal("storetest: redis-server is not installed; integration tests need it " +
		"(Debian/Ubuntu: apt-get install redis-server; .ci/run installs it)")
	return ""
}

// Start runs a fresh redis-server on a free 127.0.0.1 port and stops it
// when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	opts = opts.withTLS(tb)
	s := &Server{Dir: tb.TempDir(), tb: tb, Certs: opts.Certs, clientAuth: opts.ClientAuth}
	s.args = []string{"--bind", "127.0.0.1", "--save", "", "--dir", s.Dir, "--daemonize", "no", "--logfile", "redis.log"}
	if opts.AOF {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	s.args = append(s.args, opts.Args...)
	for try := 0; ; try++ {
		s.Port = freePort(tb)
		err := s.start()
		if err == nil {
			break
		}
		if try == 4 {
			tb.Fatalf("storetest: redis-server did not start: %v", err)
		}
	}
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) start() error {
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	args := append([]string{"--port", strconv.Itoa(s.Port)}, s.args...)
	if s.Certs != nil {
		args = append(s.Certs.serverArgs(strconv.Itoa(s.Port), s.clientAuth), s.args...)
	}
	s.cmd = exec.Command(binary(s.tb), args...)
	s.cmd.Dir = s.Dir
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pingTLS(s.Addr, s.TLSConfig()) {
			return nil
		}
		if s.cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	s.kill()
	return fmt.Errorf("not answering on %s; log: %s", s.Addr, lastLines(string(log), 5))
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() { s.kill() }

func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port and directory (with
// AOF on, it reloads its data).
func (s *Server) Restart() {
	s.tb.Helper()
	var err error
	for try := 0; try < 50; try++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.tb.Fatalf("storetest: restart redis-server: %v", err)
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 s).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	s.cmd = nil
}

// Pid returns the server's process id (0 when stopped).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Mini starts an in-process miniredis whose TTLs follow the wall clock,
// closed when the test ends.
func Mini(tb testing.TB) *miniredis.Miniredis {
	tb.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		tb.Fatalf("storetest: miniredis: %v", err)
	}
	m.ClockTTL(true)
	tb.Cleanup(m.Close)
	return m
}

// FreePort returns a TCP port that was free a moment ago.
func FreePort(tb testing.TB) int { return freePort(tb) }

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("storetest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	return pingOn(c)
}

// pingOn sends PING on c, a fresh connection to a server, and closes it;
// true if the server answered PONG.
func pingOn(c net.Conn) bool {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Buffer is a bytes.Buffer safe for concurrent writers (a logger's, a
// command's output) and a test reading it meanwhile.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Len returns how many bytes were written so far.
func (s *Buffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}
