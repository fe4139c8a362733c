"""The blocking client: one TCP connection to a gateway, used from threads.

``Client.request`` sends a frame under the next sequence number (sn) and
waits for the reply that echoes it; any number of threads may call it at
once, so requests are pipelined on the one connection and replies may come
back in any order. Frames that answer no waiting request (pushes, which
carry sn 0, and replies that came after their request gave up) go to the
``on_push`` callback, or else to a bounded queue read with ``pushes()`` or
``next_push()`` (when it is full the oldest is dropped).

::

    from maple import Client

    with Client("127.0.0.1:28000") as c:
        c.call(2, token)            # log in: the demo's cmd 2, a token or a user id
        reply = c.request(1, "hi")  # echo: Box(cmd=1, ret=0, sn=2, body=b'hi')
        for push in c.pushes(timeout=5):
            print(push.cmd, push.text())

Gateway rolls (docs/operations.md, "What a client sees during a gateway
roll"): a stopping gateway pushes ``CMD_MOVE`` (sn 0), later answers frames
it no longer takes ``Ret.MOVED`` (not run), and closes each connection once
it answered every frame it took; a request it left unanswered never ran.
With ``follow_moves`` (the default) the client follows: on the push it
holds new requests until none of its requests is in flight on the old
connection (or ``move_wait`` seconds), closes the old connection if it is
quiet, connects again (to ``move_addr``, by default the same address, where
the new gateway listens), runs ``on_move(client)`` there first (log in
again: requests made inside the hook go out on the new connection at once),
then sends the held requests. Requests answered ``Ret.MOVED``, or left
unanswered when the stopping gateway closed, are sent again, so
``request`` returns their real answers. A connection that ends without the
move push (a crash, a network failure) ends the client: its unanswered
requests may have run.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple, Union

from .box import CMD_MOVE, DEFAULT_MAX_FRAME, Box, FrameError, Parser, Ret, to_bytes

__all__ = [
    "Client",
    "MapleError",
    "ConnectionClosed",
    "Timeout",
    "RetError",
    "parse_addr",
]

log = logging.getLogger("maple")

Addr = Union[str, Tuple[str, int]]
Body = Union[bytes, bytearray, memoryview, str, None]

_DEFAULT: Any = object()  # "the client's default timeout"


class MapleError(Exception):
    """The base class of the clients' errors."""


class ConnectionClosed(MapleError, ConnectionError):
    """The client has ended: closed, or its connection was lost.

    A request waiting when the connection was lost (without the move push)
    may or may not have run.
    """


class Timeout(MapleError, TimeoutError):
    """No reply within the request's timeout. A late reply goes to the pushes."""


class RetError(MapleError):
    """A reply with a non-zero ret, raised by ``call``; ``reply`` is the Box."""

    def __init__(self, cmd: int, reply: Box) -> None:
        what = reply.body.decode("utf-8", "replace") if reply.body else ""
        try:
            name = Ret(reply.ret).name
        except ValueError:
            name = "ret"
        super().__init__("maple: cmd %d: %s %d%s" % (cmd, name, reply.ret, ": " + what if what else ""))
        self.cmd = cmd
        self.ret = reply.ret
        self.reply = reply


def parse_addr(addr: Addr) -> Tuple[str, int]:
    """Turns "host:port", "[v6]:port" or (host, port) into (host, port)."""
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("maple: address %r is not host:port" % (addr,))
    return host.strip("[]") or "127.0.0.1", int(port)


def next_sn(sn: int, busy: Any) -> int:
    """The sn after sn: counts up from 1, wraps at 2**32 and skips 0 and busy ones."""
    while True:
        sn = sn + 1 if sn < 0xFFFFFFFF else 1
        if sn not in busy:
            return sn


# The link that requests made inside on_move go out on: (client, link,
# move deadline). A context variable, so it reaches the hook's own
# requests only (its thread here, its task and subtasks in aio).
_hook: contextvars.ContextVar[Optional[Tuple[Any, Any, float]]] = contextvars.ContextVar("maple_hook", default=None)

_reader = threading.local()  # .link is set on reader threads


class _Link:
    """One TCP connection of a Client: the only one, or during a move the
    old one and the new one."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock = sock
        self.parser = Parser(max_frame)
        self.wlock = threading.Lock()
        self.done = threading.Event()  # its reader stopped
        self.thread: Optional[threading.Thread] = None
        # Under the client's lock:
        self.waiting = 0  # requests waiting for a reply on it
        self.told = False  # its gateway is stopping, or the client moved away
        self.drop = False  # close it once waiting is 0 (the client moved away)

    def shut(self) -> None:
        """Closes the connection; its reader sees the end and stops."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Call:
    __slots__ = ("link", "event", "reply", "ended")

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.event = threading.Event()
        self.reply: Optional[Box] = None
        self.ended = False  # its link (or the client) ended without a reply


class _Move:
    def __init__(self, src: _Link) -> None:
        self.src = src
        self.quiet = threading.Event()  # time to go


def _connect(addr: Tuple[str, int], timeout: Optional[float]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Client:
    """A connection to a gateway. Its methods are safe to call from any thread.

    Connects at once (raises OSError if it cannot). Options:

    - ``timeout``: seconds ``request`` waits for its reply by default
      (10; None: no bound).
    - ``connect_timeout``: seconds a TCP connect may take (5).
    - ``max_frame``: the largest frame accepted from the gateway (1 MiB);
      a bigger one ends the client.
    - ``on_push(box)``: called for each frame that answers no request
      (pushes have sn 0), on the reader thread: keep it short, and do not
      call ``request`` from it (it would wait for itself). Without it
      those frames queue for ``pushes()`` / ``next_push()``.
    - ``push_buffer``: the queue's size (1024); when full the oldest
      frame is dropped (``dropped_pushes`` counts).
    - ``follow_moves``: follow a stopping gateway (True; False: the move
      push is an ordinary push and ``Ret.MOVED`` an ordinary reply).
    - ``move_addr``: where a move connects (default: ``addr``).
    - ``move_wait``: seconds a move waits for no request in flight (1).
    - ``move_timeout``: seconds one move may take, connects and
      ``on_move`` included, retried with backoff (15); past it the
      client ends.
    - ``on_move(client)``: runs on each new connection before anything
      else is sent there; log in again here (``client.call(2, token)``).
      The requests it makes itself, on its own thread, go out at once,
      bounded by ``move_timeout``; other threads' requests wait for the
      move. If it raises, the connection is dropped and the move retried
      (a login refused while the old session is still bound, say).
    """

    def __init__(
        self,
        addr: Addr,
        *,
        timeout: Optional[float] = 10.0,
        connect_timeout: Optional[float] = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        on_push: Optional[Callable[[Box], Any]] = None,
        push_buffer: int = 1024,
        follow_moves: bool = True,
        move_addr: Optional[Addr] = None,
        move_wait: float = 1.0,
        move_timeout: float = 15.0,
        on_move: Optional[Callable[["Client"], Any]] = None,
    ) -> None:
        self.addr = parse_addr(addr)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self.on_push = on_push
        self.follow_moves = follow_moves
        self.move_addr = parse_addr(move_addr) if move_addr is not None else self.addr
        self.move_wait = move_wait
        self.move_timeout = move_timeout
        self.on_move = on_move

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # a move ended, or the client
        self._sn = 0
        self._pending: Dict[int, _Call] = {}
        self._err: Optional[ConnectionClosed] = None  # why the client ended
        self._closed = threading.Event()
        self._links: Set[_Link] = set()
        self._moving: Optional[_Move] = None
        self._moves = 0
        self._resent = 0

        self._pcond = threading.Condition()
        self._pushes: Deque[Box] = collections.deque(maxlen=max(1, push_buffer))
        self._dropped = 0

        link = _Link(_connect(self.addr, connect_timeout), max_frame)
        self._cur = link
        self._start(link)

    # -- requests --------------------------------------------------------

    def request(self, cmd: int, body: Body = b"", timeout: Optional[float] = _DEFAULT) -> Box:
        """Sends a request and returns its reply (a Box), whatever its ret.

        Raises Timeout when no reply came within timeout seconds (default:
        the client's), ConnectionClosed when the client has ended or the
        connection was lost with the request unanswered. A request that a
        stopping gateway did not run is sent again on the next connection
        (see the module doc), under a new sn.
        """
        if getattr(_reader, "link", None) is not None:
            raise RuntimeError("maple: request() on the reader thread (in on_push) would wait for itself")
        data = to_bytes(body)
        Box(cmd, data).pack()  # ValueError now for a cmd that does not fit
        if timeout is _DEFAULT:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        hook = _hook.get()
        hook_link: Optional[_Link] = None
        if hook is not None and hook[0] is self:
            hook_link = hook[1]
            deadline = hook[2] if deadline is None else min(deadline, hook[2])
        while True:
            link, sn, call = self._begin(deadline, hook_link, cmd)
            again, reply = self._await(link, sn, call, cmd, data, deadline, hook_link, timeout)
            if not again:
                assert reply is not None
                return reply
            with self._lock:
                self._resent += 1

    def call(self, cmd: int, body: Body = b"", timeout: Optional[float] = _DEFAULT) -> Box:
        """Like ``request``, but raises RetError when the reply's ret is not 0."""
        reply = self.request(cmd, body, timeout)
        if reply.ret != Ret.OK:
            raise RetError(cmd, reply)
        return reply

    def _begin(self, deadline: Optional[float], hook_link: Optional[_Link], cmd: int) -> Tuple[_Link, int, _Call]:
        """Picks the link (waiting while the client moves) and registers the call."""
        with self._lock:
            while True:
                self._raise_if_ended()
                if hook_link is not None:
                    link = hook_link
                    break
                if self._moving is None:
                    link = self._cur
                    break
                left = _left(deadline)
                if left is not None and left <= 0:
                    raise Timeout("maple: no reply to cmd %d in time (the client was moving)" % cmd)
                self._cond.wait(left)
            self._sn = next_sn(self._sn, self._pending)
            call = _Call(link)
            self._pending[self._sn] = call
            link.waiting += 1
            return link, self._sn, call

    def _await(
        self,
        link: _Link,
        sn: int,
        call: _Call,
        cmd: int,
        data: bytes,
        deadline: Optional[float],
        hook_link: Optional[_Link],
        timeout: Optional[float],
    ) -> Tuple[bool, Optional[Box]]:
        """Sends the frame on link and waits for its reply.

        Returns (True, None) when the request is to be sent again: its
        gateway is stopping and did not run it.
        """
        frame = Box(cmd, data, sn=sn).pack()
        try:
            with link.wlock:
                link.sock.sendall(frame)
        except OSError as e:
            self._forget(sn, call)
            # A frame not written whole never runs.
            if hook_link is None and self._following(link):
                return True, None
            self._broken(link, e)
            self._raise_if_ended()
            raise ConnectionClosed("maple: write: %s" % e) from e
        if not call.event.wait(_left(deadline)):
            self._forget(sn, call)
            if not call.event.is_set():
                raise Timeout("maple: no reply to cmd %d within %ss" % (cmd, timeout))
        reply = call.reply
        if reply is not None:
            if reply.ret == Ret.MOVED and self.follow_moves and hook_link is None and self._err is None:
                return True, None
            return False, reply
        # Its link ended unanswered, or the client did.
        self._raise_if_ended()
        if hook_link is None and self._following(link):
            return True, None  # the stopping gateway closed: it never ran
        raise ConnectionClosed("maple: the connection of a move ended before the reply")

    def _raise_if_ended(self) -> None:
        err = self._err
        if err is not None:
            raise ConnectionClosed(str(err)) from err.__cause__

    def _following(self, link: _Link) -> bool:
        """link's gateway is stopping and the client follows it elsewhere."""
        with self._lock:
            return self.follow_moves and self._err is None and link.told

    def _forget(self, sn: int, call: _Call) -> None:
        with self._lock:
            if self._pending.get(sn) is call:
                del self._pending[sn]
                self._unwait(call.link)

    def _unwait(self, link: _Link) -> None:
        """A request on link stopped waiting (under the lock). When none is
        left, a move waiting for a quiet moment goes, and a link moved away
        from is closed."""
        link.waiting -= 1
        if link.waiting > 0:
            return
        m = self._moving
        if m is not None and m.src is link:
            m.quiet.set()
        if link.drop:
            link.shut()

    def _broken(self, link: _Link, err: BaseException) -> None:
        """A write on link failed: the client ends, unless link is not its
        own (a new one during a move) or its gateway is stopping."""
        with self._lock:
            alone = self._cur is not link or (self.follow_moves and link.told)
        if alone:
            link.shut()
        else:
            self._fail("maple: connection closed: write: %s" % err, err)

    # -- reading ---------------------------------------------------------

    def _start(self, link: _Link) -> bool:
        """Starts link's reader; False (and link closed) if the client ended."""
        with self._lock:
            if self._err is not None:
                link.sock.close()
                link.done.set()
                return False
            self._links.add(link)
            link.thread = threading.Thread(target=self._read, args=(link,), name="maple-reader", daemon=True)
            link.thread.start()
            return True

    def _read(self, link: _Link) -> None:
        _reader.link = link
        err: Optional[BaseException] = None
        try:
            while err is None:
                try:
                    data = link.sock.recv(65536)
                except OSError as e:
                    err = e
                    break
                if not data:
                    err = EOFError("the gateway closed the connection")
                    break
                try:
                    frames = link.parser.feed(data)
                except FrameError as e:
                    err = e
                    break
                for b in frames:
                    self._dispatch(link, b)
                err = link.parser.error
        finally:
            self._ended(link, err)

    def _dispatch(self, link: _Link, b: Box) -> None:
        if self.follow_moves:
            if b.sn == 0 and b.cmd == CMD_MOVE:
                self._start_move(link, urgent=False)
                return
            if b.ret == Ret.MOVED:
                self._start_move(link, urgent=True)  # it takes no more work: go now
        if b.sn != 0:
            with self._lock:
                call = self._pending.get(b.sn)
                if call is not None and call.link is link:
                    del self._pending[b.sn]
                    self._unwait(link)
                else:
                    call = None
            if call is not None:
                call.reply = b
                call.event.set()
                return
        self._push(b)

    def _push(self, b: Box) -> None:
        if self.on_push is not None:
            try:
                self.on_push(b)
            except Exception:
                log.exception("maple: on_push failed")
            return
        with self._pcond:
            if len(self._pushes) == self._pushes.maxlen:
                self._dropped += 1
            self._pushes.append(b)
            self._pcond.notify()

    def _ended(self, link: _Link, err: Optional[BaseException]) -> None:
        """link's stream ended: the client ends with it, unless it follows
        link's gateway elsewhere or moved away from link."""
        link.shut()  # wakes a write blocked on it, which then fails
        with link.wlock:  # no write is using the descriptor as it closes
            link.sock.close()
        others: List[_Link] = []
        with self._lock:
            self._links.discard(link)
            cur = self._cur is link
            follow = self.follow_moves and link.told
            if cur and not follow:
                others = self._end_locked("maple: connection closed: %s" % err, err)
            calls = [c for c in self._pending.values() if c.link is link]
            for sn in [sn for sn, c in self._pending.items() if c.link is link]:
                del self._pending[sn]
            link.waiting = 0
            m = self._moving
            if m is not None and m.src is link:
                m.quiet.set()
        for c in calls:
            c.ended = True
            c.event.set()
        link.done.set()
        for other in others:
            other.shut()
        if cur and follow:
            self._start_move(link, urgent=True)

    # -- moves -----------------------------------------------------------

    def _start_move(self, link: _Link, urgent: bool) -> None:
        """link's gateway is stopping: follow it elsewhere if link is the
        client's; urgent: it takes no more work, do not wait for quiet."""
        with self._lock:
            link.told = True
            if self._err is not None or self._cur is not link:
                return
            m = self._moving
            if m is None:
                m = self._moving = _Move(link)
                threading.Thread(target=self._run_move, args=(m,), name="maple-move", daemon=True).start()
            if urgent or link.waiting == 0:
                m.quiet.set()

    def _run_move(self, m: _Move) -> None:
        try:
            m.quiet.wait(self.move_wait)
            # A quiet old connection has no more use: close it first, so
            # that the old gateway unbinds the user before on_move logs in.
            with self._lock:
                if m.src.waiting == 0:
                    m.src.shut()
            deadline = time.monotonic() + self.move_timeout
            backoff = 0.02
            while True:
                try:
                    link = self._new_link(deadline)
                except Exception as e:  # noqa: BLE001 - a failed hook is retried
                    if self._err is not None:
                        return
                    if time.monotonic() + backoff >= deadline:
                        self._fail("maple: following the gateway to %s:%d: %s" % (self.move_addr + (e,)), e)
                        return
                    log.info("maple: move: %s; trying again", e)
                else:
                    self._swap(m, link)
                    return
                if self._closed.wait(backoff):
                    return
                backoff = min(2 * backoff, 1.0)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _new_link(self, deadline: float) -> _Link:
        """Connects a link for a move and runs on_move on it."""
        left = max(0.001, deadline - time.monotonic())
        timeout = left if self.connect_timeout is None else min(left, self.connect_timeout)
        link = _Link(_connect(self.move_addr, timeout), self.max_frame)
        if not self._start(link):
            self._raise_if_ended()
        if self.on_move is not None:
            token = _hook.set((self, link, deadline))
            try:
                self.on_move(self)
            except BaseException:
                with self._lock:
                    link.told = True  # its end is not the client's
                link.shut()
                raise
            finally:
                _hook.reset(token)
        return link

    def _swap(self, m: _Move, link: _Link) -> None:
        """Makes link the client's at the end of move m."""
        with self._lock:
            if self._err is not None:
                link.shut()
                return
            old, self._cur = self._cur, link
            self._moving = None
            old.told = old.drop = True
            if old.waiting == 0:
                old.shut()
            again = link.told  # the new gateway is stopping too
            self._moves += 1
            self._cond.notify_all()
        if again:
            self._start_move(link, urgent=False)

    # -- the end ---------------------------------------------------------

    def _end_locked(self, msg: str, cause: Optional[BaseException]) -> List[_Link]:
        """Records why the client ended (the first time; under the lock),
        wakes every waiting request and returns the links to close."""
        if self._err is not None:
            return []
        err = ConnectionClosed(msg)
        err.__cause__ = cause
        self._err = err
        for c in self._pending.values():
            c.ended = True
            c.event.set()
        self._pending.clear()
        self._closed.set()
        if self._moving is not None:
            self._moving.quiet.set()
        self._cond.notify_all()
        with self._pcond:
            self._pcond.notify_all()
        return list(self._links)

    def _fail(self, msg: str, cause: Optional[BaseException]) -> None:
        with self._lock:
            links = self._end_locked(msg, cause)
        for link in links:
            link.shut()

    def close(self) -> None:
        """Ends the client: waiting requests raise ConnectionClosed. Returns
        once the reader threads stopped (unless called from one), so no
        push arrives after it. Closing again does nothing."""
        with self._lock:
            links = self._end_locked("maple: client closed", None)
            threads = [l.thread for l in self._links]
        for link in links:
            link.shut()
        me = threading.current_thread()
        for t in threads:
            if t is not None and t is not me:
                t.join(5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pushes and state ------------------------------------------------

    def next_push(self, timeout: Optional[float] = None) -> Optional[Box]:
        """The next queued push (or late reply); None after timeout seconds,
        or once the client ended and the queue is empty."""
        with self._pcond:
            self._pcond.wait_for(lambda: self._pushes or self._err is not None, timeout)
            return self._pushes.popleft() if self._pushes else None

    def pushes(self, timeout: Optional[float] = None) -> Iterator[Box]:
        """Iterates over queued pushes until none came for timeout seconds
        (None: until the client ends)."""
        while True:
            b = self.next_push(timeout)
            if b is None:
                return
            yield b

    @property
    def dropped_pushes(self) -> int:
        """Pushes dropped because the queue was full."""
        return self._dropped

    @property
    def moves(self) -> int:
        """How many times the client followed its gateway to a new connection."""
        return self._moves

    @property
    def resent(self) -> int:
        """Requests sent again after a move: the stopping gateway answered
        them Ret.MOVED or closed unanswered, so they had not run."""
        return self._resent

    @property
    def error(self) -> Optional[ConnectionClosed]:
        """Why the client ended, or None while it is up."""
        return self._err

    @property
    def closed(self) -> bool:
        return self._err is not None

    def __repr__(self) -> str:
        state = "closed" if self._err is not None else ("moving" if self._moving else "open")
        return "<maple.Client %s:%d %s>" % (self.addr + (state,))


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())

