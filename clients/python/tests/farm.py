"""What the client tests start for themselves: the maple binary, built once
per test run, a dev farm (embedded Redis, a gateway, the demo worker) and
gateway processes, each on free ports and stopped by its pid.

Set MAPLE_BIN to use a maple binary already built; otherwise `go build`
runs once (the tests are skipped when there is no `go`).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[3]

#: The secret the test farms check login tokens with (--login-secret).
SECRET = "python-client-tests"

_tmp: Optional[str] = None
_bin: Optional[str] = None


def tmpdir() -> str:
    """A directory for this test run's binary and logs, removed at exit."""
    global _tmp
    if _tmp is None:
        _tmp = tempfile.mkdtemp(prefix="maple-py-")
        atexit.register(shutil.rmtree, _tmp, True)
    return _tmp


def binary() -> str:
    """The maple binary: $MAPLE_BIN, or ./cmd/maple built once into tmpdir()."""
    global _bin
    if _bin is None:
        env = os.environ.get("MAPLE_BIN")
        if env:
            _bin = env
        else:
            go = shutil.which("go")
            if go is None:
                raise unittest.SkipTest("no go on the PATH to build ./cmd/maple (or set MAPLE_BIN)")
            out = os.path.join(tmpdir(), "maple")
            subprocess.run([go, "build", "-o", out, "./cmd/maple"], cwd=str(REPO), check=True)
            _bin = out
    return _bin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login_token(uid: str, ttl: int = 3600, secret: str = SECRET) -> str:
    """A login token as worker.SignLogin makes it (worker/login.go):
    "v1.<expiry>.<base64url HMAC-SHA256(secret, "maple-login-v1\\n" + uid + "\\n" + expiry)>.<uid>".
    An account service signs these; the tests play one."""
    exp = str(int(time.time()) + ttl)
    mac = hmac.new(secret.encode(), ("maple-login-v1\n%s\n%s" % (uid, exp)).encode(), hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    return "v1.%s.%s.%s" % (exp, sig, uid)


class Proc:
    """A maple process with its output in files."""

    def __init__(self, name: str, args: List[str]) -> None:
        self.name = name
        self.out = os.path.join(tmpdir(), "%s-%d.out" % (name, time.monotonic_ns()))
        self.err = self.out[:-4] + ".err"
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.p = subprocess.Popen([binary()] + args, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        self.pid = self.p.pid

    def wait_output(self, pattern: str, timeout: float = 20.0, stderr: bool = False) -> "re.Match[str]":
        """Waits for a line matching pattern in the process's stdout (or stderr)."""
        path = self.err if stderr else self.out
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with open(path, encoding="utf-8", errors="replace") as f:
                m = rx.search(f.read())
            if m:
                return m
            if self.p.poll() is not None:
                raise RuntimeError("%s exited %s before printing %r:\n%s" % (self.name, self.p.returncode, pattern, self.log()))
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not print %r in %gs:\n%s" % (self.name, pattern, timeout, self.log()))
            time.sleep(0.02)

    def log(self) -> str:
        parts = []
        for path in (self.out, self.err):
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read()[-4000:])
        return "\n".join(parts)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> Optional[int]:
        """The exit code, or None if still running after timeout seconds."""
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within timeout seconds."""
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()


class DevFarm(Proc):
    """`maple dev` on free ports: embedded Redis, a gateway, the demo worker
    (login tokens signed with SECRET)."""

    def __init__(self, *extra: str) -> None:
        super().__init__(
            "dev",
            [
                "dev",
                "--listen", "127.0.0.1:0",
                "--ws-listen", "127.0.0.1:0",
                "--redis-listen", "127.0.0.1:0",
                "--login-secret", SECRET,
                "--log-level", "warn",
                "--shutdown-timeout", "2s",
            ]
            + list(extra),
        )
        try:
            m = self.wait_output(r"maple dev: gateway on (\S+), embedded redis on (\S+)")
        except BaseException:
            self.stop()
            raise
        self.addr: str = m.group(1)
        self.redis: str = "redis://%s/0" % m.group(2)

    def gateway(self, port: int, *extra: str) -> Proc:
        """A `maple gateway` on 127.0.0.1:port against this farm's Redis, once listening."""
        g = Proc("gateway", ["gateway", "--redis", self.redis, "--listen", "127.0.0.1:%d" % port] + list(extra))
        try:
            g.wait_output(r"msg=listening", stderr=True)
        except BaseException:
            g.stop()
            raise
        return g

    def trigger(self, op: str, *args: str) -> None:
        """Runs `maple trigger OP ARGS` against this farm's Redis."""
        subprocess.run([binary(), "trigger", op, "--redis", self.redis] + list(args), check=True, capture_output=True, timeout=20)
