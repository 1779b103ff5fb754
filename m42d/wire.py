"""Relay frames: the client <-> relay wire format, sans-IO.

This module turns frame values into bytes and bytes into frame values and
does nothing else: no sockets, no trio, no clocks.  The relay daemon, the
``m42`` client and the tests all drive the same code, and docs/protocol.md
(section "Relay wire format") is precise enough to reimplement it elsewhere.

Rules and invariants
--------------------

* Two framings carry the same frames.  On a message transport (WebSocket) one
  binary message is ``kind:u8 | body``: see :func:`encode` / :func:`decode`.
  On a byte stream (TCP+TLS, Unix socket) each frame is prefixed by
  ``length:u32`` big-endian, the number of bytes that follow (``1 +
  len(body)``): see :func:`encode_stream` / :class:`FrameDecoder`.
* Every kind has a body-length range (:data:`BODY_LIMITS`).  The range is
  checked as soon as the 5-byte stream header is buffered, so a peer can
  never make the decoder hold more than one legal frame plus one read.
* Decoding is total: any input either yields frames or raises
  :class:`~m42d.errors.WireError` (never ``IndexError``, ``struct.error`` or
  ``UnicodeDecodeError``).  After a ``WireError`` the :class:`FrameDecoder`
  is dead: every later call raises again, because the stream position is
  unknown and resynchronising would let a peer smuggle frames.
* Encoding validates with the same rules and raises
  :class:`~m42d.errors.LocalProtocolError`: a frame we cannot decode is a bug
  on our side, not the peer's.
* Error messages name the kind and the rule, never the bytes of a payload,
  token, ticket or secret; reprs hide tokens and secrets and show payloads
  only by length.
* Versions are carried, not judged: ``CREATE_ROOM``/``JOIN`` with a version
  other than :data:`WIRE_VERSION` still decode, so the relay can answer
  ``ERROR 415`` instead of ``ERROR 400``.
* Lanes: only ``BULK`` travels in the bulk lane; every other frame uses the
  control lane, which the relay's writer drains first.
* Forwarding: a relay passes CONTROL and BULK payloads on untouched, so
  :meth:`FrameDecoder.next_relayed` can hand them out as :class:`Relayed`:
  the frame's encoded bytes, checked against :data:`BODY_LIMITS` like any
  frame, but never parsed into a value and never encoded again.

Why this module is big (~950 lines): it is the relay wire format of
docs/protocol.md in one place -- every frame kind's value class, its
encoder and decoder, the body limits and the incremental decoder -- because
the kinds share one table (:data:`BODY_LIMITS`) and one set of field
codecs, and an implementer reads it side by side with the spec.  It has no
state beyond the decoder and no I/O; splitting it by kind would scatter one
table over a dozen files.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import ClassVar, Final, NoReturn, TypeAlias, final

import attrs

from m42d.errors import LocalProtocolError, RemoteProtocolError, WireError
from m42d.ticket import TICKET_SIZE, TOKEN_SIZE, Seat

__all__ = [
    "BODY_LIMITS",
    "ERROR_SENTENCES",
    "LENGTH_PREFIX_SIZE",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "MAX_PING_DATA",
    "MAX_SECRET",
    "MAX_TEXT",
    "WIRE_VERSION",
    "Bulk",
    "Burn",
    "Control",
    "CreateRoom",
    "Credit",
    "Error",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "FrameTooLargeError",
    "GoAway",
    "Join",
    "Joined",
    "Lane",
    "PeerDown",
    "PeerUp",
    "Ping",
    "Pong",
    "Relayed",
    "RoomCreated",
    "decode",
    "encode",
    "encode_stream",
    "error_code_for",
    "lane_of",
    "relayed_message",
]

WIRE_VERSION: Final = 1
"""Relay protocol version sent in CREATE_ROOM and JOIN; equals ``m42d.PROTOCOL_VERSION``."""

MAX_PAYLOAD: Final = 65536 + 64
"""Largest CONTROL/BULK payload: a 64 KiB file chunk plus room for AEAD tag and header."""

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


class FrameTooLargeError(WireError):
    """A declared frame length or a variable-size body exceeds its cap.

    Separate from plain :class:`WireError` so the relay can answer
    ``ERROR 413`` instead of ``ERROR 400``; see :func:`error_code_for`.
    """

    wire_code = 413  # TOO_LARGE


def error_code_for(exc: RemoteProtocolError) -> ErrorCode:
    """The ERROR code a relay sends for ``exc`` (its ``wire_code``, BAD_FRAME if unknown)."""
    try:
        return ErrorCode(exc.wire_code)
    except ValueError:  # pragma: no cover - every wire_code in the tree is an ErrorCode
        return ErrorCode.BAD_FRAME


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


def _payload_repr(payload: bytes) -> str:
    return f"<{len(payload)} bytes>"


# -- encoding helpers: validate like the decoder would, but blame ourselves --


def _enc_bytes(kind: FrameKind, field: str, value: object, lo: int, hi: int) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be bytes")
    n = len(value)
    if not lo <= n <= hi:
        rule = f"{lo} bytes" if lo == hi else f"{lo}..{hi} bytes"
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be {rule}, got {n}")
    return bytes(value)


def _enc_uint(kind: FrameKind, field: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be an int in {lo}..{hi}")
    return value


def _enc_text(kind: FrameKind, field: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be str")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} is not valid UTF-8") from exc
    if len(raw) > MAX_TEXT:
        raise LocalProtocolError(
            f"cannot encode {kind.name}: {field} must be at most {MAX_TEXT} UTF-8 bytes, "
            f"got {len(raw)}"
        )
    return raw


def _dec_text(kind: FrameKind, field: str, body: memoryview, start: int) -> str:
    with body[start:] as view:
        try:
            return str(view, "utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{kind.name} {field} is not valid UTF-8") from exc


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

_DECODERS: Final[dict[int, Callable[[memoryview], Frame]]] = {
    int(cls.kind): cls._decode_body for cls in _FRAME_CLASSES
}
_KIND_BYTE: Final[dict[FrameKind, bytes]] = {kind: bytes((kind,)) for kind in FrameKind}

assert set(_DECODERS) == set(_LIMITS_BY_BYTE) == {int(k) for k in FrameKind}


def _encode_body(frame: Frame) -> bytes:
    if not isinstance(frame, _FRAME_CLASSES):
        raise LocalProtocolError(f"cannot encode {type(frame).__name__}: not a relay frame")
    return frame._encode_body()


def encode(frame: Frame) -> bytes:
    """Message form (WebSocket): ``kind:u8 | body``.

    Raises:
        LocalProtocolError: the frame breaks a rule the peer's decoder enforces.
    """
    body = _encode_body(frame)
    return _KIND_BYTE[frame.kind] + body


def encode_stream(frame: Frame) -> bytes:
    """Stream form (TCP+TLS, Unix socket): ``length:u32 | kind:u8 | body``.

    Raises:
        LocalProtocolError: the frame breaks a rule the peer's decoder enforces.
    """
    body = _encode_body(frame)
    return _STREAM_HEADER.pack(1 + len(body), frame.kind) + body


def decode(message: bytes | bytearray | memoryview) -> Frame:
    """Decode one whole message (message form: ``kind:u8 | body``).

    Raises:
        WireError: the message is empty, of an unknown kind or breaks a body rule.
    """
    with memoryview(message) as whole:
        if whole.ndim != 1 or whole.itemsize != 1:
            with whole.cast("B") as flat:
                return _decode_message_view(flat)
        return _decode_message_view(whole)


def _decode_message_view(view: memoryview) -> Frame:
    if len(view) == 0:
        raise WireError("empty message: a frame needs at least a kind byte")
    kind_byte = view[0]
    with view[1:] as body:
        _check_body_length(kind_byte, len(body))
        return _DECODERS[kind_byte](body)


def lane_of(frame: Frame) -> Lane:
    """The relay queue a frame goes to: BULK frames use the bulk lane, all else control."""
    return Lane.BULK if frame.kind is FrameKind.BULK else Lane.CONTROL


_CONTROL_BYTE: Final = int(FrameKind.CONTROL)
_BULK_BYTE: Final = int(FrameKind.BULK)
_FORWARDED: Final = frozenset({_CONTROL_BYTE, _BULK_BYTE})


@final
class Relayed:
    """A CONTROL or BULK frame kept in its encoded form, for a relay to pass on.

    ``data[start:]`` is the message form (``kind:u8 | payload``).  With
    ``start == 4`` the four bytes before it are the stream form's length
    prefix, so a stream writer sends ``data`` as is and a message writer
    sends ``data[4:]``.  The relay never looks inside the payload (it is
    end-to-end ciphertext), so skipping the decode and the re-encode saves
    a copy, an object and a validation per frame: this is the relay's hot
    path, hence ``__slots__`` and no attrs machinery.

    Build it only from bytes whose body length already passed
    :data:`BODY_LIMITS` (:meth:`FrameDecoder.next_relayed`,
    :func:`relayed_message`); :meth:`frame` decodes it when a transport
    needs a frame value after all.
    """

    __slots__ = ("bulk", "data", "size", "start")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start
        self.bulk = data[start] == _BULK_BYTE
        self.size = len(data) - start - 1
        """Payload length: what a BULK costs in credit."""

    def __repr__(self) -> str:
        kind = "BULK" if self.bulk else "CONTROL"
        return f"<Relayed {kind} <{self.size} bytes>>"

    @property
    def kind(self) -> FrameKind:
        return FrameKind.BULK if self.bulk else FrameKind.CONTROL

    def stream_bytes(self) -> bytes:
        """The stream form, ``length:u32 | kind | payload``."""
        if self.start == LENGTH_PREFIX_SIZE:
            return self.data
        return _U32.pack(len(self.data) - self.start) + self.data[self.start :]

    def message_bytes(self) -> bytes:
        """The message form, ``kind | payload``."""
        return self.data if self.start == 0 else self.data[self.start :]

    def frame(self) -> Control | Bulk:
        """The frame value (decodes the payload into a new object)."""
        with memoryview(self.data) as whole, whole[self.start + 1 :] as body:
            return Bulk(bytes(body)) if self.bulk else Control(bytes(body))


def relayed_message(message: bytes) -> Frame | Relayed:
    """Like :func:`decode`, but CONTROL and BULK come back as :class:`Relayed` (no copy).

    Raises:
        WireError: the message is empty, of an unknown kind or breaks a body rule.
    """
    if message and message[0] in _FORWARDED:
        _check_body_length(message[0], len(message) - 1)
        return Relayed(message, 0)
    return decode(message)


def _check_decoder_limits(max_frame: int, max_buffer: int) -> None:
    if max_frame < 1:
        raise LocalProtocolError("FrameDecoder max_frame must be at least 1")
    if max_buffer < LENGTH_PREFIX_SIZE + max_frame:
        raise LocalProtocolError("FrameDecoder max_buffer must hold one whole frame of max_frame")


def _validate_limits(decoder: FrameDecoder, _: attrs.Attribute[int], value: int) -> None:
    _check_decoder_limits(decoder.max_frame, decoder.max_buffer)


@final
@attrs.define(on_setattr=attrs.setters.NO_OP)
class FrameDecoder:
    """Incremental decoder for the stream form, in the style of h11/wsproto.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_frame` until it
    returns ``None`` (or iterate).  Bytes live in one ``bytearray`` read from
    an offset; consumed bytes are dropped in bulk when new data arrives, so a
    stream of 64 KiB frames costs one copy into the buffer and one copy out
    into each payload, never a quadratic reshuffle.

    Memory is bounded by ``max_buffer``: a caller that drains after every
    :meth:`receive_data` holds at most one partial frame plus one read, so
    reads must not exceed ``max_buffer - (4 + max_frame)`` bytes (64 KiB
    reads fit the default with room to spare).

    ``max_frame`` may be lowered or raised between frames (a relay might keep
    it small until JOIN succeeds); the per-kind body limits apply regardless.
    """

    # The limits are checked when set through the properties below, and the
    # class has no attrs setattr hooks: a hooked __setattr__ on ``_pos``
    # cost ~0.3 us per frame (~5% of the relay's CPU for small messages).
    _max_frame: int = attrs.field(
        default=MAX_FRAME, kw_only=True, alias="max_frame", validator=_validate_limits
    )
    _max_buffer: int = attrs.field(
        default=4 * (LENGTH_PREFIX_SIZE + MAX_FRAME),
        kw_only=True,
        alias="max_buffer",
        validator=_validate_limits,
    )
    _buf: bytearray = attrs.field(factory=bytearray, init=False, repr=False)
    _pos: int = attrs.field(default=0, init=False, repr=False)
    _failure: WireError | None = attrs.field(default=None, init=False, repr=False)

    @property
    def max_frame(self) -> int:
        """Cap on the length prefix; may change between frames."""
        return self._max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        _check_decoder_limits(value, self._max_buffer)
        self._max_frame = value

    @property
    def max_buffer(self) -> int:
        """Cap on buffered bytes: one whole frame of ``max_frame`` plus one read."""
        return self._max_buffer

    @max_buffer.setter
    def max_buffer(self, value: int) -> None:
        _check_decoder_limits(self._max_frame, value)
        self._max_buffer = value

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the stream.

        Raises:
            WireError: the decoder already failed, or holding ``data`` would
                exceed ``max_buffer`` (the caller is not draining, or the peer
                floods faster than frames can be parsed).
        """
        self._raise_if_failed()
        size = len(data) if isinstance(data, bytes | bytearray) else memoryview(data).nbytes
        if not size:
            return
        buf = self._buf
        if self._pos:
            # Compact: drop consumed bytes.  Only a partial frame remains.
            del buf[: self._pos]
            self._pos = 0
        if len(buf) + size > self._max_buffer:
            self._fail(WireError(f"receive buffer would exceed {self._max_buffer} bytes"))
        buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or ``None`` when more bytes are needed.

        A bad length prefix or kind is reported as soon as the 5-byte header
        is buffered, before any of the body arrives.

        Raises:
            WireError: malformed input; the decoder is unusable afterwards.
        """
        item = self._next(False)
        assert not isinstance(item, Relayed)
        return item

    def next_relayed(self) -> Frame | Relayed | None:
        """Like :meth:`next_frame`, but CONTROL and BULK come out as :class:`Relayed`.

        Raises:
            WireError: malformed input; the decoder is unusable afterwards.
        """
        return self._next(True)

    def _next(self, relay: bool) -> Frame | Relayed | None:
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < LENGTH_PREFIX_SIZE:
            return None
        (length,) = _U32.unpack_from(buf, pos)
        if length == 0:
            self._fail(WireError("frame length 0 is invalid: a frame has at least a kind byte"))
        if length > self._max_frame:
            self._fail(
                FrameTooLargeError(f"declared frame length {length} exceeds cap {self._max_frame}")
            )
        if available <= LENGTH_PREFIX_SIZE:
            return None
        kind_byte = buf[pos + LENGTH_PREFIX_SIZE]
        try:
            _check_body_length(kind_byte, length - 1)
        except WireError as exc:
            self._fail(exc)
        end = pos + LENGTH_PREFIX_SIZE + length
        if len(buf) < end:
            return None
        frame: Frame | Relayed
        if relay and kind_byte in _FORWARDED:
            # One copy out of the buffer, prefix included: forwarded as is.
            # Small frames: slicing (two copies) beats making a memoryview.
            if length < 4096:
                frame = Relayed(bytes(buf[pos:end]), LENGTH_PREFIX_SIZE)
            else:
                with memoryview(buf) as whole, whole[pos:end] as raw:
                    frame = Relayed(bytes(raw), LENGTH_PREFIX_SIZE)
        else:
            try:
                with memoryview(buf) as whole, whole[pos + LENGTH_PREFIX_SIZE + 1 : end] as body:
                    frame = _DECODERS[kind_byte](body)
            except WireError as exc:
                self._fail(exc)
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return frame

    def frames(self) -> Iterator[Frame]:
        """Drain every complete frame currently buffered."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def eof(self) -> None:
        """Declare the stream ended; an unfinished frame is an error.

        Raises:
            WireError: the decoder already failed, or a partial frame is buffered.
        """
        self._raise_if_failed()
        if self.buffered:
            self._fail(WireError("connection closed mid-frame"))

    def _fail(self, exc: WireError) -> NoReturn:
        # Drop the buffer rather than resize it: a traceback may still hold a
        # view of it, and its contents are worthless once framing is lost.
        self._failure = exc
        self._buf = bytearray()
        self._pos = 0
        raise exc

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(f"decoder already failed: {self._failure}")
