package abuse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/maple-farm/maple/client"
)

// Proc is a process the suite started. It is stopped by its pid, never by
// name, and dies with the process that started it (Pdeathsig), so an
// interrupted run leaves nothing behind.
type Proc struct {
	Name string // "redis", "gateway", "worker"
	Log  string // file holding its stdout and stderr

	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	mu   sync.Mutex
	err  error // its exit status, once done
}

// StartProc runs bin with args in dir, its output going to dir/<name>.log.
func StartProc(name, dir, bin string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the runner,
	// which stops everything in order, not the farm behind its back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Alive reports whether the process has not exited.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitErr is how the process ended (nil while it runs or if it exited 0).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill sends SIGKILL to the pid and waits for the exit.
func (p *Proc) Kill() {
	if p == nil || !p.Alive() {
		return
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM to the pid, and SIGKILL if it has not exited after
// grace.
func (p *Proc) Stop(grace time.Duration) {
	if p == nil || !p.Alive() {
		return
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// LogSize is the size of the process's log file in bytes.
func (p *Proc) LogSize() int64 {
	st, err := os.Stat(p.Log)
	if err != nil {
		return 0
	}
	return st.Size()
}

// LogTail returns about the last n bytes of the log.
func (p *Proc) LogTail(n int) string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// RSS returns the resident set size of pid in bytes, from VmRSS in
// /proc/<pid>/status.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// RSSSampler samples a process's RSS periodically and keeps the peak.
type RSSSampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak int64
}

// SampleRSS starts sampling pid every interval (10 ms at least).
func SampleRSS(pid int, every time.Duration) *RSSSampler {
	s := &RSSSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(max(every, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *RSSSampler) sample() {
	if v, err := RSS(s.pid); err == nil {
		s.mu.Lock()
		s.peak = max(s.peak, v)
		s.mu.Unlock()
	}
}

// Stop ends the sampling (after one last sample) and returns the peak.
func (s *RSSSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Redis is a redis-server started for one farm: a port from the kernel,
// its own directory, no persistence.
type Redis struct {
	*Proc
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0
	rdb  *redis.Client
}

// StartRedis starts bin (redis-server) with its data and log in dir.
func StartRedis(ctx context.Context, bin, dir string) (*Redis, error) {
	if bin == "" {
		bin = "redis-server"
	}
	var last error
	for try := 0; try < 5; try++ {
		port, err := kernelPort()
		if err != nil {
			return nil, err
		}
		p, err := StartProc("redis", dir, bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no")
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		up := func() bool { return rdb.Ping(ctx).Err() == nil }
		if err = waitUntil(ctx, 10*time.Second, p, up); err == nil {
			return &Redis{Proc: p, Addr: addr, URL: "redis://" + addr + "/0", rdb: rdb}, nil
		}
		rdb.Close()
		p.Kill()
		last = fmt.Errorf("redis-server on port %d: %w; log: %s", port, err, p.LogTail(400))
	}
	return nil, last
}

// Stop closes the suite's client and stops the server by pid.
func (r *Redis) Stop() {
	if r == nil {
		return
	}
	r.rdb.Close()
	r.Proc.Stop(5 * time.Second)
}

// Client is a client of the server, for INFO and PUBLISH; do not close it.
func (r *Redis) Client() *redis.Client { return r.rdb }

// InputBytes is INFO stats total_net_input_bytes: every byte clients have
// sent the server since it started.
func (r *Redis) InputBytes(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := r.rdb.Info(ctx, "stats").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_net_input_bytes:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("INFO stats has no total_net_input_bytes")
}

// Flag is a command-line flag passed to a maple process as --Name Value.
type Flag struct{ Name, Value string }

func (f Flag) String() string { return "--" + f.Name + " " + f.Value }

// FarmOptions describe a farm: one redis-server, one `maple gateway`, one
// `maple worker`.
type FarmOptions struct {
	Maple       string // path of the maple binary
	RedisServer string // redis-server binary; "" means redis-server on the PATH
	Dir         string // where logs and Redis's files go; must exist
	// Gateway and Worker are flags beyond --redis and --listen (which the
	// farm sets). A flag the binary does not know is left out and listed
	// in Farm.Missing, so the suite runs against builds that predate it.
	Gateway []Flag
	Worker  []Flag
}

// Farm is a running farm. Stop it by calling Stop, which stops every
// process by pid.
type Farm struct {
	Redis   *Redis
	Gateway *Proc
	Worker  *Proc
	Addr    string   // the gateway's TCP address, 127.0.0.1:port
	Missing []string // flags left out because the binary does not know them ("gateway --max-inflight")
	Args    []string // each maple process's command line, for the record
}

// StartFarm starts Redis, the gateway and the worker, and returns once an
// echo (cmd 1) went through all three. On an error everything started is
// stopped again.
func StartFarm(ctx context.Context, o FarmOptions) (f *Farm, err error) {
	f = &Farm{}
	defer func() {
		if err != nil {
			f.Stop()
			f = nil
		}
	}()
	gwKnown, err := knownFlags(o.Maple, "gateway")
	if err != nil {
		return f, err
	}
	wkKnown, err := knownFlags(o.Maple, "worker")
	if err != nil {
		return f, err
	}
	if f.Redis, err = StartRedis(ctx, o.RedisServer, o.Dir); err != nil {
		return f, err
	}
	pick := func(kind string, known map[string]bool, fs []Flag) []string {
		var args []string
		for _, fl := range fs {
			if !known[fl.Name] {
				f.Missing = append(f.Missing, kind+" --"+fl.Name)
				continue
			}
			args = append(args, "--"+fl.Name, fl.Value)
		}
		return args
	}
	gwExtra := pick("gateway", gwKnown, o.Gateway)
	wkExtra := pick("worker", wkKnown, o.Worker)

	for try := 0; ; try++ {
		port, err := kernelPort()
		if err != nil {
			return f, err
		}
		f.Addr = "127.0.0.1:" + strconv.Itoa(port)
		args := append([]string{"gateway", "--redis", f.Redis.URL, "--listen", f.Addr}, gwExtra...)
		if f.Gateway, err = StartProc("gateway", o.Dir, o.Maple, args...); err != nil {
			return f, err
		}
		f.Args = append(f.Args, "maple "+strings.Join(args, " "))
		// Listening, or exited (the port was taken meanwhile: try another).
		err = waitUntil(ctx, 10*time.Second, f.Gateway, func() bool {
			c, err := net.DialTimeout("tcp", f.Addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		if err == nil {
			break
		}
		f.Gateway.Kill()
		if try == 2 || ctx.Err() != nil {
			return f, fmt.Errorf("gateway did not listen: %w; log: %s", err, f.Gateway.LogTail(800))
		}
	}
	args := append([]string{"worker", "--redis", f.Redis.URL}, wkExtra...)
	if f.Worker, err = StartProc("worker", o.Dir, o.Maple, args...); err != nil {
		return f, err
	}
	f.Args = append(f.Args, "maple "+strings.Join(args, " "))
	if err := f.waitEcho(ctx, 30*time.Second); err != nil {
		return f, err
	}
	return f, nil
}

// waitEcho waits until an echo through the farm is answered.
func (f *Farm) waitEcho(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := Answers(ctx, f.Addr, time.Second); err == nil {
			return nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("farm did not answer an echo within %v: %v\ngateway log: %s\nworker log: %s",
				d, err, f.Gateway.LogTail(800), f.Worker.LogTail(800))
		}
		for _, p := range []*Proc{f.Gateway, f.Worker} {
			if !p.Alive() {
				return fmt.Errorf("%s exited (%v); log: %s", p.Name, p.ExitErr(), p.LogTail(800))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop kills the gateway and the worker by pid (the farm is thrown away,
// nothing needs draining), then stops Redis. It may be called more than
// once.
func (f *Farm) Stop() {
	if f == nil {
		return
	}
	f.Gateway.Kill()
	f.Worker.Kill()
	f.Redis.Stop()
}

// Answers sends one echo on a new connection and returns how long the reply
// took; an error if it did not come within d or was not right.
func Answers(ctx context.Context, addr string, d time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	r, err := c.Request(ctx, 1, []byte("still there?"))
	switch {
	case err != nil:
		return time.Since(start), err
	case r.Ret != 0:
		return time.Since(start), fmt.Errorf("ret %d", r.Ret)
	case string(r.Body) != "still there?":
		return time.Since(start), fmt.Errorf("wrong body %q", r.Body)
	}
	return time.Since(start), nil
}

// knownFlags lists the flags `maple <command> --help` documents.
func knownFlags(maple, command string) (map[string]bool, error) {
	flagsMu.Lock()
	defer flagsMu.Unlock()
	key := maple + "\x00" + command
	if m, ok := flagsCache[key]; ok {
		return m, nil
	}
	out, err := exec.Command(maple, command, "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s %s --help: %v\n%s", maple, command, err, out)
	}
	m := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		for _, name := range flagName.FindAllStringSubmatch(sc.Text(), -1) {
			m[name[1]] = true
		}
	}
	flagsCache[key] = m
	return m, nil
}

var (
	flagsMu    sync.Mutex
	flagsCache = map[string]map[string]bool{}
	flagName   = regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
)

// kernelPort asks the kernel for a free TCP port on 127.0.0.1.
func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitUntil polls ok until it is true, d passes, ctx ends or p exits.
func waitUntil(ctx context.Context, d time.Duration, p *Proc, ok func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("%s exited: %v", p.Name, p.ExitErr())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", p.Name, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
