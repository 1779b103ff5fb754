"""The numbers of the relay protocol: frame kinds, lanes and ERROR codes.

They are the protocol's vocabulary, shared by the frames, the limits, the
relay and the client, and none of them may ever be renumbered; keeping them
apart from the codecs is what lets every other wire module (and anything
that only needs a code, such as metrics) import them without the rest.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from m42d.errors import RemoteProtocolError


class FrameKind(enum.IntEnum):
    """The first byte of every frame; the numbers are part of the protocol."""

    CREATE_ROOM = 0x01
    ROOM_CREATED = 0x02
    JOIN = 0x03
    JOINED = 0x04
    PEER_UP = 0x05
    PEER_DOWN = 0x06
    BURN = 0x07
    CONTROL = 0x10
    BULK = 0x11
    CREDIT = 0x12
    PING = 0x20
    PONG = 0x21
    ERROR = 0x30
    GOAWAY = 0x31


class Lane(enum.Enum):
    """Which relay queue a frame waits in; CONTROL is always drained before BULK."""

    CONTROL = "control"
    BULK = "bulk"


class ErrorCode(enum.IntEnum):
    """Numbers sent in ERROR frames.  Stable public contract: never renumber."""

    BAD_FRAME = 400
    BAD_TOKEN = 401
    CREDIT_EXCEEDED = 402
    FORBIDDEN = 403
    UNKNOWN_ROOM = 404
    JOIN_TIMEOUT = 408
    SEAT_TAKEN = 409
    EXPIRED = 410
    BURNED = 411
    TOO_LARGE = 413
    UNSUPPORTED_VERSION = 415
    RATE_LIMITED = 429
    INTERNAL = 500
    UNAVAILABLE = 503

    @property
    def sentence(self) -> str:
        """The default human-readable message the relay sends with this code."""
        return ERROR_SENTENCES[self]


ERROR_SENTENCES: Final[Mapping[ErrorCode, str]] = MappingProxyType(
    {
        ErrorCode.BAD_FRAME: "malformed frame",
        ErrorCode.BAD_TOKEN: "wrong seat token or seat",
        ErrorCode.CREDIT_EXCEEDED: "bulk sent past credit",
        ErrorCode.FORBIDDEN: "room creation needs the relay's creation secret",
        ErrorCode.UNKNOWN_ROOM: "ticket not issued by this relay",
        ErrorCode.JOIN_TIMEOUT: "no CREATE_ROOM or JOIN arrived in time",
        ErrorCode.SEAT_TAKEN: "this seat was taken over by a newer connection",
        ErrorCode.EXPIRED: "room expired",
        ErrorCode.BURNED: "room was burned",
        ErrorCode.TOO_LARGE: "frame too large",
        ErrorCode.UNSUPPORTED_VERSION: "unsupported protocol version",
        ErrorCode.RATE_LIMITED: "too many requests, slow down",
        ErrorCode.INTERNAL: "internal relay error",
        ErrorCode.UNAVAILABLE: "relay full or shutting down",
    }
)


def error_code_for(exc: RemoteProtocolError) -> ErrorCode:
    """The ERROR code a relay sends for ``exc`` (its ``wire_code``, BAD_FRAME if unknown)."""
    try:
        return ErrorCode(exc.wire_code)
    except ValueError:  # pragma: no cover - every wire_code in the tree is an ErrorCode
        return ErrorCode.BAD_FRAME
