package gateway

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// stopAccepting makes this process stop accepting connections on port
// while its event loops go on serving the connections it has: for a
// rolling restart, where a new gateway bound the same port with
// SO_REUSEPORT and should get every new player.
//
// evio has no way to close its listener alone, so each of this process's
// listening sockets on port is replaced (dup2) by an idle listening socket
// on an ephemeral loopback port. The real socket closes and leaves the
// port's reuseport group; the idle one is not in evio's epoll set, and if
// evio still accepts on its fd from an event it had already collected, it
// gets EAGAIN, which it ignores. (A closed fd or a non-listening socket
// would make evio's accept fail and its loop stop.)
//
// All gateways of one process on the same port are affected together.
func stopAccepting(port int) (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("gateway: stop accepting: %w", err)
	}
	n := 0
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || v != 1 {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil || sockPort(sa) != port {
			continue
		}
		idle, err := idleListener()
		if err != nil {
			return n, err
		}
		err = syscall.Dup3(idle, fd, syscall.O_CLOEXEC)
		syscall.Close(idle)
		if err != nil {
			return n, fmt.Errorf("gateway: stop accepting: dup3: %w", err)
		}
		n++
	}
	return n, nil
}

func sockPort(sa syscall.Sockaddr) int {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return a.Port
	case *syscall.SockaddrInet6:
		return a.Port
	}
	return -1
}

// idleListener returns a non-blocking listening socket on 127.0.0.1 with a
// port nobody was told about.
func idleListener() (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("gateway: idle listener: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("gateway: idle listener: %w", err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("gateway: idle listener: %w", err)
	}
	return fd, nil
}
