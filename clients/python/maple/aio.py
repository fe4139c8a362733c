"""The asyncio client: the same as ``maple.Client``, for one event loop.

::

    import asyncio
    from maple import aio

    async def main():
        async def login(c):                 # after each move, before anything else
            await c.call(2, token)

        async with await aio.connect("127.0.0.1:28000", on_move=login) as c:
            await login(c)
            reply = await c.request(1, "hi")
            async for push in c.pushes(timeout=5):
                print(push.cmd, push.text())

    asyncio.run(main())

Requests are pipelined on the one connection and matched to their replies
by sn; any number of tasks may await ``request`` at once. Use a client from
the event loop it was connected on only.

Gateway rolls are followed as by the blocking client (``maple.client``): on
the move push, new requests wait until none is in flight on the old
connection (or ``move_wait``), the client connects again, awaits
``on_move(client)`` (requests made in it, and in tasks it starts, go out on
the new connection at once), then sends what waited; requests answered
``Ret.MOVED`` or left unanswered by the stopping gateway are sent again.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Deque, Dict, List, Optional, Set, Tuple

from .box import CMD_MOVE, DEFAULT_MAX_FRAME, Box, FrameError, Parser, Ret, to_bytes
from .client import (
    _DEFAULT,
    Addr,
    Body,
    ConnectionClosed,
    RetError,
    Timeout,
    _hook,
    log,
    next_sn,
    parse_addr,
)

__all__ = ["Client", "connect"]


class _Link:
    """One TCP connection of a Client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = Parser(max_frame)
        self.drain_lock = asyncio.Lock()
        self.task: Optional["asyncio.Task[None]"] = None
        self.waiting = 0  # requests waiting for a reply on it
        self.told = False  # its gateway is stopping, or the client moved away
        self.drop = False  # close it once waiting is 0 (the client moved away)

    def shut(self) -> None:
        """Closes the connection; its reader sees the end and stops."""
        self.writer.close()


class _Call:
    __slots__ = ("link", "fut", "ended")

    def __init__(self, link: _Link, fut: "asyncio.Future[Optional[Box]]") -> None:
        self.link = link
        self.fut = fut  # the reply, or None: its link (or the client) ended unanswered
        self.ended = False


class _Move:
    def __init__(self, src: _Link) -> None:
        self.src = src
        self.quiet = asyncio.Event()  # time to go
        self.ready = asyncio.Event()  # the move is over (or the client ended)


async def _open(addr: Tuple[str, int], max_frame: int, timeout: Optional[float]) -> _Link:
    r, w = await asyncio.wait_for(asyncio.open_connection(addr[0], addr[1]), timeout)
    return _Link(r, w, max_frame)


async def connect(addr: Addr, **options: Any) -> "Client":
    """Connects to a gateway; options as for ``Client``."""
    return await Client.connect(addr, **options)


class Client:
    """A connection to a gateway, for asyncio. Make one with ``await connect(addr)``.

    Options are those of ``maple.Client``, with two differences: ``on_move``
    may be a coroutine function (it is awaited), and ``on_push`` runs on
    the reader task (if it returns a coroutine, that runs as a task).
    """

    def __init__(self, addr: Addr, **options: Any) -> None:
        # Only connect() makes a usable client (asyncio objects need the loop).
        self.addr = parse_addr(addr)
        self.timeout: Optional[float] = options.pop("timeout", 10.0)
        self.connect_timeout: Optional[float] = options.pop("connect_timeout", 5.0)
        self.max_frame: int = options.pop("max_frame", DEFAULT_MAX_FRAME)
        self.on_push: Optional[Callable[[Box], Any]] = options.pop("on_push", None)
        push_buffer: int = options.pop("push_buffer", 1024)
        self.follow_moves: bool = options.pop("follow_moves", True)
        move_addr = options.pop("move_addr", None)
        self.move_addr = parse_addr(move_addr) if move_addr is not None else self.addr
        self.move_wait: float = options.pop("move_wait", 1.0)
        self.move_timeout: float = options.pop("move_timeout", 15.0)
        self.on_move: Optional[Callable[["Client"], Any]] = options.pop("on_move", None)
        if options:
            raise TypeError("maple: unknown options %s" % ", ".join(sorted(options)))
        self._sn = 0
        self._pending: Dict[int, _Call] = {}
        self._err: Optional[ConnectionClosed] = None
        self._links: Set[_Link] = set()
        self._moving: Optional[_Move] = None
        self._moves = 0
        self._resent = 0
        self._pushes: Deque[Box] = collections.deque(maxlen=max(1, push_buffer))
        self._dropped = 0
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._cur: _Link
        self._closed: asyncio.Event
        self._push_ready: asyncio.Event

    @classmethod
    async def connect(cls, addr: Addr, **options: Any) -> "Client":
        """Connects to a gateway (raises OSError or asyncio.TimeoutError if it cannot)."""
        c = cls(addr, **options)
        c._closed = asyncio.Event()
        c._push_ready = asyncio.Event()
        c._cur = await _open(c.addr, c.max_frame, c.connect_timeout)
        c._start(c._cur)
        return c

    # -- requests --------------------------------------------------------

    async def request(self, cmd: int, body: Body = b"", timeout: Optional[float] = _DEFAULT) -> Box:
        """Sends a request and returns its reply (a Box), whatever its ret.

        Raises Timeout, or ConnectionClosed (the client ended, or the
        connection was lost with the request unanswered). A request that a
        stopping gateway did not run is sent again on the next connection.
        """
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
            link, sn, call = await self._begin(deadline, hook_link, cmd)
            again, reply = await self._await(link, sn, call, cmd, data, deadline, hook_link, timeout)
            if not again:
                assert reply is not None
                return reply
            self._resent += 1

    async def call(self, cmd: int, body: Body = b"", timeout: Optional[float] = _DEFAULT) -> Box:
        """Like ``request``, but raises RetError when the reply's ret is not 0."""
        reply = await self.request(cmd, body, timeout)
        if reply.ret != Ret.OK:
            raise RetError(cmd, reply)
        return reply

    async def _begin(self, deadline: Optional[float], hook_link: Optional[_Link], cmd: int) -> Tuple[_Link, int, _Call]:
        while True:
            self._raise_if_ended()
            if hook_link is not None:
                link = hook_link
                break
            m = self._moving
            if m is None:
                link = self._cur
                break
            try:
                await asyncio.wait_for(m.ready.wait(), _left(deadline))
            except asyncio.TimeoutError:
                raise Timeout("maple: no reply to cmd %d in time (the client was moving)" % cmd) from None
        self._sn = next_sn(self._sn, self._pending)
        call = _Call(link, asyncio.get_running_loop().create_future())
        self._pending[self._sn] = call
        link.waiting += 1
        return link, self._sn, call

    async def _await(
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
        try:
            if link.writer.transport.is_closing():
                raise ConnectionResetError("the connection is closing")
            link.writer.write(Box(cmd, data, sn=sn).pack())
            async with link.drain_lock:
                await link.writer.drain()
        except OSError as e:
            if not call.fut.done():
                self._forget(sn, call)
                if hook_link is None and self._following(link):
                    return True, None
                self._broken(link, e)
                self._raise_if_ended()
                raise ConnectionClosed("maple: write: %s" % e) from e
            # The answer (or the link's end) came meanwhile: see below.
        try:
            reply = await asyncio.wait_for(asyncio.shield(call.fut), _left(deadline))
        except asyncio.TimeoutError:
            self._forget(sn, call)
            raise Timeout("maple: no reply to cmd %d within %ss" % (cmd, timeout)) from None
        except asyncio.CancelledError:
            self._forget(sn, call)
            raise
        if reply is not None:
            if reply.ret == Ret.MOVED and self.follow_moves and hook_link is None and self._err is None:
                return True, None
            return False, reply
        self._raise_if_ended()
        if hook_link is None and self._following(link):
            return True, None  # the stopping gateway closed: it never ran
        raise ConnectionClosed("maple: the connection of a move ended before the reply")

    def _raise_if_ended(self) -> None:
        err = self._err
        if err is not None:
            raise ConnectionClosed(str(err)) from err.__cause__

    def _following(self, link: _Link) -> bool:
        return self.follow_moves and self._err is None and link.told

    def _forget(self, sn: int, call: _Call) -> None:
        if self._pending.get(sn) is call:
            del self._pending[sn]
            self._unwait(call.link)

    def _unwait(self, link: _Link) -> None:
        link.waiting -= 1
        if link.waiting > 0:
            return
        m = self._moving
        if m is not None and m.src is link:
            m.quiet.set()
        if link.drop:
            link.shut()

    def _broken(self, link: _Link, err: BaseException) -> None:
        if self._cur is not link or (self.follow_moves and link.told):
            link.shut()
        else:
            self._fail("maple: connection closed: write: %s" % err, err)

    # -- reading ---------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> "asyncio.Task[Any]":
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _start(self, link: _Link) -> None:
        self._links.add(link)
        link.task = self._spawn(self._read(link))

    async def _read(self, link: _Link) -> None:
        err: Optional[BaseException] = None
        try:
            while err is None:
                try:
                    data = await link.reader.read(65536)
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
                self._start_move(link, urgent=True)
        if b.sn != 0:
            call = self._pending.get(b.sn)
            if call is not None and call.link is link:
                del self._pending[b.sn]
                self._unwait(link)
                if not call.fut.done():
                    call.fut.set_result(b)
                return
        self._push(b)

    def _push(self, b: Box) -> None:
        if self.on_push is not None:
            try:
                r = self.on_push(b)
                if inspect.isawaitable(r):
                    self._spawn(r)
            except Exception:
                log.exception("maple: on_push failed")
            return
        if len(self._pushes) == self._pushes.maxlen:
            self._dropped += 1
        self._pushes.append(b)
        self._push_ready.set()

    def _ended(self, link: _Link, err: Optional[BaseException]) -> None:
        link.writer.close()
        self._links.discard(link)
        cur = self._cur is link
        follow = self.follow_moves and link.told
        if cur and not follow:
            self._fail("maple: connection closed: %s" % err, err)
        for sn in [sn for sn, c in self._pending.items() if c.link is link]:
            c = self._pending.pop(sn)
            c.ended = True
            if not c.fut.done():
                c.fut.set_result(None)
        link.waiting = 0
        m = self._moving
        if m is not None and m.src is link:
            m.quiet.set()
        if cur and follow:
            self._start_move(link, urgent=True)

    # -- moves -----------------------------------------------------------

    def _start_move(self, link: _Link, urgent: bool) -> None:
        link.told = True
        if self._err is not None or self._cur is not link:
            return
        m = self._moving
        if m is None:
            m = self._moving = _Move(link)
            self._spawn(self._run_move(m))
        if urgent or link.waiting == 0:
            m.quiet.set()

    async def _run_move(self, m: _Move) -> None:
        try:
            try:
                await asyncio.wait_for(m.quiet.wait(), self.move_wait)
            except asyncio.TimeoutError:
                pass
            if m.src.waiting == 0:
                m.src.shut()  # unbinds the user on the old gateway before on_move logs in
            deadline = time.monotonic() + self.move_timeout
            backoff = 0.02
            while True:
                try:
                    link = await self._new_link(deadline)
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
                try:
                    await asyncio.wait_for(self._closed.wait(), backoff)
                    return
                except asyncio.TimeoutError:
                    pass
                backoff = min(2 * backoff, 1.0)
        finally:
            m.ready.set()

    async def _new_link(self, deadline: float) -> _Link:
        left = max(0.001, deadline - time.monotonic())
        timeout = left if self.connect_timeout is None else min(left, self.connect_timeout)
        link = await _open(self.move_addr, self.max_frame, timeout)
        if self._err is not None:
            link.shut()
            self._raise_if_ended()
        self._start(link)
        if self.on_move is not None:
            token = _hook.set((self, link, deadline))
            try:
                r = self.on_move(self)
                if inspect.isawaitable(r):
                    await r
            except BaseException:
                link.told = True  # its end is not the client's
                link.shut()
                raise
            finally:
                _hook.reset(token)
        return link

    def _swap(self, m: _Move, link: _Link) -> None:
        if self._err is not None:
            link.shut()
            return
        old, self._cur = self._cur, link
        self._moving = None
        old.told = old.drop = True
        if old.waiting == 0:
            old.shut()
        self._moves += 1
        m.ready.set()
        if link.told:  # the new gateway is stopping too
            self._start_move(link, urgent=False)

    # -- the end ---------------------------------------------------------

    def _fail(self, msg: str, cause: Optional[BaseException]) -> None:
        if self._err is not None:
            return
        err = ConnectionClosed(msg)
        err.__cause__ = cause
        self._err = err
        for c in self._pending.values():
            c.ended = True
            if not c.fut.done():
                c.fut.set_result(None)
        self._pending.clear()
        self._closed.set()
        self._push_ready.set()
        if self._moving is not None:
            self._moving.quiet.set()
            self._moving.ready.set()
        for link in list(self._links):
            link.shut()

    async def close(self) -> None:
        """Ends the client: waiting requests raise ConnectionClosed. Returns
        once its tasks have stopped. Closing again does nothing."""
        self._fail("maple: client closed", None)
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for t in tasks:
            if not any(t is l.task for l in self._links):
                t.cancel()  # a move, or an on_push coroutine
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- pushes and state ------------------------------------------------

    async def next_push(self, timeout: Optional[float] = None) -> Optional[Box]:
        """The next queued push (or late reply); None after timeout seconds,
        or once the client ended and the queue is empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pushes:
            if self._err is not None:
                return None
            self._push_ready.clear()
            try:
                await asyncio.wait_for(self._push_ready.wait(), _left(deadline))
            except asyncio.TimeoutError:
                return None
        return self._pushes.popleft()

    async def pushes(self, timeout: Optional[float] = None) -> AsyncIterator[Box]:
        """Iterates (``async for``) over queued pushes until none came for
        timeout seconds (None: until the client ends)."""
        while True:
            b = await self.next_push(timeout)
            if b is None:
                return
            yield b

    @property
    def dropped_pushes(self) -> int:
        return self._dropped

    @property
    def moves(self) -> int:
        return self._moves

    @property
    def resent(self) -> int:
        return self._resent

    @property
    def error(self) -> Optional[ConnectionClosed]:
        return self._err

    @property
    def closed(self) -> bool:
        return self._err is not None

    def __repr__(self) -> str:
        state = "closed" if self._err is not None else ("moving" if self._moving else "open")
        return "<maple.aio.Client %s:%d %s>" % (self.addr + (state,))


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
