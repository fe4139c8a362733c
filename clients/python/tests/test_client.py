"""The blocking client against a real farm (`maple dev`, the demo game)."""

from __future__ import annotations

import threading
import time
import unittest
import uuid

from maple import Box, Client, ConnectionClosed, Ret, RetError, Timeout

from . import farm

dev: farm.DevFarm


def setUpModule():
    global dev
    dev = farm.DevFarm()


def tearDownModule():
    dev.stop()


def uid(name: str) -> str:
    return "%s-%s" % (name, uuid.uuid4().hex[:8])


class ClientTest(unittest.TestCase):
    def connect(self, **kw) -> Client:
        c = Client(dev.addr, **kw)
        self.addCleanup(c.close)
        return c

    def test_echo(self):
        c = self.connect()
        r = c.request(1, "hi")
        self.assertEqual(r, Box(1, b"hi", sn=1))
        r = c.request(1, b"\x00\xff")
        self.assertEqual((r.ret, r.sn, r.body), (0, 2, b"\x00\xff"))

    def test_concurrent_requests_matched_by_sn(self):
        c = self.connect()
        errors = []

        def run(t):
            for i in range(40):
                body = "t%d-%d" % (t, i)
                r = c.request(1, body)
                if r.ret != 0 or r.text() != body:
                    errors.append((body, r))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_login_with_token_and_whoami(self):
        c = self.connect()
        self.assertEqual(c.request(4).body, b"")  # not logged in
        name = uid("ann")
        self.assertEqual(c.call(2, farm.login_token(name)).ret, Ret.OK)
        self.assertEqual(c.request(4).text(), name)
        with self.assertRaises(RetError) as e:
            self.connect().call(2, "v1.1.bad.%s" % name)  # a forged token
        self.assertEqual(e.exception.ret, Ret.HANDLER_FAILED)

    def test_results(self):
        c = self.connect()
        self.assertEqual(c.request(5, "room").ret, Ret.LOGIN_REQUIRED)
        self.assertEqual(c.request(99).ret, Ret.NO_ROUTE)
        r = c.request(8)  # the demo's panic route
        self.assertEqual((r.cmd, r.ret), (8, Ret.HANDLER_FAILED))
        with self.assertRaises(RetError) as e:
            c.call(8)
        self.assertEqual(e.exception.reply.ret, -10001)
        self.assertEqual(c.request(1, "still here").text(), "still here")

    def test_group_push(self):
        got = []
        arrived = threading.Event()

        def on_push(b: Box):
            got.append(b)
            arrived.set()

        ann, bob = uid("ann"), uid("bob")
        room = uid("room")
        a = self.connect(on_push=on_push)
        b = self.connect()
        for c, name in ((a, ann), (b, bob)):
            c.call(2, farm.login_token(name))
            c.call(5, room)
        a.call(6, "hello")
        push = b.next_push(timeout=10)
        self.assertEqual(push, Box(6, "%s: hello" % ann, sn=0))
        self.assertTrue(arrived.wait(10))
        self.assertEqual(got, [Box(6, "%s: hello" % ann, sn=0)])
        self.assertIsNone(b.next_push(timeout=0.2))

    def test_trigger_push(self):
        name = uid("cat")
        c = self.connect()
        c.call(2, farm.login_token(name))
        dev.trigger("write_to_users", "--uids", name, "--cmd", "100", "--body", "from redis")
        pushes = list(c.pushes(timeout=1))
        self.assertEqual(pushes, [Box(100, "from redis", sn=0)])

    def test_timeout_and_late_reply(self):
        c = self.connect()
        with self.assertRaises(Timeout):
            c.request(7, "600", timeout=0.1)
        late = c.next_push(timeout=10)  # the reply, after its request gave up
        self.assertEqual((late.cmd, late.ret, late.body), (7, 0, b"600"))
        self.assertNotEqual(late.sn, 0)
        self.assertEqual(c.request(1, "next").text(), "next")

    def test_close(self):
        c = self.connect()
        outcome = []
        t = threading.Thread(target=lambda: outcome.append(_catch(c.request, 7, "1000")))
        t.start()
        time.sleep(0.2)
        c.close()
        t.join(5)
        self.assertIsInstance(outcome[0], ConnectionClosed)
        with self.assertRaises(ConnectionClosed):
            c.request(1, "x")
        self.assertTrue(c.closed)
        c.close()  # again: nothing

    def test_no_request_from_on_push(self):
        errs = []
        c = self.connect(on_push=lambda b: errs.append(_catch(c.request, 1, "x")))
        name = uid("dan")
        c.call(2, farm.login_token(name))
        dev.trigger("write_to_users", "--uids", name, "--cmd", "100")
        deadline = time.monotonic() + 10
        while not errs and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIsInstance(errs[0], RuntimeError)


def _catch(f, *args):
    try:
        return f(*args)
    except Exception as e:  # noqa: BLE001
        return e


if __name__ == "__main__":
    unittest.main()
