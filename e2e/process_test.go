package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries built once per test run by TestMain.
var (
	mapleBin      string
	testWorkerBin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "maple-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	touchSources()
	mapleBin = filepath.Join(dir, "maple")
	testWorkerBin = filepath.Join(dir, "testworker")
	for bin, pkg := range map[string]string{mapleBin: "../cmd/maple", testWorkerBin: "./testworker"} {
		// No -race here: these processes carry load; the in-process tests
		// run the same code under the race detector.
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a process started by a test, stopped by pid when the test ends.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// startProc runs bin with args and extra environment; its output goes to a
// log file that is printed if the test fails.
func startProc(t *testing.T, env []string, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), filepath.Base(bin)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, log: logf.Name(), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("--- log of %s (pid %d):\n%s", filepath.Base(bin), cmd.Process.Pid, tail(b, 3000))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) { _ = syscall.Kill(p.pid(), sig) }

// wait waits up to d for the process to exit and returns its exit error.
func (p *proc) wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func execCommand(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// touchSources reads every source file of the module, so that go test's
// result cache, which records the files a test opens, reruns these tests
// when the binaries they build from ../cmd/maple would change.
func touchSources() {
	_ = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "bench-out") {
			return filepath.SkipDir
		}
		switch filepath.Ext(path) {
		case ".go", ".lua", ".js", ".html", ".css", ".mod", ".sum":
			_, _ = os.ReadFile(path)
		}
		return nil
	})
}
