"""The codec against the repository's reference frames, testdata/box.

*.golden are Go hex.Dump()s of the demo game's frames (box/golden_test.go),
the bytes of the original netkit Box.pack(); *.bin are the parser's seed
streams (box/fuzz_test.go, seedStreams).
"""

from __future__ import annotations

import random
import unittest
from pathlib import Path

from maple import CMD_MOVE, MAGIC, BadMagic, Box, FrameError, Parser, Ret, ShortLen, TooLarge
from maple.client import next_sn, parse_addr

TESTDATA = Path(__file__).resolve().parents[3] / "testdata" / "box"

# box/golden_test.go, goldenFrames: name, cmd, ret, sn, body.
GOLDEN = [
    ("echo_request", 1, 0, 1, b"hi"),
    ("echo_reply", 1, 0, 1, b"hi"),
    ("no_route_reply", 99, -10000, 2, b""),
    ("say_push", 6, 0, 0, b"alice: hello"),
]

ECHO = Box(1, b"hi", sn=1)

# box/fuzz_test.go, seedStreams: what a parser makes of each whole stream:
# frames, the error that stops it (or None), bytes left waiting.
SEEDS = {
    "echo_request": ([ECHO], None, 0),
    "empty_body": ([Box(4, sn=2)], None, 0),
    "push": ([Box(6, b"alice: hello", sn=0)], None, 0),
    "two_frames": ([ECHO, Box(99, ret=-10000, sn=2)], None, 0),
    "version_flag": ([Box(3, b"7", sn=4, version=1, flag=2)], None, 0),
    "bad_magic": ([], BadMagic, None),
    "frame_then_bad_magic": ([ECHO], BadMagic, None),
    "short_len": ([], ShortLen, None),
    "huge_len": ([], TooLarge, None),
    "truncated_body": ([], None, 27),
    "truncated_header": ([], None, 10),
}


def go_hex_dump(data: bytes) -> str:
    """Go's encoding/hex.Dump."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        cols = ""
        for i in range(16):
            cols += "%02x " % chunk[i] if i < len(chunk) else "   "
            if i == 7:
                cols += " "
        text = "".join(chr(c) if 32 <= c <= 126 else "." for c in chunk)
        lines.append("%08x  %s |%s|\n" % (off, cols, text))
    return "".join(lines)


def parse_hex_dump(dump: str) -> bytes:
    """The bytes a hex dump shows (the columns between offset and |...|)."""
    out = bytearray()
    for line in dump.splitlines():
        cols = line[8:].split("|")[0]
        out += bytes.fromhex(cols.replace(" ", ""))
    return bytes(out)


def run(stream: bytes, chunks, max_frame: int = 0):
    """Feeds stream to a Parser in chunks; returns (frames, error class, pending)."""
    p = Parser(max_frame)
    frames, i = [], 0
    while i < len(stream):
        n = chunks()
        try:
            frames += p.feed(stream[i : i + n])
        except FrameError as e:
            return frames, type(e), None
        i += n
    if p.error is not None:  # came after frames completed by the same feed
        with_error = type(p.error)
        try:
            p.feed(b"")
        except FrameError as e:
            assert type(e) is with_error
            return frames, with_error, None
        raise AssertionError("the parser's error was not raised")
    return frames, None, p.pending


class GoldenTest(unittest.TestCase):
    def test_golden_frames(self):
        for name, cmd, ret, sn, body in GOLDEN:
            with self.subTest(name):
                dump = (TESTDATA / (name + ".golden")).read_text()
                frame = Box(cmd, body, ret=ret, sn=sn).pack()
                self.assertEqual(go_hex_dump(frame), dump, "pack() is not byte for byte the golden frame")
                self.assertEqual(parse_hex_dump(dump), frame)
                b = Box.unpack(frame)
                self.assertEqual((b.cmd, b.ret, b.sn, b.body, b.version, b.flag), (cmd, ret, sn, body, 0, 0))

    def test_echo_request_is_netkit_pack(self):
        # netkit: Box(); box.cmd = 1; box.sn = 1; box.body = "hi"; box.pack()
        want = bytes.fromhex("7978aecf 0000 0000 0000001a 00000001 00000000 00000001 6869")
        self.assertEqual(Box(1, "hi", sn=1).pack(), want)
        self.assertEqual(MAGIC, 2037952207)
        self.assertEqual((TESTDATA / "echo_request.bin").read_bytes(), want)


class ParserTest(unittest.TestCase):
    def test_seed_streams(self):
        names = {p.stem for p in TESTDATA.glob("*.bin")}
        self.assertEqual(names, set(SEEDS), "testdata/box/*.bin and SEEDS differ: update SEEDS")
        rng = random.Random(7)
        for name, want in SEEDS.items():
            stream = (TESTDATA / (name + ".bin")).read_bytes()
            for how, chunks in [
                ("whole", lambda: len(stream)),
                ("byte by byte", lambda: 1),
                ("random", lambda: rng.randint(1, 30)),
            ]:
                with self.subTest(name, feed=how):
                    self.assertEqual(run(stream, chunks), want)

    def test_version_and_flag_survive(self):
        stream = (TESTDATA / "version_flag.bin").read_bytes()
        self.assertEqual(Box.unpack(stream).pack(), stream)

    def test_errors_as_soon_as_their_bytes_arrive(self):
        bad = (TESTDATA / "bad_magic.bin").read_bytes()
        p = Parser()
        self.assertEqual(p.feed(bad[:3]), [])
        with self.assertRaises(BadMagic):
            p.feed(bad[3:4])
        with self.assertRaises(BadMagic):  # and for good
            p.feed(ECHO.pack())
        huge = (TESTDATA / "huge_len.bin").read_bytes()
        p = Parser()
        self.assertEqual(p.feed(huge[:11]), [])
        with self.assertRaises(TooLarge):
            p.feed(huge[11:12])

    def test_max_frame(self):
        frame = ECHO.pack()  # 26 bytes
        self.assertEqual(Parser(max_frame=26).feed(frame), [ECHO])
        with self.assertRaises(TooLarge):
            Parser(max_frame=25).feed(frame)
        big = Box(1, b"x" * ((1 << 20) - 24)).pack()
        self.assertEqual(len(Parser().feed(big)), 1)  # the default limit, 1 MiB, included
        with self.assertRaises(TooLarge):
            Parser().feed(Box(1, b"x" * ((1 << 20) - 23)).pack()[:12])

    def test_many_frames_in_pieces(self):
        frames = [Box(i % 9, bytes([i % 256]) * (i % 40), sn=i) for i in range(1, 300)]
        stream = b"".join(b.pack() for b in frames)
        rng = random.Random(1)
        self.assertEqual(run(stream, lambda: rng.randint(1, 100)), (frames, None, 0))


class BoxTest(unittest.TestCase):
    def test_sn_is_unsigned_32_bit(self):
        frame = Box(1, sn=0xFFFFFFFF).pack()
        self.assertEqual(frame[20:24], b"\xff\xff\xff\xff")
        self.assertEqual(Box.unpack(frame).sn, 4294967295)
        for sn in (-1, 1 << 32):
            with self.assertRaises(ValueError):
                Box(1, sn=sn).pack()

    def test_signed_cmd_and_ret(self):
        b = Box.unpack(Box(CMD_MOVE, ret=Ret.MOVED).pack())
        self.assertEqual((b.cmd, b.ret), (-1, -10003))
        self.assertEqual(Box(CMD_MOVE).pack()[12:16], b"\xff\xff\xff\xff")
        with self.assertRaises(ValueError):
            Box(1 << 31).pack()

    def test_unpack_wants_exactly_one_frame(self):
        frame = ECHO.pack()
        for bad in (frame[:-1], frame + b"x", frame[:20]):
            with self.assertRaises(FrameError):
                Box.unpack(bad)
        with self.assertRaises(ShortLen):
            Box.unpack((TESTDATA / "short_len.bin").read_bytes())

    def test_bodies(self):
        self.assertEqual(Box(1, "héllo").body, "héllo".encode())
        self.assertEqual(Box(1, None).body, b"")
        self.assertEqual(Box(1, bytearray(b"ab")).text(), "ab")
        with self.assertRaises(TypeError):
            Box(1, 42)

    def test_next_sn_wraps_and_skips(self):
        self.assertEqual(next_sn(0, {}), 1)
        self.assertEqual(next_sn(0xFFFFFFFF, {}), 1)
        self.assertEqual(next_sn(0xFFFFFFFE, {0xFFFFFFFF: 1, 1: 1}), 2)

    def test_parse_addr(self):
        self.assertEqual(parse_addr("127.0.0.1:28000"), ("127.0.0.1", 28000))
        self.assertEqual(parse_addr("[::1]:5"), ("::1", 5))
        self.assertEqual(parse_addr(("h", "7")), ("h", 7))
        with self.assertRaises(ValueError):
            parse_addr("nohost")


if __name__ == "__main__":
    unittest.main()
