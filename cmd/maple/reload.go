package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
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
// started with the same arguments.
func reloadOnHUP(ctx context.Context, log *slog.Logger) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			pid, err := startReplacement(ctx)
			if err != nil {
				log.Error("reload failed: still serving", "err", err)
				continue
			}
			log.Info("reload: replacement is ready, draining", "pid", pid)
			cancel()
			return
		}
	}()
	return ctx
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
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
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
