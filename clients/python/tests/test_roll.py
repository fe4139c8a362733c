"""A real gateway roll (issue 16 item 4): clients of both kinds follow a
`maple gateway --reuseport --drain-timeout 1s` that gets SIGTERM while a
new gateway serves the same port, under load, and lose nothing and run
nothing twice."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
import time
import unittest
import uuid
from typing import Any, Dict, List, Tuple

from maple import Client, aio

from . import farm

CMD_LOGIN, CMD_COUNTER, CMD_WHOAMI, CMD_SLEEP = 2, 3, 4, 7
FOLLOWERS = 6  # of each kind


class GatewayRollTest(unittest.TestCase):
    def test_clients_follow_a_gateway_roll(self):
        """Each follower logs in with a token (again in on_move, which
        kicks its old connection), then sends one counter request (demo cmd
        3) at a time. Half of them move 1 ms after the push whatever is in
        flight; those of the blocking kind have a 700 ms request in flight
        as the roll starts, which the old gateway must still answer. No
        request is lost, none ran without its answer reaching the client
        (the counter equals the answers seen), none is answered twice, and
        every follower ends up logged in on the new gateway."""
        dev = farm.DevFarm()
        self.addCleanup(dev.stop)
        port = farm.free_port()
        addr = "127.0.0.1:%d" % port
        old = dev.gateway(port, "--reuseport", "--drain-timeout", "1s")
        self.addCleanup(old.stop)
        counter = "roll-" + uuid.uuid4().hex[:8]

        lock = threading.Lock()
        values: Dict[bytes, int] = collections.Counter()  # counter value -> answers with it
        errors: List[str] = []
        stop = threading.Event()

        def answered(r: Any, who: str) -> bool:
            with lock:
                if r.ret != 0:
                    errors.append("%s: ret %d" % (who, r.ret))
                    return False
                values[r.body] += 1
                return True

        # Blocking followers, a thread each.
        blocking: List[Tuple[Client, str]] = []
        threads = []
        for i in range(FOLLOWERS):
            name = "py-roller-b%d-%s" % (i, counter)
            token = farm.login_token(name)
            c = Client(addr, on_move=lambda c, t=token: c.call(CMD_LOGIN, t), move_wait=0.001 if i % 2 else 1.0)
            self.addCleanup(c.close)
            c.call(CMD_LOGIN, token)
            blocking.append((c, name))

            def load(c: Client = c, who: str = name) -> None:
                try:
                    while not stop.is_set() and answered(c.request(CMD_COUNTER, counter), who):
                        pass
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append("%s: %r" % (who, e))

            threads.append(threading.Thread(target=load))

        # Asyncio followers, on one loop in a thread of their own.
        ready = threading.Event()
        after: Dict[str, Any] = {}

        async def async_followers() -> None:
            clients = []
            for i in range(FOLLOWERS):
                name = "py-roller-a%d-%s" % (i, counter)
                token = farm.login_token(name)

                async def login(c: aio.Client, t: str = token) -> None:
                    await c.call(CMD_LOGIN, t)

                c = await aio.connect(addr, on_move=login, move_wait=0.001 if i % 2 else 1.0)
                await login(c)
                clients.append((c, name))
            ready.set()

            async def load(c: aio.Client, who: str) -> None:
                try:
                    while not stop.is_set() and answered(await c.request(CMD_COUNTER, counter), who):
                        pass
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append("%s: %r" % (who, e))

            await asyncio.gather(*(load(c, n) for c, n in clients))
            for c, name in clients:
                after[name] = (c.moves, c.closed, (await c.request(CMD_WHOAMI)).text(), await c.next_push(0))
                await c.close()

        aloop = threading.Thread(target=lambda: asyncio.run(async_followers()))
        aloop.start()
        self.assertTrue(ready.wait(20), "the asyncio followers did not connect")
        for t in threads:
            t.start()

        time.sleep(0.5)
        new = dev.gateway(port, "--reuseport")
        self.addCleanup(new.stop)
        slow: List[Any] = []
        slow_threads = [
            threading.Thread(target=lambda c=c: slow.append(_catch(c.request, CMD_SLEEP, "700")))
            for c, _ in blocking[1::2]
        ]
        for t in slow_threads:
            t.start()
        time.sleep(0.1)  # in flight
        old.signal(signal.SIGTERM)
        termed = time.monotonic()
        self.assertEqual(old.wait(20), 0, "the old gateway did not exit 0 after SIGTERM:\n" + old.log())
        took = time.monotonic() - termed
        time.sleep(0.5)  # load on the new gateway alone
        stop.set()
        for t in threads + slow_threads:
            t.join(20)
        aloop.join(20)

        self.assertEqual(errors, [])
        for r in slow:
            self.assertFalse(isinstance(r, Exception), r)
            self.assertEqual((r.ret, r.body), (0, b"700"))
        twice = {v: n for v, n in values.items() if n > 1}
        self.assertEqual(twice, {}, "counter values answered more than once")
        with Client(addr) as check:
            ran = int(check.request(CMD_COUNTER, counter).body) - 1
        seen = sum(values.values())
        self.assertEqual(seen, ran, "the counter ran %d times, the clients saw %d answers" % (ran, seen))
        for c, name in blocking:
            push = c.next_push(0)
            after[name] = (c.moves, c.closed, c.request(CMD_WHOAMI).text(), push)
        self.assertEqual(len(after), 2 * FOLLOWERS)
        for name, (moves, closed, whoami, push) in after.items():
            with self.subTest(name):
                self.assertEqual((moves, closed, whoami), (1, False, name))
                self.assertIsNone(push, "a frame answered no request (a second answer?)")
        self.assertGreater(seen, 4 * FOLLOWERS, "too little load to tell")
        if os.environ.get("MAPLE_ROLL_VERBOSE"):
            print("\nroll: %d answers; old gateway exited %.1fs after SIGTERM; resent (blocking): %s"
                  % (seen, took, [c.resent for c, _ in blocking]))


def _catch(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except Exception as e:  # noqa: BLE001
        return e


if __name__ == "__main__":
    unittest.main()
