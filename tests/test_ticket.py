"""Tickets and seat tokens: layout, known answers, every refusal, key rotation."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m42d.errors import ConfigError, TicketError
from m42d.ticket import (
    MAX_EXPIRES,
    ROOM_ID_SIZE,
    TICKET_SIZE,
    TOKEN_SIZE,
    BadSeatToken,
    BadTicketMac,
    IssuedRoom,
    KeyRingError,
    MalformedTicket,
    Seat,
    Ticket,
    TicketExpired,
    TicketKeyRing,
    UnknownTicketKey,
    seat_token,
    ticket_mac,
)

# Known-answer vector; the same values are printed in docs/protocol.md.
KAT_KEY = bytes(range(32))
KAT_KEY_ID = 1
KAT_ROOM_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
KAT_EXPIRES = 1767225600  # 2026-01-01T00:00:00Z
KAT_TICKET = bytes.fromhex(
    "010100112233445566778899aabbccddeeff000000006955b900da9ce54f051a612e08a1b0e369036ae6"
)
KAT_TOKEN_A = bytes.fromhex("cbfba2f68c2a73fd4b3735faf3522bee")
KAT_TOKEN_B = bytes.fromhex("7481ae6f54ecb0cac6386e0fb894b2a4")

NOW = 1_700_000_000
TTL = 86_400


@pytest.fixture
def ring() -> TicketKeyRing:
    return TicketKeyRing({KAT_KEY_ID: KAT_KEY}, current=KAT_KEY_ID)


@pytest.fixture
def issued(ring: TicketKeyRing) -> IssuedRoom:
    return ring.mint(now=NOW, ttl=TTL)


# -- known answers -------------------------------------------------------------


def test_known_answer(ring: TicketKeyRing) -> None:
    issued = ring.mint(now=KAT_EXPIRES - TTL, ttl=TTL, room_id=KAT_ROOM_ID)
    assert issued.ticket.to_bytes() == KAT_TICKET
    assert issued.token_a == KAT_TOKEN_A
    assert issued.token_b == KAT_TOKEN_B
    assert issued.token(Seat.A) == KAT_TOKEN_A
    assert issued.token(Seat.B) == KAT_TOKEN_B
    assert issued.room_id == KAT_ROOM_ID
    assert ticket_mac(KAT_KEY, KAT_TICKET[:26]) == KAT_TICKET[26:]
    assert seat_token(KAT_KEY, KAT_TICKET, Seat.B) == KAT_TOKEN_B


def test_known_answer_parse() -> None:
    ticket = Ticket.parse(KAT_TICKET)
    assert ticket == Ticket(1, KAT_KEY_ID, KAT_ROOM_ID, KAT_EXPIRES, KAT_TICKET[26:])
    assert ticket.signed_part == KAT_TICKET[:26]
    assert ticket.to_bytes() == KAT_TICKET


def test_sizes() -> None:
    assert (TICKET_SIZE, TOKEN_SIZE, ROOM_ID_SIZE) == (42, 16, 16)


# -- Seat ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seat"),
    [("A", Seat.A), ("a", Seat.A), (0x41, Seat.A), ("B", Seat.B), ("b", Seat.B), (0x42, Seat.B)],
)
def test_seat_parse(value: str | int, seat: Seat) -> None:
    assert Seat.parse(value) is seat


@pytest.mark.parametrize("value", ["", "C", "AB", " A", "\uff21", 0, 0x43, 0x61, True, -1])
def test_seat_parse_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"^seat must be A or B$"):
        Seat.parse(value)


def test_seat_other_and_byte() -> None:
    assert Seat.A.other is Seat.B
    assert Seat.B.other is Seat.A
    assert (Seat.A.byte, Seat.B.byte) == (0x41, 0x42)


# -- mint and verify -------------------------------------------------------------


@pytest.mark.parametrize("seat", list(Seat))
def test_mint_verify_round_trip(ring: TicketKeyRing, issued: IssuedRoom, seat: Seat) -> None:
    raw = issued.ticket.to_bytes()
    ticket = ring.verify(raw, seat, issued.token(seat), now=NOW)
    assert ticket == issued.ticket
    assert ticket.key_id == KAT_KEY_ID
    assert ticket.expires == NOW + TTL
    assert len(raw) == TICKET_SIZE
    assert len(issued.token(seat)) == TOKEN_SIZE


def test_mint_draws_random_room_ids(ring: TicketKeyRing) -> None:
    rooms = {ring.mint(now=NOW, ttl=TTL).room_id for _ in range(20)}
    assert len(rooms) == 20
    assert all(len(room) == ROOM_ID_SIZE for room in rooms)


def test_tokens_differ_per_seat_and_room(ring: TicketKeyRing, issued: IssuedRoom) -> None:
    other = ring.mint(now=NOW, ttl=TTL)
    assert issued.token_a != issued.token_b
    assert issued.token_a not in (other.token_a, other.token_b)


@pytest.mark.parametrize("seat", list(Seat))
def test_other_seats_token_is_refused(ring: TicketKeyRing, issued: IssuedRoom, seat: Seat) -> None:
    with pytest.raises(BadSeatToken, match=f"seat {seat.value}$"):
        ring.verify(issued.ticket.to_bytes(), seat, issued.token(seat.other), now=NOW)


@pytest.mark.parametrize(
    "token",
    [bytes(16), b"", bytes(15), bytes(17), b"\xff" * 16],
)
def test_wrong_token_is_refused(ring: TicketKeyRing, issued: IssuedRoom, token: bytes) -> None:
    with pytest.raises(BadSeatToken):
        ring.verify(issued.ticket.to_bytes(), Seat.A, token, now=NOW)


def test_token_from_another_room_is_refused(ring: TicketKeyRing, issued: IssuedRoom) -> None:
    other = ring.mint(now=NOW, ttl=TTL)
    with pytest.raises(BadSeatToken):
        ring.verify(issued.ticket.to_bytes(), Seat.A, other.token_a, now=NOW)


@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_every_tampered_byte_is_refused(ring: TicketKeyRing, issued: IssuedRoom, flip: int) -> None:
    raw = issued.ticket.to_bytes()
    for index in range(TICKET_SIZE):
        tampered = bytearray(raw)
        tampered[index] ^= flip
        expected: type[TicketError]
        if index == 0:
            expected = MalformedTicket  # version byte
        elif index == 1:
            expected = UnknownTicketKey  # key id: only one key in the ring
        else:
            expected = BadTicketMac
        with pytest.raises(expected):
            ring.verify(bytes(tampered), Seat.A, issued.token_a, now=NOW)


def test_tampered_key_id_with_known_key_is_bad_mac(issued: IssuedRoom) -> None:
    ring = TicketKeyRing({KAT_KEY_ID: KAT_KEY, 0: bytes(32)}, current=KAT_KEY_ID)
    tampered = bytearray(issued.ticket.to_bytes())
    tampered[1] = 0
    with pytest.raises(BadTicketMac):
        ring.verify(bytes(tampered), Seat.A, issued.token_a, now=NOW)


def test_foreign_key_is_bad_mac(issued: IssuedRoom) -> None:
    other = TicketKeyRing({KAT_KEY_ID: b"\x01" * 32}, current=KAT_KEY_ID)
    with pytest.raises(BadTicketMac, match=r"^ticket authentication failed$"):
        other.verify(issued.ticket.to_bytes(), Seat.A, issued.token_a, now=NOW)


def test_expiry_is_inclusive(ring: TicketKeyRing, issued: IssuedRoom) -> None:
    raw = issued.ticket.to_bytes()
    expires = issued.ticket.expires
    assert ring.verify(raw, Seat.B, issued.token_b, now=expires) == issued.ticket
    assert not issued.ticket.is_expired(expires)
    assert issued.ticket.is_expired(expires + 1)
    with pytest.raises(TicketExpired, match=r"^ticket has expired$"):
        ring.verify(raw, Seat.B, issued.token_b, now=expires + 1)


def test_token_is_checked_before_expiry(ring: TicketKeyRing, issued: IssuedRoom) -> None:
    """A party without the token learns nothing but 'bad token', even for an old ticket."""
    with pytest.raises(BadSeatToken):
        ring.verify(issued.ticket.to_bytes(), Seat.A, bytes(16), now=NOW + TTL + 1)


def test_unknown_key_id(issued: IssuedRoom) -> None:
    other = TicketKeyRing({7: KAT_KEY}, current=7)
    with pytest.raises(UnknownTicketKey, match=r"^ticket key id 1 is unknown to this relay$"):
        other.verify(issued.ticket.to_bytes(), Seat.A, issued.token_a, now=NOW)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "ticket must be 42 bytes, got 0"),
        (bytes(41), "ticket must be 42 bytes, got 41"),
        (bytes(43), "ticket must be 42 bytes, got 43"),
        (b"\x02" + bytes(41), "unsupported ticket version 2"),
        (bytes(42), "unsupported ticket version 0"),
    ],
)
def test_malformed_ticket(ring: TicketKeyRing, raw: bytes, message: str) -> None:
    with pytest.raises(MalformedTicket) as info:
        Ticket.parse(raw)
    assert str(info.value) == message
    with pytest.raises(MalformedTicket):
        ring.verify(raw, Seat.A, bytes(16), now=NOW)


def test_parse_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        Ticket.parse(42)  # type: ignore[arg-type]


def test_errors_are_ticket_errors() -> None:
    for cls in (MalformedTicket, UnknownTicketKey, BadTicketMac, TicketExpired, BadSeatToken):
        assert issubclass(cls, TicketError)
    assert issubclass(KeyRingError, ConfigError)
    assert not issubclass(KeyRingError, ValueError)
    # Each relay-visible ticket error carries the code the relay answers with.
    assert [
        cls.wire_code
        for cls in (MalformedTicket, UnknownTicketKey, BadTicketMac, TicketExpired, BadSeatToken)
    ] == [400, 404, 404, 410, 401]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_parse_garbage_raises_only_malformed(data: bytes) -> None:
    try:
        ticket = Ticket.parse(data)
    except MalformedTicket:
        assert len(data) != TICKET_SIZE or data[0] != 1
    else:
        assert ticket.to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.integers(0, MAX_EXPIRES),
    st.binary(min_size=16, max_size=16),
)
def test_ticket_bytes_round_trip(key_id: int, room_id: bytes, expires: int, mac: bytes) -> None:
    ticket = Ticket(1, key_id, room_id, expires, mac)
    raw = ticket.to_bytes()
    assert len(raw) == TICKET_SIZE
    assert Ticket.parse(raw) == ticket


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=42, max_size=42), st.binary(max_size=20), st.sampled_from(list(Seat)))
def test_verify_garbage_raises_only_ticket_errors(raw: bytes, token: bytes, seat: Seat) -> None:
    ring = TicketKeyRing({0: KAT_KEY, 1: KAT_KEY[::-1]}, current=0)
    with pytest.raises(TicketError):
        ring.verify(raw, seat, token, now=NOW)


@pytest.mark.parametrize(
    "fields",
    [
        (1, 256, bytes(16), 0, bytes(16)),
        (1, -1, bytes(16), 0, bytes(16)),
        (256, 0, bytes(16), 0, bytes(16)),
        (1, 0, bytes(15), 0, bytes(16)),
        (1, 0, bytes(16), -1, bytes(16)),
        (1, 0, bytes(16), MAX_EXPIRES + 1, bytes(16)),
        (1, 0, bytes(16), 0, bytes(17)),
    ],
)
def test_ticket_constructor_checks_ranges(fields: tuple[int, int, bytes, int, bytes]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - a caller bug, the message varies per field
        Ticket(*fields)


# -- secrets stay out of text ------------------------------------------------------


def test_reprs_hide_keys_and_tokens(ring: TicketKeyRing, issued: IssuedRoom) -> None:
    text = repr(ring) + str(ring) + repr(issued) + str(issued)
    for secret in (KAT_KEY, issued.token_a, issued.token_b):
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert repr(ring) == "TicketKeyRing(key_ids=[1], current=1)"


def test_error_messages_hide_tokens_and_macs(ring: TicketKeyRing, issued: IssuedRoom) -> None:
    raw = issued.ticket.to_bytes()
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    cases = [
        (tampered, issued.token_a, NOW),
        (raw, issued.token_b, NOW),
        (raw, issued.token_a, NOW + TTL + 1),
    ]
    for ticket, token, now in cases:
        with pytest.raises(TicketError) as info:
            ring.verify(ticket, Seat.A, token, now=now)
        message = str(info.value)
        for value in (KAT_KEY, issued.token_a, issued.token_b, issued.ticket.mac, token):
            assert value.hex() not in message


# -- the key ring -----------------------------------------------------------------


def test_generate() -> None:
    ring = TicketKeyRing.generate()
    assert ring.key_ids == (0,)
    assert ring.current == 0
    issued = ring.mint(now=NOW, ttl=TTL)
    assert ring.verify(issued.ticket.to_bytes(), Seat.A, issued.token_a, now=NOW)
    assert TicketKeyRing.generate().to_json() != ring.to_json()


def test_rotation_keeps_old_tickets_until_removal(ring: TicketKeyRing) -> None:
    old = ring.mint(now=NOW, ttl=TTL)
    new_id = ring.rotate()
    assert new_id == KAT_KEY_ID + 1
    assert ring.current == new_id
    assert ring.key_ids == (KAT_KEY_ID, new_id)
    new = ring.mint(now=NOW, ttl=TTL)
    assert new.ticket.key_id == new_id
    for issued in (old, new):
        ring.verify(issued.ticket.to_bytes(), Seat.A, issued.token_a, now=NOW)
    ring.remove(KAT_KEY_ID)
    with pytest.raises(UnknownTicketKey):
        ring.verify(old.ticket.to_bytes(), Seat.A, old.token_a, now=NOW)
    ring.verify(new.ticket.to_bytes(), Seat.B, new.token_b, now=NOW)


def test_rotate_wraps_and_skips_used_ids() -> None:
    ring = TicketKeyRing({255: KAT_KEY, 0: KAT_KEY}, current=255)
    assert ring.rotate() == 1
    full = TicketKeyRing(dict.fromkeys(range(256), KAT_KEY), current=3)
    with pytest.raises(KeyRingError, match="all 256"):
        full.rotate()


def test_add_set_current_and_container(ring: TicketKeyRing) -> None:
    ring.add(9, b"\x09" * 32)
    assert ring.current == KAT_KEY_ID
    assert 9 in ring
    assert 5 not in ring
    assert len(ring) == 2
    assert list(ring) == [1, 9]
    ring.set_current(9)
    assert ring.mint(now=NOW, ttl=TTL).ticket.key_id == 9
    ring.add(10, b"\x0a" * 40, make_current=True)
    assert ring.current == 10


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda r: r.add(1, bytes(32)), "ticket key id 1 is already in use"),
        (lambda r: r.add(2, bytes(31)), "ticket key 2 is 31 bytes, must be at least 32"),
        (lambda r: r.add(256, bytes(32)), "ticket key id must be an integer 0..255, got 256"),
        (lambda r: r.add(-1, bytes(32)), "ticket key id must be an integer 0..255, got -1"),
        (lambda r: r.add(True, bytes(32)), "ticket key id must be an integer 0..255, got True"),
        (lambda r: r.add(2, "k" * 32), "ticket key 2 must be bytes"),
        (lambda r: r.set_current(4), "ticket key id 4 is not in the key ring"),
        (lambda r: r.remove(4), "ticket key id 4 is not in the key ring"),
        (lambda r: r.remove(1), "ticket key id 1 is current and cannot be removed"),
    ],
)
def test_key_ring_misuse(ring: TicketKeyRing, action: object, message: str) -> None:
    before = ring.to_json()
    with pytest.raises(KeyRingError) as info:
        action(ring)  # type: ignore[operator]
    assert str(info.value) == message
    assert ring.to_json() == before


def test_constructor_checks() -> None:
    with pytest.raises(KeyRingError, match="current ticket key id 2 is not in the key ring"):
        TicketKeyRing({1: KAT_KEY}, current=2)
    with pytest.raises(KeyRingError, match="at least 32"):
        TicketKeyRing({1: bytes(16)}, current=1)
    with pytest.raises(KeyRingError, match="not in the key ring"):
        TicketKeyRing({}, current=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"now": -1, "ttl": 5}, "now must not be negative"),
        ({"now": NOW, "ttl": 0}, "ttl must be positive"),
        ({"now": NOW, "ttl": -5}, "ttl must be positive"),
        ({"now": MAX_EXPIRES, "ttl": 1}, "ticket expiry must fit an unsigned 64-bit integer"),
        ({"now": NOW, "ttl": 5, "room_id": bytes(15)}, "room id must be 16 bytes, got 15"),
    ],
)
def test_mint_argument_checks(ring: TicketKeyRing, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ring.mint(**kwargs)  # type: ignore[arg-type]


def test_mint_at_the_end_of_time(ring: TicketKeyRing) -> None:
    issued = ring.mint(now=MAX_EXPIRES - 1, ttl=1)
    assert issued.ticket.expires == MAX_EXPIRES
    ring.verify(issued.ticket.to_bytes(), Seat.A, issued.token_a, now=MAX_EXPIRES)


# -- persistence -------------------------------------------------------------------


def test_json_round_trip(ring: TicketKeyRing) -> None:
    ring.rotate()
    ring.add(200, bytes(range(100, 164)))
    old = ring.mint(now=NOW, ttl=TTL)
    text = ring.to_json()
    loaded = TicketKeyRing.from_json(text)
    assert loaded.key_ids == ring.key_ids == (1, 2, 200)
    assert loaded.current == ring.current == 2
    assert loaded.to_json() == text
    assert TicketKeyRing.from_json(text.encode()).to_json() == text
    loaded.verify(old.ticket.to_bytes(), Seat.A, old.token_a, now=NOW)
    new = loaded.mint(now=NOW, ttl=TTL)
    ring.verify(new.ticket.to_bytes(), Seat.B, new.token_b, now=NOW)


def test_json_layout(ring: TicketKeyRing) -> None:
    assert json.loads(ring.to_json()) == {
        "format": "m42d-ticket-keys",
        "version": 1,
        "current": 1,
        "keys": {"1": KAT_KEY.hex()},
    }


def _doc(**changes: object) -> str:
    doc: dict[str, object] = {
        "format": "m42d-ticket-keys",
        "version": 1,
        "current": 1,
        "keys": {"1": KAT_KEY.hex()},
    }
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "ticket key file is not valid JSON"),
        (b"\xff\xfe", "ticket key file is not valid JSON"),
        ("[]", "ticket key file is not in the 'm42d-ticket-keys' format"),
        (_doc(format="other"), "ticket key file is not in the 'm42d-ticket-keys' format"),
        (_doc(version=2), "unsupported ticket key file version"),
        (_doc(version=True), "unsupported ticket key file version"),
        (_doc(keys={}), "ticket key file has no keys"),
        (_doc(keys=[KAT_KEY.hex()]), "ticket key file has no keys"),
        (_doc(current="1"), "ticket key file has no valid 'current' key id"),
        (_doc(current=True), "ticket key file has no valid 'current' key id"),
        (_doc(current=2), "current ticket key id 2 is not in the key ring"),
        (_doc(keys={"01": KAT_KEY.hex()}), "ticket key file has a key id that is not 0..255"),
        (_doc(keys={"x": KAT_KEY.hex()}), "ticket key file has a key id that is not 0..255"),
        (_doc(keys={"300": KAT_KEY.hex()}), "ticket key id must be an integer 0..255, got 300"),
        (_doc(keys={"1": KAT_KEY.hex().upper()}), "ticket key 1 is not lowercase hex"),
        (_doc(keys={"1": KAT_KEY.hex()[:-1]}), "ticket key 1 is not lowercase hex"),
        (_doc(keys={"1": 5}), "ticket key 1 is not lowercase hex"),
        (_doc(keys={"1": "00" * 31}), "ticket key 1 is 31 bytes, must be at least 32"),
    ],
)
def test_json_errors(text: str | bytes, message: str) -> None:
    with pytest.raises(KeyRingError) as info:
        TicketKeyRing.from_json(text)
    assert str(info.value) == message
    assert KAT_KEY.hex() not in str(info.value)
