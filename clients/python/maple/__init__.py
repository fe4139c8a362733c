"""maple: the Python client of a maple game-server farm (standard library only).

- ``maple.box``: the Box frame codec (``Box``, ``Parser``, ``Ret``, ``CMD_MOVE``),
  byte for byte the frames of the original netkit ``Box.pack()``.
- ``maple.Client``: a blocking, thread-safe client (``maple.client``).
- ``maple.aio``: the same for asyncio (``await maple.aio.connect(addr)``).

Both match replies to requests by sn, hand pushes (sn 0) to a callback or an
iterator, and follow a stopping gateway to its successor (docs/operations.md,
"What a client sees during a gateway roll"). Logging in is a request like
any other: with the demo game, ``client.call(2, token_or_user_id)``.
"""

from .box import (
    CMD_MOVE,
    DEFAULT_MAX_FRAME,
    HEADER_LEN,
    MAGIC,
    BadMagic,
    Box,
    FrameError,
    Parser,
    Ret,
    ShortLen,
    TooLarge,
)
from .client import Client, ConnectionClosed, MapleError, RetError, Timeout

__all__ = [
    "CMD_MOVE",
    "DEFAULT_MAX_FRAME",
    "HEADER_LEN",
    "MAGIC",
    "BadMagic",
    "Box",
    "FrameError",
    "Parser",
    "Ret",
    "ShortLen",
    "TooLarge",
    "Client",
    "ConnectionClosed",
    "MapleError",
    "RetError",
    "Timeout",
]
