"""An in-test gateway that does, on command, what a stopping maple gateway
does (docs/operations.md, "What a client sees during a gateway roll"): push
the move (cmd -1, sn 0), answer -10003, close. It answers cmd 1 (echo) at
once, its body prefixed with its name, and hands every other frame to the
test."""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import List

from maple import CMD_MOVE, Box, Parser

ECHO = 1
HOLD = 50  # frames the test answers itself


class FakeConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.wlock = threading.Lock()
        self.eof = threading.Event()  # the client closed it (or it broke)

    def write(self, cmd: int, ret: int, sn: int, body: bytes = b"") -> None:
        with self.wlock:
            try:
                self.sock.sendall(Box(cmd, body, ret=ret, sn=sn).pack())
            except OSError:
                pass

    def move(self) -> None:
        """Sends the move push."""
        self.write(CMD_MOVE, 0, 0)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Frame:
    def __init__(self, conn: FakeConn, box: Box) -> None:
        self.conn = conn
        self.box = box

    def answer(self, body, ret: int = 0) -> None:
        self.conn.write(self.box.cmd, ret, self.box.sn, body.encode() if isinstance(body, str) else body)


class FakeGateway:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ln = socket.socket()
        self.ln.bind(("127.0.0.1", 0))
        self.ln.listen(16)
        self.addr = "127.0.0.1:%d" % self.ln.getsockname()[1]
        self.conns: List[FakeConn] = []
        self.frames: "queue.Queue[Frame]" = queue.Queue()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.ln.accept()
            except OSError:
                return
            c = FakeConn(sock)
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: FakeConn) -> None:
        p = Parser()
        try:
            while True:
                data = c.sock.recv(65536)
                if not data:
                    return
                for b in p.feed(data):
                    if b.cmd == ECHO:
                        c.write(b.cmd, 0, b.sn, self.name.encode() + b":" + b.body)
                    else:
                        self.frames.put(Frame(c, b))
        except OSError:
            return
        finally:
            c.eof.set()

    def frame(self, timeout: float = 5.0) -> Frame:
        """The next frame the test is to answer."""
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no frame within %gs" % (self.name, timeout)) from None

    def conn(self, i: int, timeout: float = 5.0) -> FakeConn:
        """The i-th connection accepted."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.conns) > i:
                    return self.conns[i]
            if time.monotonic() > deadline:
                raise AssertionError("%s: connection %d not accepted" % (self.name, i))
            time.sleep(0.005)

    def accepted(self) -> int:
        with self.lock:
            return len(self.conns)

    def stop(self) -> None:
        self.ln.close()
        with self.lock:
            for c in self.conns:
                c.close()
