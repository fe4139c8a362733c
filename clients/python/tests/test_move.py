"""Following a stopping gateway, against in-test gateways (fakegw) that push
the move, answer -10003 and close when the test says so. Every scenario
runs for the blocking client and for the asyncio client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import unittest
from typing import Any, Callable, List

from maple import CMD_MOVE, Box, Client, ConnectionClosed, Ret, aio

from .fakegw import ECHO, HOLD, FakeGateway


class Handle:
    """A client of either kind, and what its on_move hook saw."""

    def __init__(self) -> None:
        self.c: Any = None
        self.logins: List[str] = []  # the hook's login answers (from the echo)
        self.fails = 0  # hook calls left to fail


class BlockingDriver:
    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(8)

    def connect(self, addr: str, login: str = "", fails: int = 0, **kw: Any) -> Handle:
        h = Handle()
        h.fails = fails

        def on_move(c: Client) -> None:
            if h.fails > 0:
                h.fails -= 1
                raise RuntimeError("login refused, as with --login-mode refuse")
            h.logins.append(c.call(ECHO, login).text())

        h.c = Client(addr, on_move=on_move if login else None, **kw)
        return h

    def request(self, h: Handle, cmd: int, body: str) -> "concurrent.futures.Future[Box]":
        return self.pool.submit(h.c.request, cmd, body)

    def next_push(self, h: Handle, timeout: float) -> Box:
        return h.c.next_push(timeout)

    def close(self, h: Handle) -> None:
        h.c.close()

    def shutdown(self) -> None:
        self.pool.shutdown()


class AsyncDriver:
    """Runs an asyncio client on a loop in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> "concurrent.futures.Future[Any]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def connect(self, addr: str, login: str = "", fails: int = 0, **kw: Any) -> Handle:
        h = Handle()
        h.fails = fails

        async def on_move(c: aio.Client) -> None:
            if h.fails > 0:
                h.fails -= 1
                raise RuntimeError("login refused, as with --login-mode refuse")
            h.logins.append((await c.call(ECHO, login)).text())

        h.c = self.run(aio.connect(addr, on_move=on_move if login else None, **kw)).result(5)
        return h

    def request(self, h: Handle, cmd: int, body: str) -> "concurrent.futures.Future[Box]":
        return self.run(h.c.request(cmd, body))

    def next_push(self, h: Handle, timeout: float) -> Box:
        return self.run(h.c.next_push(timeout)).result(timeout + 5)

    def close(self, h: Handle) -> None:
        self.run(h.c.close()).result(10)

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.005)


class MoveScenarios:
    driver: Any

    def setUp(self) -> None:
        self.d = self.driver()
        self.addCleanup(self.d.shutdown)

    def gateway(self, name: str) -> FakeGateway:
        g = FakeGateway(name)
        self.addCleanup(g.stop)
        return g

    def connect(self, addr: str, **kw: Any) -> Handle:
        h = self.d.connect(addr, **kw)
        self.addCleanup(self.d.close, h)
        return h

    def body(self, fut: "concurrent.futures.Future[Box]") -> str:
        b = fut.result(5)
        self.assertEqual(b.ret, Ret.OK)
        return b.text()

    def test_moves_at_a_quiet_moment(self):
        """After the push, a new request waits while one is in flight on the
        old gateway; once that is answered, the client closes the old
        connection, connects to the new gateway, logs in there first, then
        sends the waiting request."""
        old, new = self.gateway("old"), self.gateway("new")
        h = self.connect(old.addr, move_addr=new.addr, move_wait=10, login="login")
        first = self.d.request(h, HOLD, "first")
        held = old.frame()
        oc = old.conn(0)
        oc.move()
        wait_until("the move push read", lambda: h.c._moving is not None)
        second = self.d.request(h, HOLD, "second")
        time.sleep(0.1)
        self.assertTrue(old.frames.empty(), "a request made after the move push went to the old gateway")
        self.assertEqual(new.accepted(), 0, "moved with a request in flight")
        held.answer("one")
        self.assertEqual(self.body(first), "one")
        f = new.frame()
        self.assertEqual(h.logins, ["new:login"], "on_move did not log in on the new gateway before anything else")
        self.assertEqual(f.box.body, b"second")
        f.answer("two")
        self.assertEqual(self.body(second), "two")
        self.assertTrue(oc.eof.wait(5), "the old connection was not closed by the client")
        self.assertEqual((h.c.moves, h.c.resent), (1, 0))
        self.assertEqual(self.body(self.d.request(h, ECHO, "after")), "new:after")
        self.assertIsNone(self.d.next_push(h, 0.05), "the move push is the client's, not the application's")

    def test_resends_moved_answers(self):
        """A -10003 answer: the gateway did not run it; the client moves at
        once and sends it again, once, on the new gateway."""
        old, new = self.gateway("old"), self.gateway("new")
        h = self.connect(old.addr, move_addr=new.addr, move_wait=10, login="again")
        r = self.d.request(h, HOLD, "x")
        old.frame().answer(b"", ret=Ret.MOVED)
        f = new.frame()
        self.assertEqual(f.box.body, b"x")
        f.answer("done")
        self.assertEqual(self.body(r), "done")
        self.assertEqual(h.logins, ["new:again"])
        self.assertEqual((h.c.moves, h.c.resent), (1, 1))
        self.assertTrue(old.conn(0).eof.wait(5))
        self.assertTrue(new.frames.empty())

    def test_resends_what_the_stopping_gateway_left_unanswered(self):
        """The stopping gateway closes with a request unanswered: it never
        ran, so it is sent again on the new gateway."""
        old, new = self.gateway("old"), self.gateway("new")
        h = self.connect(old.addr, move_addr=new.addr, move_wait=10, login="l")
        r = self.d.request(h, HOLD, "y")
        old.frame()
        oc = old.conn(0)
        oc.move()
        wait_until("the move push read", lambda: h.c._moving is not None)
        oc.close()
        f = new.frame()
        self.assertEqual(f.box.body, b"y")
        f.answer("ran once")
        self.assertEqual(self.body(r), "ran once")
        self.assertEqual((h.c.moves, h.c.resent), (1, 1))

    def test_move_wait_bounds_the_wait(self):
        """With a request still in flight after move_wait, the client moves
        anyway; that request gets its answer on the old connection, which
        the client closes then."""
        old, new = self.gateway("old"), self.gateway("new")
        h = self.connect(old.addr, move_addr=new.addr, move_wait=0.2)
        slow = self.d.request(h, HOLD, "slow")
        held = old.frame()
        old.conn(0).move()
        wait_until("the move push read", lambda: h.c._moving is not None)
        self.assertEqual(self.body(self.d.request(h, ECHO, "meanwhile")), "new:meanwhile")
        self.assertFalse(old.conn(0).eof.is_set())
        held.answer("late but fine")
        self.assertEqual(self.body(slow), "late but fine")
        self.assertTrue(old.conn(0).eof.wait(5))
        self.assertEqual((h.c.moves, h.c.resent), (1, 0))

    def test_a_failed_login_is_retried(self):
        old, new = self.gateway("old"), self.gateway("new")
        h = self.connect(old.addr, move_addr=new.addr, login="retry", fails=1)
        old.conn(0).move()
        wait_until("the move", lambda: h.c.moves == 1)
        self.assertEqual(new.accepted(), 2)
        self.assertEqual(h.logins, ["new:retry"])
        self.assertEqual(self.body(self.d.request(h, ECHO, "x")), "new:x")

    def test_a_close_without_the_push_ends_the_client(self):
        """No move push: the request may have run, so it is not resent."""
        old = self.gateway("old")
        h = self.connect(old.addr)
        r = self.d.request(h, HOLD, "z")
        old.frame()
        old.conn(0).close()
        with self.assertRaises(ConnectionClosed):
            r.result(5)
        self.assertTrue(h.c.closed)
        with self.assertRaises(ConnectionClosed):
            self.d.request(h, ECHO, "after").result(5)
        self.assertEqual(h.c.resent, 0)

    def test_without_follow_moves(self):
        old = self.gateway("old")
        h = self.connect(old.addr, follow_moves=False)
        old.conn(0).move()
        self.assertEqual(self.d.next_push(h, 5), Box(CMD_MOVE, sn=0))
        r = self.d.request(h, HOLD, "w")
        old.frame().answer(b"", ret=Ret.MOVED)
        self.assertEqual(r.result(5).ret, Ret.MOVED)
        self.assertEqual(h.c.moves, 0)


class BlockingMoveTest(MoveScenarios, unittest.TestCase):
    driver = BlockingDriver


class AsyncMoveTest(MoveScenarios, unittest.TestCase):
    driver = AsyncDriver


if __name__ == "__main__":
    unittest.main()
