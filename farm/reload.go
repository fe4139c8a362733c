package farm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Zero-downtime reload (SIGHUP), as the original maple did it: the process
// starts a copy of itself from the binary now on disk, waits until the copy
// is pulling frames, then drains and exits. The copy inherits arguments,
// environment and standard streams. docs/operations.md has the deploy
// recipe.

// readyFDEnv names the file descriptor on which a reloaded process says it
// is ready.
const readyFDEnv = "MAPLE_READY_FD"

// exePath is the binary's path, resolved at start: after a deploy replaces
// the file, the same path names the new binary.
var exePath = func() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}()

// reloadOnHUP returns a context that is cancelled once a SIGHUP has
// started a replacement process that reports ready. The replacement is
// started with the same arguments. SIGHUP stays caught for the life of the
// process: one that comes while a reload runs, or after it (while this
// process drains), is ignored with a log line, never left to its default
// action, which would kill the process with its frames in hand.
func reloadOnHUP(ctx context.Context, log *slog.Logger) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		reloaded := false
		for {
			select {
			case <-ctx.Done():
				if !reloaded {
					// Stopping (SIGTERM): further HUPs are ignored too.
					reloaded = true
					log.Debug("stopping: SIGHUP is ignored from now on")
				}
			case <-hup:
			}
			if reloaded || ctx.Err() != nil {
				// Drain the signals of a stopping process, for as long as it
				// lives.
				for range hup {
					log.Warn("SIGHUP ignored: this process is draining after a reload or stop")
				}
				return
			}
			pid, err := startReplacement(ctx)
			// HUPs that came while the replacement started are answered by
			// this reload.
			for len(hup) > 0 {
				<-hup
				log.Warn("SIGHUP ignored: a reload was in progress")
			}
			if err != nil {
				log.Error("reload failed: still serving", "err", err)
				continue
			}
			log.Info("reload: replacement is ready, draining", "pid", pid)
			reloaded = true
			cancel()
		}
	}()
	return ctx
}

// Listeners handed to a replacement: the metrics port stays bound across a
// reload (the replacement could not bind it while the old process serves
// it). The replacement gets each as an inherited descriptor named in
// MAPLE_LISTEN_FDS ("metrics=4").
const listenFDsEnv = "MAPLE_LISTEN_FDS"

var handedOver struct {
	sync.Mutex
	files map[string]*os.File
}

// handOnReload registers ln to be passed to a replacement under name.
func handOnReload(name string, ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	f, err := tl.File() // a duplicate: closing ln later does not close it
	if err != nil {
		return
	}
	handedOver.Lock()
	defer handedOver.Unlock()
	if handedOver.files == nil {
		handedOver.files = make(map[string]*os.File)
	}
	handedOver.files[name] = f
}

// inheritedListener returns the listener a reloading parent handed over
// under name, or nil if there is none.
func inheritedListener(name string) net.Listener {
	for _, kv := range strings.Split(os.Getenv(listenFDsEnv), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k != name {
			continue
		}
		fd, err := strconv.Atoi(v)
		if err != nil {
			return nil
		}
		f := os.NewFile(uintptr(fd), name)
		if f == nil {
			return nil
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil
		}
		return ln
	}
	return nil
}

// listenOrInherit returns the listener handed over under name, or a new
// one on addr; either way it is handed on at the next reload.
func listenOrInherit(name, addr string) (net.Listener, error) {
	ln := inheritedListener(name)
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("%s: listen %s: %w", name, addr, err)
		}
	}
	handOnReload(name, ln)
	return ln, nil
}

func startReplacement(ctx context.Context) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(exePath, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, listenFDsEnv+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, readyFDEnv+"=3")
	handedOver.Lock()
	var fds []string
	for name, f := range handedOver.files {
		fds = append(fds, name+"="+strconv.Itoa(3+len(cmd.ExtraFiles)))
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	handedOver.Unlock()
	if len(fds) > 0 {
		env = append(env, listenFDsEnv+"="+strings.Join(fds, ","))
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("start %s: %w", exePath, err)
	}
	w.Close()
	go func() { _ = cmd.Wait() }() // reap it if it dies early; it outlives us otherwise
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := r.Read(buf)
		if n > 0 {
			ready <- nil
			return
		}
		ready <- fmt.Errorf("replacement exited before it was ready: %v", err)
	}()
	select {
	case err := <-ready:
		if err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return 0, errors.New("replacement not ready within 60s")
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return 0, ctx.Err()
	}
}

// signalReady tells a reloading parent that this process serves now.
func signalReady() {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if f == nil {
		return
	}
	_, _ = f.Write([]byte("ready\n"))
	f.Close()
}
