"""The Box frame codec of the maple wire protocol (docs/protocol.md section 1).

A frame is a 24-byte big-endian header followed by a body::

    offset  size  field       type
         0     4  magic       uint32, always 2037952207 (0x7978AECF)
         4     2  version     uint16, 0
         6     2  flag        uint16, 0 (reserved)
         8     4  packet_len  uint32, the whole frame, header included (>= 24)
        12     4  cmd         int32
        16     4  ret         int32
        20     4  sn          uint32
        24     n  body        n = packet_len - 24

``Box(cmd, body, sn=1).pack()`` gives the same bytes as the original netkit
``Box.pack()`` (testdata/box/*.golden are the reference). ``Parser`` cuts
frames out of a byte stream as it arrives, however it is split, and
rejects a stream that cannot be a frame sequence as soon as the bytes that
show it have arrived.
"""

from __future__ import annotations

import enum
import struct
from typing import List, Optional, Union

__all__ = [
    "MAGIC",
    "HEADER_LEN",
    "DEFAULT_MAX_FRAME",
    "CMD_MOVE",
    "Ret",
    "Box",
    "Parser",
    "FrameError",
    "BadMagic",
    "ShortLen",
    "TooLarge",
    "check_header",
    "to_bytes",
]

#: The first field of every frame.
MAGIC = 2037952207  # 0x7978AECF
#: Size of the fixed header; packet_len is never below it.
HEADER_LEN = 24
#: The gateway's default largest frame (packet_len): 1 MiB.
DEFAULT_MAX_FRAME = 1 << 20

#: The cmd of the push (sn 0, empty body) that means "this gateway is
#: stopping: reconnect at a quiet moment". A farm addition beyond
#: docs/protocol.md (docs/operations.md, "What a client sees during a
#: gateway roll"); the Go side's ``box.CmdMove``. Not a game route.
CMD_MOVE = -1

_HEADER = struct.Struct(">IHHIiiI")
_U32 = struct.Struct(">I")


class Ret(enum.IntEnum):
    """Result codes carried in the ret field (docs/protocol.md section 2).

    ``MOVED`` is a farm addition (the Go side's ``box.RetMoved``): a
    stopping gateway did not take the frame, which never ran; send it again
    on a new connection (the clients of this package do).
    """

    OK = 0
    NO_ROUTE = -10000
    HANDLER_FAILED = -10001
    BUSY = -10002
    MOVED = -10003
    LOGIN_REQUIRED = -10004


class FrameError(ValueError):
    """A byte stream that is not a valid frame sequence.

    It is final for a connection: after it the stream cannot be resynced.
    """


class BadMagic(FrameError):
    """The first 4 bytes of a frame are not MAGIC."""


class ShortLen(FrameError):
    """packet_len is under the header size (24)."""


class TooLarge(FrameError):
    """packet_len is over the limit (max_frame)."""


def to_bytes(body: Union[bytes, bytearray, memoryview, str, None]) -> bytes:
    """Returns body as bytes: str is encoded as UTF-8, None is empty."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError("maple: a body is bytes or str, not %s" % type(body).__name__)


class Box:
    """One frame: cmd, ret, sn, body (bytes), version and flag.

    A request has ret 0; a reply carries its request's cmd and sn; a push
    that is not a reply (a trigger, a broadcast, a group message) has sn 0.
    """

    __slots__ = ("cmd", "ret", "sn", "body", "version", "flag")

    def __init__(
        self,
        cmd: int = 0,
        body: Union[bytes, str, None] = b"",
        ret: int = 0,
        sn: int = 0,
        version: int = 0,
        flag: int = 0,
    ) -> None:
        self.cmd = cmd
        self.body = to_bytes(body)
        self.ret = ret
        self.sn = sn
        self.version = version
        self.flag = flag

    @property
    def packet_len(self) -> int:
        """The length of the packed frame, header included."""
        return HEADER_LEN + len(self.body)

    def pack(self) -> bytes:
        """Encodes the frame; packet_len is computed from the body.

        Raises ValueError if a field does not fit its type (sn and the
        lengths are unsigned 32-bit, cmd and ret signed 32-bit, version and
        flag unsigned 16-bit).
        """
        try:
            header = _HEADER.pack(
                MAGIC, self.version, self.flag, self.packet_len, self.cmd, self.ret, self.sn
            )
        except struct.error as e:
            raise ValueError("maple: cannot pack %r: %s" % (self, e)) from None
        return header + self.body

    @classmethod
    def unpack(cls, frame: Union[bytes, bytearray, memoryview], max_frame: int = DEFAULT_MAX_FRAME) -> "Box":
        """Decodes frame, which must be exactly one whole frame.

        Raises FrameError (BadMagic, ShortLen, TooLarge, or a length that
        is not the frame's).
        """
        frame = bytes(frame)
        if len(frame) < HEADER_LEN:
            raise FrameError("maple: %d bytes, shorter than a frame header" % len(frame))
        n = check_header(frame, max_frame)
        if n != len(frame):
            raise FrameError("maple: packet_len %d but the frame has %d bytes" % (n, len(frame)))
        return cls._decode(frame)

    @classmethod
    def _decode(cls, frame: bytes) -> "Box":
        _, version, flag, _, cmd, ret, sn = _HEADER.unpack_from(frame)
        return cls(cmd, frame[HEADER_LEN:], ret=ret, sn=sn, version=version, flag=flag)

    def text(self, errors: str = "strict") -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8", errors)

    @property
    def ok(self) -> bool:
        """ret is 0."""
        return self.ret == Ret.OK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Box):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 64 else self.body[:64] + b"..."
        extra = "" if self.version == 0 and self.flag == 0 else ", version=%d, flag=%d" % (self.version, self.flag)
        return "Box(cmd=%d, ret=%d, sn=%d, body=%r%s)" % (self.cmd, self.ret, self.sn, body, extra)


def check_header(buf: Union[bytes, bytearray], max_frame: int = DEFAULT_MAX_FRAME) -> Optional[int]:
    """Checks the start of a frame in buf and returns its packet_len.

    Returns None while fewer than 12 bytes (up to packet_len) are there;
    raises BadMagic as soon as 4 bytes are, ShortLen or TooLarge as soon as
    12 are. max_frame <= 0 means DEFAULT_MAX_FRAME.
    """
    if max_frame <= 0:
        max_frame = DEFAULT_MAX_FRAME
    if len(buf) >= 4:
        (magic,) = _U32.unpack_from(buf, 0)
        if magic != MAGIC:
            raise BadMagic("maple: bad magic 0x%08X" % magic)
    if len(buf) < 12:
        return None
    (n,) = _U32.unpack_from(buf, 8)
    if n < HEADER_LEN:
        raise ShortLen("maple: packet_len %d under the header size" % n)
    if n > max_frame:
        raise TooLarge("maple: packet_len %d over the limit %d" % (n, max_frame))
    return n


class Parser:
    """Cuts frames out of a byte stream, incrementally.

    Feed it the bytes as they arrive (any split); ``feed`` returns the
    frames completed so far. A bad stream raises FrameError from ``feed``
    and every later call: the connection cannot go on.

    >>> p = Parser()
    >>> data = Box(1, b"hi", sn=1).pack()
    >>> p.feed(data[:5]), p.feed(data[5:])
    ([], [Box(cmd=1, ret=0, sn=1, body=b'hi')])
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame if max_frame > 0 else DEFAULT_MAX_FRAME
        self._buf = bytearray()
        self._error: Optional[FrameError] = None

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> List[Box]:
        """Adds data and returns the frames it completed, in order.

        Raises FrameError at a bad frame. Frames completed before it in the
        same call are returned first; the error is then raised by the next
        call (and ``error`` holds it at once).
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        frames: List[Box] = []
        start = 0
        while True:
            try:
                n = check_header(bytes(buf[start : start + 12]), self.max_frame)
            except FrameError as e:
                self._error = e
                break
            if n is None or len(buf) - start < n:
                break
            frames.append(Box._decode(bytes(buf[start : start + n])))
            start += n
        del buf[:start]
        if self._error is not None and not frames:
            raise self._error
        return frames

    @property
    def error(self) -> Optional[FrameError]:
        """The FrameError that stopped the stream, or None."""
        return self._error

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buf)
