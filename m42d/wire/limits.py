"""Every size the wire format allows, and the one check that judges a body's size.

The caps and :data:`BODY_LIMITS` are what bound a relay's memory per frame,
so they sit in one table that the message decoder, the stream decoder and the
fast path all consult, rather than beside each frame class.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from m42d.errors import WireError
from m42d.ticket import TICKET_SIZE, TOKEN_SIZE
from m42d.wire.kinds import FrameKind

WIRE_VERSION: Final = 2
"""Relay protocol version sent in CREATE_ROOM and JOIN; equals ``m42d.PROTOCOL_VERSION``."""

MAX_PAYLOAD: Final = 262144 + 64
"""Largest CONTROL/BULK payload: a 256 KiB file chunk plus room for AEAD tag and header.

Version 1 had 64 KiB chunks; 256 KiB ones cost each of the three processes
about a fifth less CPU per GiB (docs/benchmarks.md, sixth pass)."""

MAX_FRAME: Final = 1 + MAX_PAYLOAD
"""Default cap on the stream length prefix (kind byte + largest body)."""

LENGTH_PREFIX_SIZE: Final = 4
MAX_SECRET: Final = 255
MAX_PING_DATA: Final = 32
MAX_TEXT: Final = 1024
"""Cap, in UTF-8 bytes, of ERROR messages and GOAWAY reasons."""


_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_STREAM_HEADER: Final = struct.Struct(">IB")
_JOINED: Final = struct.Struct(">BII")
_U32_MAX: Final = 0xFFFF_FFFF
_U16_MAX: Final = 0xFFFF


class FrameTooLargeError(WireError):
    """A declared frame length or a variable-size body exceeds its cap.

    Separate from plain :class:`WireError` so the relay can answer
    ``ERROR 413`` instead of ``ERROR 400``; see :func:`error_code_for`.
    """

    wire_code = 413  # TOO_LARGE


BODY_LIMITS: Final[Mapping[FrameKind, tuple[int, int]]] = MappingProxyType(
    {
        FrameKind.CREATE_ROOM: (1, 1 + MAX_SECRET),
        FrameKind.ROOM_CREATED: (TICKET_SIZE + 2 * TOKEN_SIZE,) * 2,
        FrameKind.JOIN: (2 + TICKET_SIZE + TOKEN_SIZE,) * 2,
        FrameKind.JOINED: (_JOINED.size,) * 2,
        FrameKind.PEER_UP: (0, 0),
        FrameKind.PEER_DOWN: (0, 0),
        FrameKind.BURN: (0, 0),
        FrameKind.CONTROL: (1, MAX_PAYLOAD),
        FrameKind.BULK: (1, MAX_PAYLOAD),
        FrameKind.CREDIT: (_U32.size,) * 2,
        FrameKind.PING: (0, MAX_PING_DATA),
        FrameKind.PONG: (0, MAX_PING_DATA),
        FrameKind.ERROR: (_U16.size, _U16.size + MAX_TEXT),
        FrameKind.GOAWAY: (_U32.size, _U32.size + MAX_TEXT),
    }
)
"""Inclusive (min, max) body length per kind, the kind byte not counted."""

# Plain-int keyed copy for the hot path: dict lookup by int, no enum hashing.
_LIMITS_BY_BYTE: Final[dict[int, tuple[int, int, str]]] = {
    int(kind): (lo, hi, kind.name) for kind, (lo, hi) in BODY_LIMITS.items()
}


def _check_body_length(kind_byte: int, n: int) -> None:
    """Apply :data:`BODY_LIMITS`; the one place that judges a body's size."""
    limits = _LIMITS_BY_BYTE.get(kind_byte)
    if limits is None:
        raise WireError(f"unknown frame kind 0x{kind_byte:02x}")
    lo, hi, name = limits
    if lo <= n <= hi:
        return
    if lo == hi:
        raise WireError(f"{name} body must be {lo} bytes, got {n}")
    if n > hi:
        raise FrameTooLargeError(f"{name} body must be at most {hi} bytes, got {n}")
    raise WireError(f"{name} body must be at least {lo} bytes, got {n}")
