"""The asyncio client against a real farm (`maple dev`, the demo game)."""

from __future__ import annotations

import asyncio
import unittest
import uuid

from maple import Box, ConnectionClosed, Ret, RetError, Timeout, aio

from . import farm

dev: farm.DevFarm


def setUpModule():
    global dev
    dev = farm.DevFarm()


def tearDownModule():
    dev.stop()


def uid(name: str) -> str:
    return "%s-%s" % (name, uuid.uuid4().hex[:8])


def async_test(f):
    """Runs the coroutine test f on a new event loop (IsolatedAsyncioTestCase
    would do, but it keeps the loop's debug mode on)."""

    def run(self):
        asyncio.run(asyncio.wait_for(f(self), 60))

    run.__name__ = f.__name__
    run.__doc__ = f.__doc__
    return run


class AioTest(unittest.TestCase):
    @async_test
    async def test_echo_and_concurrent_requests(self):
        async with await aio.connect(dev.addr) as c:
            self.assertEqual(await c.request(1, "hi"), Box(1, b"hi", sn=1))
            bodies = ["r%d" % i for i in range(60)]  # under --max-inflight (64)
            replies = await asyncio.gather(*(c.request(1, b) for b in bodies))
            self.assertEqual([r.text() for r in replies], bodies)
            self.assertEqual(len({r.sn for r in replies}), 60)

    @async_test
    async def test_login_whoami_and_results(self):
        async with await aio.connect(dev.addr) as c:
            self.assertEqual((await c.request(5, "room")).ret, Ret.LOGIN_REQUIRED)
            name = uid("ann")
            await c.call(2, farm.login_token(name))
            self.assertEqual((await c.request(4)).text(), name)
            self.assertEqual((await c.request(99)).ret, Ret.NO_ROUTE)
            with self.assertRaises(RetError) as e:
                await c.call(8)  # the demo's panic route
            self.assertEqual(e.exception.ret, Ret.HANDLER_FAILED)
            self.assertEqual((await c.request(1, "still here")).text(), "still here")

    @async_test
    async def test_group_push(self):
        ann, bob, room = uid("ann"), uid("bob"), uid("room")
        seen = []
        a = await aio.connect(dev.addr, on_push=seen.append)
        b = await aio.connect(dev.addr)
        try:
            for c, name in ((a, ann), (b, bob)):
                await c.call(2, farm.login_token(name))
                await c.call(5, room)
            await b.call(6, "hi all")
            want = Box(6, "%s: hi all" % bob, sn=0)
            got = []
            async for push in b.pushes(timeout=0.5):
                got.append(push)
            self.assertEqual(got, [want])
            self.assertEqual(seen, [want])
        finally:
            await a.close()
            await b.close()

    @async_test
    async def test_timeout_late_reply_and_close(self):
        c = await aio.connect(dev.addr)
        with self.assertRaises(Timeout):
            await c.request(7, "600", timeout=0.1)
        late = await c.next_push(timeout=10)
        self.assertEqual((late.cmd, late.ret, late.body), (7, 0, b"600"))
        self.assertNotEqual(late.sn, 0)
        waiting = asyncio.ensure_future(c.request(7, "1000"))
        await asyncio.sleep(0.2)
        await c.close()
        with self.assertRaises(ConnectionClosed):
            await waiting
        with self.assertRaises(ConnectionClosed):
            await c.request(1, "x")
        self.assertIsNone(await c.next_push(timeout=1))
        await c.close()


if __name__ == "__main__":
    unittest.main()
