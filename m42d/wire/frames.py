"""One value class per frame kind, each knowing how to encode and parse its own body.

The classes are the wire format's public values (what transports send and
receive); :data:`Frame` is their union.  Their bodies' lengths were already
checked against :data:`~m42d.wire.limits.BODY_LIMITS` by the time
``_decode_body`` runs, which is why parsing here can index without checks.
"""

from __future__ import annotations

from typing import ClassVar, Final, TypeAlias, final

import attrs

from m42d.errors import LocalProtocolError, WireError
from m42d.ticket import TICKET_SIZE, TOKEN_SIZE, Seat
from m42d.wire.fields import _dec_text, _enc_bytes, _enc_text, _enc_uint, _payload_repr
from m42d.wire.kinds import ErrorCode, FrameKind, Lane
from m42d.wire.limits import (
    _JOINED,
    _U16,
    _U16_MAX,
    _U32,
    _U32_MAX,
    MAX_PAYLOAD,
    MAX_PING_DATA,
    MAX_SECRET,
    WIRE_VERSION,
)

# -- frames -------------------------------------------------------------------
#
# Each frame class knows its body: ``_encode_body`` validates and returns the
# body bytes, ``_decode_body`` parses a body whose length already passed
# BODY_LIMITS.  Construction does not validate: decoded frames are valid by
# construction and frames we build are checked once, at encode time.


@final
@attrs.frozen
class CreateRoom:
    """c→r: ask the relay for a new room (first frame of a connection)."""

    kind: ClassVar[FrameKind] = FrameKind.CREATE_ROOM
    version: int = WIRE_VERSION
    creation_secret: bytes = attrs.field(default=b"", repr=False)

    def _encode_body(self) -> bytes:
        version = _enc_uint(self.kind, "version", self.version, 0, 0xFF)
        secret = _enc_bytes(self.kind, "creation_secret", self.creation_secret, 0, MAX_SECRET)
        return bytes((version,)) + secret

    @classmethod
    def _decode_body(cls, body: memoryview) -> CreateRoom:
        return cls(version=body[0], creation_secret=bytes(body[1:]))


@final
@attrs.frozen
class RoomCreated:
    """r→c: the ticket and both seat tokens of a fresh room."""

    kind: ClassVar[FrameKind] = FrameKind.ROOM_CREATED
    ticket: bytes
    token_a: bytes = attrs.field(repr=False)
    token_b: bytes = attrs.field(repr=False)

    def _encode_body(self) -> bytes:
        k = self.kind
        return (
            _enc_bytes(k, "ticket", self.ticket, TICKET_SIZE, TICKET_SIZE)
            + _enc_bytes(k, "token_a", self.token_a, TOKEN_SIZE, TOKEN_SIZE)
            + _enc_bytes(k, "token_b", self.token_b, TOKEN_SIZE, TOKEN_SIZE)
        )

    @classmethod
    def _decode_body(cls, body: memoryview) -> RoomCreated:
        t = TICKET_SIZE
        return cls(
            ticket=bytes(body[:t]),
            token_a=bytes(body[t : t + TOKEN_SIZE]),
            token_b=bytes(body[t + TOKEN_SIZE :]),
        )


_SEAT_BY_BYTE: Final[dict[int, Seat]] = {seat.byte: seat for seat in Seat}


@final
@attrs.frozen
class Join:
    """c→r: take a seat in a room (first frame of a connection)."""

    kind: ClassVar[FrameKind] = FrameKind.JOIN
    seat: Seat
    ticket: bytes
    token: bytes = attrs.field(repr=False)
    version: int = WIRE_VERSION

    def _encode_body(self) -> bytes:
        k = self.kind
        version = _enc_uint(k, "version", self.version, 0, 0xFF)
        if not isinstance(self.seat, Seat):
            raise LocalProtocolError("cannot encode JOIN: seat must be a Seat")
        return (
            bytes((version, self.seat.byte))
            + _enc_bytes(k, "ticket", self.ticket, TICKET_SIZE, TICKET_SIZE)
            + _enc_bytes(k, "token", self.token, TOKEN_SIZE, TOKEN_SIZE)
        )

    @classmethod
    def _decode_body(cls, body: memoryview) -> Join:
        seat = _SEAT_BY_BYTE.get(body[1])
        if seat is None:
            raise WireError("JOIN seat byte must be ASCII 'A' or 'B'")
        return cls(
            seat=seat,
            ticket=bytes(body[2 : 2 + TICKET_SIZE]),
            token=bytes(body[2 + TICKET_SIZE :]),
            version=body[0],
        )


@final
@attrs.frozen
class Joined:
    """r→c: the seat is yours; announces the caps and the bulk window."""

    kind: ClassVar[FrameKind] = FrameKind.JOINED
    peer_online: bool
    max_payload: int
    bulk_window: int

    def _encode_body(self) -> bytes:
        k = self.kind
        return _JOINED.pack(
            1 if self.peer_online else 0,
            _enc_uint(k, "max_payload", self.max_payload, 0, _U32_MAX),
            _enc_uint(k, "bulk_window", self.bulk_window, 0, _U32_MAX),
        )

    @classmethod
    def _decode_body(cls, body: memoryview) -> Joined:
        online, max_payload, window = _JOINED.unpack(body)
        if online > 1:
            raise WireError("JOINED peer_online must be 0 or 1")
        return cls(peer_online=online == 1, max_payload=max_payload, bulk_window=window)


@final
@attrs.frozen
class PeerUp:
    """r→c: the other seat is connected."""

    kind: ClassVar[FrameKind] = FrameKind.PEER_UP

    def _encode_body(self) -> bytes:
        return b""

    @classmethod
    def _decode_body(cls, body: memoryview) -> PeerUp:
        return cls()


@final
@attrs.frozen
class PeerDown:
    """r→c: the other seat disconnected (or was never there)."""

    kind: ClassVar[FrameKind] = FrameKind.PEER_DOWN

    def _encode_body(self) -> bytes:
        return b""

    @classmethod
    def _decode_body(cls, body: memoryview) -> PeerDown:
        return cls()


@final
@attrs.frozen
class Burn:
    """c→r: destroy the room for both seats until its expiry."""

    kind: ClassVar[FrameKind] = FrameKind.BURN

    def _encode_body(self) -> bytes:
        return b""

    @classmethod
    def _decode_body(cls, body: memoryview) -> Burn:
        return cls()


@final
@attrs.frozen
class Control:
    """Both ways: opaque end-to-end bytes in the control lane (handshake, text, acks)."""

    kind: ClassVar[FrameKind] = FrameKind.CONTROL
    payload: bytes = attrs.field(repr=_payload_repr)

    def _encode_body(self) -> bytes:
        return _enc_bytes(self.kind, "payload", self.payload, 1, MAX_PAYLOAD)

    @classmethod
    def _decode_body(cls, body: memoryview) -> Control:
        return cls(bytes(body))


@final
@attrs.frozen
class Bulk:
    """Both ways: opaque end-to-end bytes in the bulk lane (file chunks); costs credit."""

    kind: ClassVar[FrameKind] = FrameKind.BULK
    payload: bytes = attrs.field(repr=_payload_repr)

    def _encode_body(self) -> bytes:
        return _enc_bytes(self.kind, "payload", self.payload, 1, MAX_PAYLOAD)

    @classmethod
    def _decode_body(cls, body: memoryview) -> Bulk:
        return cls(bytes(body))


@final
@attrs.frozen
class Credit:
    """r→c: the client may send ``amount`` more bytes of BULK payload."""

    kind: ClassVar[FrameKind] = FrameKind.CREDIT
    amount: int

    def _encode_body(self) -> bytes:
        return _U32.pack(_enc_uint(self.kind, "amount", self.amount, 1, _U32_MAX))

    @classmethod
    def _decode_body(cls, body: memoryview) -> Credit:
        (amount,) = _U32.unpack(body)
        if amount == 0:
            raise WireError("CREDIT amount must be greater than 0")
        return cls(amount)


@final
@attrs.frozen
class Ping:
    """Both ways: liveness probe; the receiver answers PONG with the same data."""

    kind: ClassVar[FrameKind] = FrameKind.PING
    data: bytes = b""

    def _encode_body(self) -> bytes:
        return _enc_bytes(self.kind, "data", self.data, 0, MAX_PING_DATA)

    @classmethod
    def _decode_body(cls, body: memoryview) -> Ping:
        return cls(bytes(body))


@final
@attrs.frozen
class Pong:
    """Both ways: answer to PING, echoing its data."""

    kind: ClassVar[FrameKind] = FrameKind.PONG
    data: bytes = b""

    def _encode_body(self) -> bytes:
        return _enc_bytes(self.kind, "data", self.data, 0, MAX_PING_DATA)

    @classmethod
    def _decode_body(cls, body: memoryview) -> Pong:
        return cls(bytes(body))


@final
@attrs.frozen
class Error:
    """r→c: why the relay refuses or is about to close.

    ``code`` stays a plain int so a code added by a newer relay still decodes;
    :attr:`error_code` maps it to :class:`ErrorCode` when known.
    """

    kind: ClassVar[FrameKind] = FrameKind.ERROR
    code: int
    message: str

    @classmethod
    def from_code(cls, code: ErrorCode, message: str | None = None) -> Error:
        """An ERROR frame with the code's default sentence unless ``message`` is given."""
        return cls(int(code), code.sentence if message is None else message)

    @property
    def error_code(self) -> ErrorCode | None:
        """The known :class:`ErrorCode` for ``code``, or ``None`` for a code from the future."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None

    def _encode_body(self) -> bytes:
        code = _enc_uint(self.kind, "code", self.code, 0, _U16_MAX)
        return _U16.pack(code) + _enc_text(self.kind, "message", self.message)

    @classmethod
    def _decode_body(cls, body: memoryview) -> Error:
        (code,) = _U16.unpack_from(body)
        return cls(code, _dec_text(FrameKind.ERROR, "message", body, _U16.size))


@final
@attrs.frozen
class GoAway:
    """r→c: the relay will close this connection after ``grace_ms``; reconnect with backoff."""

    kind: ClassVar[FrameKind] = FrameKind.GOAWAY
    grace_ms: int
    reason: str = ""

    def _encode_body(self) -> bytes:
        grace = _enc_uint(self.kind, "grace_ms", self.grace_ms, 0, _U32_MAX)
        return _U32.pack(grace) + _enc_text(self.kind, "reason", self.reason)

    @classmethod
    def _decode_body(cls, body: memoryview) -> GoAway:
        (grace,) = _U32.unpack_from(body)
        return cls(grace, _dec_text(FrameKind.GOAWAY, "reason", body, _U32.size))


Frame: TypeAlias = (
    CreateRoom
    | RoomCreated
    | Join
    | Joined
    | PeerUp
    | PeerDown
    | Burn
    | Control
    | Bulk
    | Credit
    | Ping
    | Pong
    | Error
    | GoAway
)

_FRAME_CLASSES: Final = (
    CreateRoom,
    RoomCreated,
    Join,
    Joined,
    PeerUp,
    PeerDown,
    Burn,
    Control,
    Bulk,
    Credit,
    Ping,
    Pong,
    Error,
    GoAway,
)


def lane_of(frame: Frame) -> Lane:
    """The relay queue a frame goes to: BULK frames use the bulk lane, all else control."""
    return Lane.BULK if frame.kind is FrameKind.BULK else Lane.CONTROL
