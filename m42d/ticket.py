"""Room tickets and seat tokens: stateless admission to a room.

The relay keeps nothing per room.  When a client asks for a room, the relay
mints a *ticket* (random room id + expiry, authenticated with the relay's own
HMAC key) and derives one *seat token* per seat from it.  Later, any relay
node holding the same key accepts ``JOIN(ticket, seat, token)`` by
recomputing the MACs, so a restart or a second node needs no shared state.

Byte layouts (normative text in ``docs/protocol.md``, section "Links and
tickets")::

    ticket (42) = version:u8 (=1) | key_id:u8 | room_id:16 | expires:u64be | mac:16
    mac         = HMAC-SHA256(key, "m42d ticket v1" || ticket[0:26])[:16]
    token (16)  = HMAC-SHA256(key, "m42d seat token v1" || seat:u8 || ticket[0:42])[:16]

A ticket is valid up to and including the second ``expires``: it is expired
when ``now > expires``.

Verification order is fixed so that every failure maps to one error class:
structure (:class:`MalformedTicket`), key id (:class:`UnknownTicketKey`),
ticket MAC (:class:`BadTicketMac`), seat token (:class:`BadSeatToken`), then
expiry (:class:`TicketExpired`).  Time is checked last, after both MACs, so
nothing unauthenticated is trusted and a party without the token learns
nothing from the relay beyond "bad token".

Keys, MACs and tokens never appear in a repr or an error message.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final, final

import attrs

from m42d.errors import ConfigError, TicketError

TICKET_SIZE = 42
TOKEN_SIZE = 16
ROOM_ID_SIZE = 16

TICKET_VERSION: Final = 1
"""The only ticket layout this code mints and accepts."""

MAC_SIZE: Final = 16
SIGNED_SIZE: Final = TICKET_SIZE - MAC_SIZE  # 26: the bytes the ticket MAC covers
MIN_KEY_SIZE: Final = 32
"""HMAC keys shorter than the SHA-256 output would be the weakest link."""

MAX_EXPIRES: Final = 2**64 - 1

TICKET_MAC_LABEL: Final = b"m42d ticket v1"
SEAT_TOKEN_LABEL: Final = b"m42d seat token v1"

_HEADER = struct.Struct(">BB16sQ")  # version, key_id, room_id, expires: 26 bytes
assert _HEADER.size == SIGNED_SIZE

KEYRING_FORMAT: Final = "m42d-ticket-keys"
KEYRING_FORMAT_VERSION: Final = 1


class Seat(enum.Enum):
    """One of the two places in a room; A created it and initiates the handshake."""

    A = "A"
    B = "B"

    @property
    def other(self) -> Seat:
        return Seat.B if self is Seat.A else Seat.A

    @property
    def byte(self) -> int:
        """Wire value: the ASCII code of the letter."""
        return ord(self.value)

    @classmethod
    def parse(cls, value: str | int) -> Seat:
        """Read a seat from user input (``"A"``, ``"b"``) or a wire byte (``0x41``).

        Lenient on letter case because it serves command lines; the link and
        wire decoders are strict and do their own checks.

        Raises:
            ValueError: anything else.
        """
        if isinstance(value, str):
            if value in ("A", "a"):
                return cls.A
            if value in ("B", "b"):
                return cls.B
        elif isinstance(value, int) and not isinstance(value, bool):
            if value == 0x41:
                return cls.A
            if value == 0x42:
                return cls.B
        raise ValueError("seat must be A or B")


class MalformedTicket(TicketError):
    """The ticket bytes do not have the version-1 layout (length or version)."""

    wire_code = 400  # BAD_FRAME


class UnknownTicketKey(TicketError):
    """The ticket names a key id this relay does not hold (rotated out or foreign)."""

    wire_code = 404  # UNKNOWN_ROOM: a foreign ticket is a room this relay never made


class BadTicketMac(TicketError):
    """The ticket's MAC does not verify: it was forged or altered."""

    wire_code = 404  # UNKNOWN_ROOM: a forger learns nothing a mistyped id would not tell


class BadSeatToken(TicketError):
    """The seat token does not belong to this ticket and seat."""

    wire_code = 401  # BAD_TOKEN


class TicketExpired(TicketError):
    """The ticket was genuine but its expiry time has passed."""

    wire_code = 410  # EXPIRED


class KeyRingError(ConfigError):
    """The relay's ticket keys are unusable: a bad key, id or state file."""


def _check_u8(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be 0..255, got {value}")


def _validate_ticket(inst: Ticket, _attr: Any, _value: Any) -> None:
    _check_u8("ticket version", inst.version)
    _check_u8("ticket key id", inst.key_id)
    if len(inst.room_id) != ROOM_ID_SIZE:
        raise ValueError(f"room id must be {ROOM_ID_SIZE} bytes, got {len(inst.room_id)}")
    if not 0 <= inst.expires <= MAX_EXPIRES:
        raise ValueError("ticket expiry must fit an unsigned 64-bit integer")
    if len(inst.mac) != MAC_SIZE:
        raise ValueError(f"ticket mac must be {MAC_SIZE} bytes, got {len(inst.mac)}")


@final
@attrs.frozen
class Ticket:
    """A decoded ticket.  Not secret: the relay reads it and the link carries it.

    Constructing one checks only field ranges (a caller bug raises
    :class:`ValueError`); :meth:`parse` is the door for untrusted bytes.
    Neither proves authenticity: that is :meth:`TicketKeyRing.verify`.
    """

    version: int
    key_id: int
    room_id: bytes = attrs.field(repr=lambda value: f"'{value.hex()}'")
    expires: int
    mac: bytes = attrs.field(validator=_validate_ticket, repr=lambda value: f"'{value.hex()}'")

    @classmethod
    def parse(cls, data: bytes) -> Ticket:
        """Decode the structure of a ticket; no key needed (clients read the room id).

        Raises:
            MalformedTicket: wrong length or an unknown version.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("ticket must be bytes")
        data = bytes(data)
        if len(data) != TICKET_SIZE:
            raise MalformedTicket(f"ticket must be {TICKET_SIZE} bytes, got {len(data)}")
        version, key_id, room_id, expires = _HEADER.unpack_from(data)
        if version != TICKET_VERSION:
            raise MalformedTicket(f"unsupported ticket version {version}")
        return cls(version, key_id, room_id, expires, data[SIGNED_SIZE:])

    @property
    def signed_part(self) -> bytes:
        """The 26 bytes the ticket MAC covers."""
        return _HEADER.pack(self.version, self.key_id, self.room_id, self.expires)

    def to_bytes(self) -> bytes:
        return self.signed_part + self.mac

    def is_expired(self, now: int) -> bool:
        """True once ``now`` (unix seconds) is past the last valid second."""
        return now > self.expires


def ticket_mac(key: bytes, signed_part: bytes) -> bytes:
    """The 16-byte ticket MAC over the first 26 ticket bytes."""
    return hmac.new(key, TICKET_MAC_LABEL + signed_part, hashlib.sha256).digest()[:MAC_SIZE]


def seat_token(key: bytes, ticket: bytes, seat: Seat) -> bytes:
    """The 16-byte token admitting ``seat`` with the full 42-byte ``ticket``."""
    msg = SEAT_TOKEN_LABEL + bytes([seat.byte]) + ticket
    return hmac.new(key, msg, hashlib.sha256).digest()[:TOKEN_SIZE]


@final
@attrs.frozen
class IssuedRoom:
    """What minting a room yields: the ticket and both seats' tokens."""

    ticket: Ticket
    token_a: bytes = attrs.field(repr=False)
    token_b: bytes = attrs.field(repr=False)

    @property
    def room_id(self) -> bytes:
        return self.ticket.room_id

    def token(self, seat: Seat) -> bytes:
        return self.token_a if seat is Seat.A else self.token_b


_KEY_ID_TEXT = re.compile(r"0|[1-9][0-9]{0,2}")
_HEX_TEXT = re.compile(r"(?:[0-9a-f]{2})+")


@final
class TicketKeyRing:
    """The relay's HMAC keys, by one-byte id; ``current`` mints, all verify.

    Rotation: :meth:`rotate` adds a fresh key and makes it current; tickets
    minted under older keys keep verifying until :meth:`remove` drops them
    (after the longest ticket lifetime has passed).  The ring is mutable
    because the daemon rotates it in place; persist it with :meth:`to_json`.
    """

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Mapping[int, bytes], current: int) -> None:
        """Raises :class:`KeyRingError` for short keys, bad ids or a missing current id."""
        self._keys: dict[int, bytes] = {}
        for key_id, key in keys.items():
            self._check_new(key_id, key)
            self._keys[key_id] = bytes(key)
        if current not in self._keys:
            raise KeyRingError(f"current ticket key id {current} is not in the key ring")
        self._current = current

    @classmethod
    def generate(cls) -> TicketKeyRing:
        """A ring with one fresh random key (id 0), for a relay's first start."""
        return cls({0: secrets.token_bytes(MIN_KEY_SIZE)}, current=0)

    def __repr__(self) -> str:
        return f"TicketKeyRing(key_ids={list(self.key_ids)}, current={self._current})"

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[int]:
        return iter(self.key_ids)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    @property
    def current(self) -> int:
        """Id of the key that mints new tickets."""
        return self._current

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    # -- key management ---------------------------------------------------

    def _check_new(self, key_id: int, key: bytes) -> None:
        if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id <= 0xFF:
            raise KeyRingError(f"ticket key id must be an integer 0..255, got {key_id!r}")
        if not isinstance(key, bytes | bytearray | memoryview):
            raise KeyRingError(f"ticket key {key_id} must be bytes")
        if len(key) < MIN_KEY_SIZE:
            raise KeyRingError(
                f"ticket key {key_id} is {len(key)} bytes, must be at least {MIN_KEY_SIZE}"
            )

    def add(self, key_id: int, key: bytes, *, make_current: bool = False) -> None:
        """Add a key (e.g. one shared with other relay nodes)."""
        self._check_new(key_id, key)
        if key_id in self._keys:
            raise KeyRingError(f"ticket key id {key_id} is already in use")
        self._keys[key_id] = bytes(key)
        if make_current:
            self._current = key_id

    def set_current(self, key_id: int) -> None:
        if key_id not in self._keys:
            raise KeyRingError(f"ticket key id {key_id} is not in the key ring")
        self._current = key_id

    def rotate(self) -> int:
        """Add a fresh random key under the next free id, make it current, return its id.

        The id after the current one is taken (wrapping at 256) so that ids
        keep increasing in the common case and an old ticket's id is reused
        as late as possible.
        """
        for step in range(1, 257):
            key_id = (self._current + step) % 256
            if key_id not in self._keys:
                self.add(key_id, secrets.token_bytes(MIN_KEY_SIZE), make_current=True)
                return key_id
        raise KeyRingError("all 256 ticket key ids are in use; remove old keys first")

    def remove(self, key_id: int) -> None:
        """Forget a key: tickets minted under it now fail with :class:`UnknownTicketKey`."""
        if key_id not in self._keys:
            raise KeyRingError(f"ticket key id {key_id} is not in the key ring")
        if key_id == self._current:
            raise KeyRingError(f"ticket key id {key_id} is current and cannot be removed")
        del self._keys[key_id]

    # -- minting and verifying ---------------------------------------------

    def mint(self, *, now: int, ttl: int, room_id: bytes | None = None) -> IssuedRoom:
        """Issue a room valid from ``now`` through ``now + ttl`` (unix seconds).

        ``room_id`` is for tests and known-answer vectors; normally it is
        drawn at random, which is what makes room ids unguessable.

        Raises:
            ValueError: negative time, non-positive ttl, expiry beyond u64,
                or a room id that is not 16 bytes.
        """
        if now < 0:
            raise ValueError("now must not be negative")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        expires = now + ttl
        if expires > MAX_EXPIRES:
            raise ValueError("ticket expiry must fit an unsigned 64-bit integer")
        if room_id is None:
            room_id = secrets.token_bytes(ROOM_ID_SIZE)
        elif len(room_id) != ROOM_ID_SIZE:
            raise ValueError(f"room id must be {ROOM_ID_SIZE} bytes, got {len(room_id)}")
        key = self._keys[self._current]
        signed = _HEADER.pack(TICKET_VERSION, self._current, bytes(room_id), expires)
        raw = signed + ticket_mac(key, signed)
        ticket = Ticket.parse(raw)
        return IssuedRoom(ticket, seat_token(key, raw, Seat.A), seat_token(key, raw, Seat.B))

    def verify(self, ticket: bytes, seat: Seat, token: bytes, *, now: int) -> Ticket:
        """Admit ``seat`` to the ticket's room, or say precisely why not.

        Both MAC comparisons use :func:`hmac.compare_digest`.

        Raises:
            MalformedTicket, UnknownTicketKey, BadTicketMac, BadSeatToken,
            TicketExpired: checked in that order.
        """
        raw = bytes(ticket)
        parsed = Ticket.parse(raw)
        key = self._keys.get(parsed.key_id)
        if key is None:
            raise UnknownTicketKey(f"ticket key id {parsed.key_id} is unknown to this relay")
        if not hmac.compare_digest(ticket_mac(key, raw[:SIGNED_SIZE]), parsed.mac):
            raise BadTicketMac("ticket authentication failed")
        if not hmac.compare_digest(seat_token(key, raw, seat), bytes(token)):
            raise BadSeatToken(f"seat token does not match the ticket for seat {seat.value}")
        if parsed.is_expired(now):
            raise TicketExpired("ticket has expired")
        return parsed

    # -- persistence ---------------------------------------------------------

    def to_json(self) -> str:
        """Serialise for the state directory (contains the keys: write it mode 0600)."""
        doc = {
            "format": KEYRING_FORMAT,
            "version": KEYRING_FORMAT_VERSION,
            "current": self._current,
            "keys": {str(key_id): self._keys[key_id].hex() for key_id in self.key_ids},
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> TicketKeyRing:
        """Load what :meth:`to_json` wrote; any deviation raises :class:`KeyRingError`."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyRingError("ticket key file is not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
            raise KeyRingError(f"ticket key file is not in the {KEYRING_FORMAT!r} format")
        version = doc.get("version")
        if version != KEYRING_FORMAT_VERSION or isinstance(version, bool):
            raise KeyRingError("unsupported ticket key file version")
        raw_keys = doc.get("keys")
        current = doc.get("current")
        if not isinstance(raw_keys, dict) or not raw_keys:
            raise KeyRingError("ticket key file has no keys")
        if not isinstance(current, int) or isinstance(current, bool):
            raise KeyRingError("ticket key file has no valid 'current' key id")
        keys: dict[int, bytes] = {}
        for id_text, hex_key in raw_keys.items():
            if not _KEY_ID_TEXT.fullmatch(id_text):
                raise KeyRingError("ticket key file has a key id that is not 0..255")
            if not isinstance(hex_key, str) or not _HEX_TEXT.fullmatch(hex_key):
                raise KeyRingError(f"ticket key {id_text} is not lowercase hex")
            keys[int(id_text)] = bytes.fromhex(hex_key)
        return cls(keys, current)
