"""The bytes two m42 clients exchange: envelopes, records and record bodies.

docs/protocol.md, "End-to-end session", is the normative text; this module
is its byte layouts and nothing else.  Every function is pure: no keys, no
state, no clock.  Encoders take values and return bytes; decoders take
bytes from the peer and either return values or raise
:class:`SessionError` with a message that names the record, which the
machine reports as the reason its session failed.

* A CONTROL payload is an envelope byte and what follows it (HS1..HS3 with
  a handshake id, DATA with one sealed record, RESET with an id and a
  reason).
* A record, before sealing, is ``type:u8 | length:u16 | body | zero padding``
  to the next multiple of 256 bytes, so that the relay learns little from
  sizes; :func:`decode_record` refuses non-zero padding.
* A BULK payload is ``file_id:u64 | index:u64 | STREAM chunk``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Final

import attrs

from m42d.errors import LocalProtocolError, RemoteProtocolError

SESSION_VERSION: Final = 3
"""Version of the end-to-end session (docs/protocol.md); the relay's wire version is separate."""

PAD_BUCKET: Final = 256
MAX_NOISE_PLAINTEXT: Final = 65535 - 16
MAX_RECORD: Final = (MAX_NOISE_PLAINTEXT // PAD_BUCKET) * PAD_BUCKET  # 65280
RECORD_HEADER: Final = struct.Struct(">BH")  # type, body length
MAX_RECORD_BODY: Final = MAX_RECORD - RECORD_HEADER.size  # 65277

MAX_TEXT: Final = 1024 * 1024  # the protocol's cap on one text, in UTF-8 bytes
DEFAULT_MAX_TEXT: Final = MAX_TEXT
TEXT_HEADER: Final = struct.Struct(">QB")  # seq, flags
TEXT_FINAL: Final = 0x01
TEXT_PART: Final = MAX_RECORD_BODY - TEXT_HEADER.size
MAX_REASON: Final = 512  # bytes of UTF-8 in a TEXT_REFUSED, FILE_REJECT or FILE_CANCEL

BULK_HEADER: Final = struct.Struct(">QQ")  # file id, chunk index
MAX_FILE_NAME: Final = 1024

HS_ID: Final = struct.Struct(">I")  # handshake id chosen by A in HS1, echoed in HS2/HS3
HS_FRESH: Final = 0  # HS1/HS2 payload: a new session (unacked items are re-sent)
HS_RENEW: Final = 1  # HS1/HS2 payload: new keys for a live session (nothing was lost)
HS_PAYLOAD: Final = struct.Struct(">BB")  # HS1/HS2 payload: fresh/renew, session version
RESET_BODY: Final = struct.Struct(">IB")  # RESET: the id it names, why

HELLO_BODY: Final = struct.Struct(">QQQ")  # instance, records on the old keys, first unacked
OFFER_HEADER: Final = struct.Struct(">QQ32s32sH")  # file id, size, file key, salt, name length
U64: Final = struct.Struct(">Q")
ID_INDEX: Final = struct.Struct(">QQ")  # FILE_ACCEPT, FILE_ACK: file id, chunk index
ID_CODE: Final = struct.Struct(">QH")  # FILE_REJECT, FILE_CANCEL: file id, code


class Envelope(enum.IntEnum):
    """First byte of every CONTROL payload: which Noise message follows."""

    HS1 = 1
    HS2 = 2
    HS3 = 3
    DATA = 4
    RESET = 5  # B -> A: "my session broke, start a fresh handshake" (RESET_BODY)


class RecordType(enum.IntEnum):
    """Type of a decrypted control record."""

    HELLO = 0x01
    TEXT = 0x02
    ACK = 0x03
    REHANDSHAKE = 0x04
    PING = 0x05
    PONG = 0x06
    TEXT_REFUSED = 0x07  # protocol 2: "this text cannot be shown", instead of its ACK
    FILE_OFFER = 0x10
    FILE_ACCEPT = 0x11
    FILE_REJECT = 0x12
    FILE_ACK = 0x13
    FILE_DONE = 0x14
    FILE_CANCEL = 0x15


class FileCode(enum.IntEnum):
    """Why a file was rejected or cancelled; stable numbers on the wire."""

    DECLINED = 1
    TOO_LARGE = 2
    NO_SPACE = 3
    MISMATCH = 4  # the data did not match the offer (protocol 1 called it "hash mismatch")
    CANCELLED = 5
    WRITE_FAILED = 6
    BAD_NAME = 7


class ResetReason(enum.IntEnum):
    """Why B's session broke, sent in RESET so that A can say it too (unauthenticated)."""

    UNSPECIFIED = 0
    AUTHENTICATION = 1  # HS3 failed: the room secrets differ, or someone is in the middle
    VERSION = 2  # the initiator speaks another session version


class SessionError(RemoteProtocolError):
    """The peer (or the relay between us) broke the end-to-end protocol."""


class VersionMismatch(SessionError):
    """The peer's handshake names another session version (RESET reason 2)."""


RecordSender = Callable[[RecordType, bytes], None]
"""Where a part of the machine hands a record body to be sealed (or held) and sent."""


# -- records ---------------------------------------------------------------------------


def encode_record(rtype: RecordType, body: bytes) -> bytes:
    """Frame and pad one control record (before Noise encryption)."""
    if len(body) > MAX_RECORD_BODY:
        raise LocalProtocolError(f"control record body of {len(body)} bytes exceeds the cap")
    raw = RECORD_HEADER.pack(rtype, len(body)) + body
    padded = -(-len(raw) // PAD_BUCKET) * PAD_BUCKET
    return raw + bytes(padded - len(raw))


def decode_record(plaintext: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_record`; the padding must be zeros."""
    if len(plaintext) < RECORD_HEADER.size or len(plaintext) % PAD_BUCKET:
        raise SessionError("control record has a bad length")
    rtype, length = RECORD_HEADER.unpack_from(plaintext)
    end = RECORD_HEADER.size + length
    if end > len(plaintext) or any(plaintext[end:]):
        raise SessionError("control record has a bad length or padding")
    return rtype, plaintext[RECORD_HEADER.size : end]


def decode_fixed(st: struct.Struct, body: bytes, name: str) -> tuple[int, ...]:
    """A body of exactly ``st``'s size (ACK, FILE_ACCEPT, FILE_ACK, FILE_DONE)."""
    if len(body) != st.size:
        raise SessionError(f"{name} record has a bad length")
    return st.unpack(body)


# -- the handshake's payloads ----------------------------------------------------------


def hs_payload(renew: bool) -> bytes:
    """The HS1/HS2 Noise payload: fresh or renew, and our session version."""
    return HS_PAYLOAD.pack(HS_RENEW if renew else HS_FRESH, SESSION_VERSION)


def decode_hs_payload(payload: bytes, which: str) -> bool:
    """The renew flag of a HS1/HS2 payload.

    Raises:
        VersionMismatch: the peer speaks another session version (a one-byte
            payload is protocol 1's).
        SessionError: the payload is malformed.
    """
    if len(payload) == 1 and payload[0] in (HS_FRESH, HS_RENEW):
        raise VersionMismatch(
            f"the other person's m42 speaks session protocol 1, this one {SESSION_VERSION}: "
            "both need the same m42 version"
        )
    if len(payload) != HS_PAYLOAD.size:
        raise SessionError(f"handshake message {which} has a bad payload")
    flag: int
    version: int
    flag, version = HS_PAYLOAD.unpack(payload)
    if version != SESSION_VERSION:
        raise VersionMismatch(
            f"the other person's m42 speaks session protocol {version}, this one "
            f"{SESSION_VERSION}: both need the same m42 version"
        )
    if flag not in (HS_FRESH, HS_RENEW):
        raise SessionError(f"handshake message {which} has a bad payload")
    return flag == HS_RENEW


@attrs.frozen
class Hello:
    """The HELLO body: who is numbering texts, and what the peer may forget.

    ``instance`` names the sender's text numbering, ``old_count`` is (when
    renewing) the number of records it sent on the old keys, and
    ``first_unacked`` the lowest text seq it still waits an ACK for.
    """

    instance: int
    old_count: int
    first_unacked: int

    def encode(self) -> bytes:
        """The padded HELLO record (HS3's payload, or B's first record on new keys)."""
        body = HELLO_BODY.pack(self.instance, self.old_count, self.first_unacked)
        return encode_record(RecordType.HELLO, body)


def decode_hello(body: bytes) -> Hello:
    """A HELLO record's body."""
    if len(body) != HELLO_BODY.size:
        raise SessionError("HELLO has a bad length")
    instance, old_count, first_unacked = HELLO_BODY.unpack(body)
    if first_unacked < 1:
        raise SessionError("HELLO names seq 0")
    return Hello(instance, old_count, first_unacked)


def decode_hs3_payload(plaintext: bytes) -> Hello:
    """HS3's Noise payload: A's padded HELLO record."""
    rtype, body = decode_record(plaintext)
    if rtype != RecordType.HELLO:
        raise SessionError("handshake message 3 carries no HELLO")
    return decode_hello(body)


def handshake_message(envelope: Envelope, hs_id: int, message: bytes) -> bytes:
    """The CONTROL payload carrying one Noise handshake message."""
    return bytes([envelope]) + HS_ID.pack(hs_id) + message


def reset_message(named: int, why: int) -> bytes:
    """The CONTROL payload of a RESET naming a session or handshake id."""
    return bytes([Envelope.RESET]) + RESET_BODY.pack(named, why)


# -- texts -----------------------------------------------------------------------------


def text_bodies(seq: int, data: bytes) -> list[bytes]:
    """The TEXT record bodies of one text: parts of at most TEXT_PART bytes, the last final."""
    parts = [data[i : i + TEXT_PART] for i in range(0, len(data), TEXT_PART)] or [b""]
    last = len(parts) - 1
    return [TEXT_HEADER.pack(seq, TEXT_FINAL if i == last else 0) + p for i, p in enumerate(parts)]


def decode_text(body: bytes) -> tuple[int, bool, bytes]:
    """A TEXT body: (seq, final part?, the UTF-8 bytes of this part)."""
    if len(body) < TEXT_HEADER.size:
        raise SessionError("TEXT record too short")
    seq, flags = TEXT_HEADER.unpack_from(body)
    return seq, bool(flags & TEXT_FINAL), body[TEXT_HEADER.size :]


def text_refused_body(seq: int, reason: str) -> bytes:
    return U64.pack(seq) + reason.encode()[:MAX_REASON]


def decode_text_refused(body: bytes) -> tuple[int, str]:
    if len(body) < U64.size:
        raise SessionError("TEXT_REFUSED record too short")
    (seq,) = U64.unpack_from(body)
    return seq, body[U64.size :].decode("utf-8", errors="replace")


# -- files -----------------------------------------------------------------------------


@attrs.frozen
class Offer:
    """A FILE_OFFER body: the file's id, size, STREAM key and salt, and name."""

    file_id: int
    size: int
    key: bytes = attrs.field(repr=False)
    salt: bytes = attrs.field(repr=False)
    name: str

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        head = OFFER_HEADER.pack(self.file_id, self.size, self.key, self.salt, len(name))
        return head + name


def decode_offer(body: bytes) -> Offer:
    if len(body) < OFFER_HEADER.size:
        raise SessionError("FILE_OFFER record too short")
    file_id, size, key, salt, name_len = OFFER_HEADER.unpack_from(body)
    raw_name = body[OFFER_HEADER.size :]
    if len(raw_name) != name_len or not 0 < name_len <= MAX_FILE_NAME:
        raise SessionError("FILE_OFFER has a bad name length")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise SessionError("FILE_OFFER name is not valid UTF-8") from None
    return Offer(file_id, size, key, salt, name)


def reason_body(file_id: int, code: int, reason: str) -> bytes:
    """A FILE_REJECT or FILE_CANCEL body; the reason is cut to MAX_REASON bytes."""
    return ID_CODE.pack(file_id, int(code)) + reason.encode("utf-8")[:MAX_REASON]


def decode_reason(body: bytes) -> tuple[int, int, str]:
    """A FILE_REJECT or FILE_CANCEL body: (file id, code, reason)."""
    if len(body) < ID_CODE.size:
        raise SessionError("FILE_REJECT/FILE_CANCEL record too short")
    file_id, code = ID_CODE.unpack_from(body)
    return file_id, code, body[ID_CODE.size :].decode("utf-8", errors="replace")


def code_text(code: int) -> str:
    """A file code in words, for a reject or cancel that came without a reason."""
    try:
        return FileCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"code {code}"
