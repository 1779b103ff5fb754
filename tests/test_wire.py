"""Tests for m42d.wire: both framings, every body rule, and decoder robustness."""

from __future__ import annotations

import array
import itertools
import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import m42d
from m42d.errors import LocalProtocolError, RemoteProtocolError, WireError
from m42d.ticket import TICKET_SIZE, TOKEN_SIZE, Seat
from m42d.wire import (
    BODY_LIMITS,
    ERROR_SENTENCES,
    MAX_FRAME,
    MAX_PAYLOAD,
    MAX_TEXT,
    WIRE_VERSION,
    Bulk,
    Burn,
    Control,
    CreateRoom,
    Credit,
    Error,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameKind,
    FrameTooLargeError,
    GoAway,
    Join,
    Joined,
    Lane,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    RoomCreated,
    decode,
    encode,
    encode_stream,
    error_code_for,
    lane_of,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
tickets = st.binary(min_size=TICKET_SIZE, max_size=TICKET_SIZE)
tokens = st.binary(min_size=TOKEN_SIZE, max_size=TOKEN_SIZE)
# 256 code points are at most 1024 UTF-8 bytes; Hypothesis text has no surrogates.
texts = st.text(max_size=MAX_TEXT // 4)
payloads = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.integers(MAX_PAYLOAD - 2, MAX_PAYLOAD).map(lambda n: b"\xa5" * n),
)
ping_data = st.binary(max_size=32)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(CreateRoom, version=u8, creation_secret=st.binary(max_size=255)),
    st.builds(RoomCreated, ticket=tickets, token_a=tokens, token_b=tokens),
    st.builds(Join, seat=st.sampled_from(Seat), ticket=tickets, token=tokens, version=u8),
    st.builds(Joined, peer_online=st.booleans(), max_payload=u32, bulk_window=u32),
    st.just(PeerUp()),
    st.just(PeerDown()),
    st.just(Burn()),
    st.builds(Control, payload=payloads),
    st.builds(Bulk, payload=payloads),
    st.builds(Credit, amount=st.integers(1, 0xFFFF_FFFF)),
    st.builds(Ping, data=ping_data),
    st.builds(Pong, data=ping_data),
    st.builds(Error, code=u16, message=texts),
    st.builds(GoAway, grace_ms=u32, reason=texts),
)
small_frames = frames.filter(lambda f: len(encode(f)) < 2000)


def decode_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        out.extend(decoder)
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- pinned constants -----------------------------------------------------------


def test_version_matches_package() -> None:
    assert WIRE_VERSION == m42d.PROTOCOL_VERSION == 2


def test_size_caps() -> None:
    assert MAX_PAYLOAD == 262208
    assert MAX_FRAME == 262209
    assert FrameDecoder().max_buffer == 4 * (4 + 1 + MAX_PAYLOAD)


def test_frame_kind_numbers_are_pinned() -> None:
    assert {k.name: k.value for k in FrameKind} == {
        "CREATE_ROOM": 0x01,
        "ROOM_CREATED": 0x02,
        "JOIN": 0x03,
        "JOINED": 0x04,
        "PEER_UP": 0x05,
        "PEER_DOWN": 0x06,
        "BURN": 0x07,
        "CONTROL": 0x10,
        "BULK": 0x11,
        "CREDIT": 0x12,
        "PING": 0x20,
        "PONG": 0x21,
        "ERROR": 0x30,
        "GOAWAY": 0x31,
    }


def test_error_codes_are_pinned() -> None:
    # A stable public contract: clients in other languages switch on these numbers.
    assert {c.name: c.value for c in ErrorCode} == {
        "BAD_FRAME": 400,
        "BAD_TOKEN": 401,
        "CREDIT_EXCEEDED": 402,
        "FORBIDDEN": 403,
        "UNKNOWN_ROOM": 404,
        "JOIN_TIMEOUT": 408,
        "SEAT_TAKEN": 409,
        "EXPIRED": 410,
        "BURNED": 411,
        "TOO_LARGE": 413,
        "UNSUPPORTED_VERSION": 415,
        "RATE_LIMITED": 429,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
    }


def test_every_error_code_has_a_sentence() -> None:
    assert set(ERROR_SENTENCES) == set(ErrorCode)
    for code in ErrorCode:
        assert code.sentence == ERROR_SENTENCES[code]
        assert 0 < len(code.sentence.encode()) <= MAX_TEXT
    assert ErrorCode.SEAT_TAKEN.sentence == "this seat was taken over by a newer connection"


def test_error_from_code_and_error_code() -> None:
    frame = Error.from_code(ErrorCode.BURNED)
    assert frame == Error(411, "room was burned")
    assert frame.error_code is ErrorCode.BURNED
    assert Error.from_code(ErrorCode.INTERNAL, "boom").message == "boom"
    future = decode(encode(Error(499, "from the future")))
    assert isinstance(future, Error)
    assert future.code == 499
    assert future.error_code is None


# -- worked examples (also printed in docs/protocol.d/30-wire.md) --------------

JOIN_EXAMPLE_HEX = (
    "0000003d 03 02 41"
    " 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728 29"
    " a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
)
CONTROL_EXAMPLE_HEX = "00000006 10 68656c6c6f"


def _hex(spaced: str) -> bytes:
    return bytes.fromhex(spaced.replace(" ", ""))


def test_worked_examples() -> None:
    join = Join(seat=Seat.A, ticket=bytes(range(42)), token=bytes(range(0xA0, 0xB0)))
    assert encode_stream(join) == _hex(JOIN_EXAMPLE_HEX)
    assert encode_stream(Control(b"hello")) == _hex(CONTROL_EXAMPLE_HEX)
    assert encode(Control(b"hello")) == _hex(CONTROL_EXAMPLE_HEX)[4:]
    decoder = FrameDecoder()
    assert decode_all(decoder, [_hex(JOIN_EXAMPLE_HEX + CONTROL_EXAMPLE_HEX)]) == [
        join,
        Control(b"hello"),
    ]


def test_worked_examples_appear_in_spec() -> None:
    docs = [PROJECT_ROOT / "docs/protocol.md"]
    texts = [p.read_text(encoding="utf-8") for p in docs if p.is_file()]
    assert texts, "wire spec section not found"
    # Each example is a fenced block of hex alone; grouping and wrapping are free.
    blocks = {
        re.sub(r"\s", "", block).lower()
        for text in texts
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    }
    for example in (JOIN_EXAMPLE_HEX, CONTROL_EXAMPLE_HEX):
        assert _hex(example).hex() in blocks


# -- round trips ----------------------------------------------------------------


@FAST
@given(frame=frames)
def test_round_trip_message(frame: Frame) -> None:
    message = encode(frame)
    assert message[0] == frame.kind
    assert decode(message) == frame
    assert decode(bytearray(message)) == frame
    assert decode(memoryview(message)) == frame


@FAST
@given(frame=frames)
def test_round_trip_stream(frame: Frame) -> None:
    data = encode_stream(frame)
    assert data == struct.pack(">I", len(data) - 4) + encode(frame)
    decoder = FrameDecoder()
    decoder.receive_data(data)
    assert decoder.buffered == len(data)
    assert decoder.next_frame() == frame
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    decoder.eof()


@FAST
@given(frame=frames)
def test_lane_assignment(frame: Frame) -> None:
    expected = Lane.BULK if isinstance(frame, Bulk) else Lane.CONTROL
    assert lane_of(frame) is expected


def test_decoded_payload_is_an_independent_bytes_copy() -> None:
    source = bytearray(encode(Control(b"abc")))
    frame = decode(source)
    source[1:] = b"xyz"
    assert isinstance(frame, Control)
    assert type(frame.payload) is bytes
    assert frame.payload == b"abc"


def test_other_versions_still_decode() -> None:
    # The relay must see the version to answer 415 rather than 400.
    assert decode(encode(CreateRoom(version=7))) == CreateRoom(version=7)
    join = Join(Seat.B, b"t" * TICKET_SIZE, b"k" * TOKEN_SIZE, version=0)
    assert decode(encode(join)) == join


def test_decode_accepts_non_byte_memoryviews() -> None:
    message = encode(Ping(b"abc"))
    words = array.array("H", message)
    assert decode(memoryview(words)) == Ping(b"abc")


# -- stream splitting -------------------------------------------------------------


@FAST
@given(data=st.data(), batch=st.lists(small_frames, min_size=1, max_size=8))
def test_stream_split_anywhere(data: st.DataObject, batch: list[Frame]) -> None:
    stream = b"".join(encode_stream(f) for f in batch)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    decoder = FrameDecoder()
    assert decode_all(decoder, split_at(stream, cuts)) == batch
    assert decoder.buffered == 0
    decoder.eof()


SMALL_STREAM_FRAMES: list[Frame] = [
    Join(Seat.B, bytes(range(42)), b"\x11" * 16),
    PeerUp(),
    Control(b"hi"),
    Credit(65536),
    Bulk(b"\x00" * 40),
    Error.from_code(ErrorCode.EXPIRED),
    GoAway(1500, "bye \u00e9"),
]


def test_every_single_split_point() -> None:
    stream = b"".join(encode_stream(f) for f in SMALL_STREAM_FRAMES)
    for cut in range(len(stream) + 1):
        assert decode_all(FrameDecoder(), [stream[:cut], stream[cut:]]) == SMALL_STREAM_FRAMES


def test_byte_by_byte() -> None:
    stream = b"".join(encode_stream(f) for f in SMALL_STREAM_FRAMES)
    decoder = FrameDecoder()
    got = decode_all(decoder, [stream[i : i + 1] for i in range(len(stream))])
    assert got == SMALL_STREAM_FRAMES


def test_receive_accepts_buffer_types_and_ignores_empty() -> None:
    stream = encode_stream(Ping(b"x")) + encode_stream(Pong(b"y"))
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    decoder.receive_data(memoryview(stream)[:3])
    decoder.receive_data(bytearray(stream[3:7]))
    decoder.receive_data(array.array("B", stream[7:]))  # type: ignore[arg-type]
    assert list(decoder.frames()) == [Ping(b"x"), Pong(b"y")]


def test_large_frames_in_pieces_keep_buffer_bounded() -> None:
    bulk = Bulk(bytes(range(256)) * 256)
    stream = encode_stream(bulk) * 6
    decoder = FrameDecoder()
    got: list[Frame] = []
    for i in range(0, len(stream), 16384):
        decoder.receive_data(stream[i : i + 16384])
        got.extend(decoder)
        assert decoder.buffered < 4 + MAX_FRAME  # at most one partial frame is held
    assert got == [bulk] * 6


# -- robustness: only WireError escapes ---------------------------------------


def _only_wire_errors_message(message: bytes) -> None:
    try:
        frame = decode(message)
    except WireError:
        return
    # Whatever decodes must re-encode to the same bytes: one encoding per frame.
    assert encode(frame) == message


def _only_wire_errors_stream(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_frame=4096, max_buffer=3 * 4096)
    try:
        for i in range(0, len(data), chunk):
            decoder.receive_data(data[i : i + chunk])
            for frame in decoder:
                encode_stream(frame)
        decoder.eof()
    except WireError:
        return


@FAST
@given(garbage=st.binary(max_size=200), chunk=st.integers(1, 64))
def test_garbage_raises_only_wire_error(garbage: bytes, chunk: int) -> None:
    _only_wire_errors_message(garbage)
    _only_wire_errors_stream(garbage, chunk)


@FAST
@given(
    frame=small_frames,
    data=st.data(),
    chunk=st.integers(1, 64),
)
def test_mutations_raise_only_wire_error(frame: Frame, data: st.DataObject, chunk: int) -> None:
    for encoded, check in ((encode(frame), None), (encode_stream(frame), chunk)):
        mutated = bytearray(encoded)
        action = data.draw(st.sampled_from(["flip", "truncate", "insert", "extend"]))
        if action == "flip":
            pos = data.draw(st.integers(0, len(mutated) - 1))
            mutated[pos] ^= data.draw(st.integers(1, 255))
        elif action == "truncate":
            del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
        elif action == "insert":
            pos = data.draw(st.integers(0, len(mutated)))
            mutated[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            mutated += data.draw(st.binary(min_size=1, max_size=8))
        if check is None:
            _only_wire_errors_message(bytes(mutated))
        else:
            _only_wire_errors_stream(bytes(mutated), check)


# -- decoder limits -------------------------------------------------------------


def test_oversize_length_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(FrameTooLargeError, match="exceeds cap 262209"):
        decoder.next_frame()


def test_custom_max_frame() -> None:
    decoder = FrameDecoder(max_frame=100, max_buffer=200)
    decoder.receive_data(encode_stream(Control(b"x" * 99)))
    assert decoder.next_frame() == Control(b"x" * 99)
    decoder.receive_data(struct.pack(">IB", 101, FrameKind.CONTROL))
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


def test_max_frame_can_change_between_frames() -> None:
    decoder = FrameDecoder(max_frame=1 + 60)
    decoder.receive_data(encode_stream(Control(b"x" * 100)))
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()
    decoder = FrameDecoder(max_frame=1 + 60)
    decoder.max_frame = MAX_FRAME
    decoder.receive_data(encode_stream(Control(b"x" * 100)))
    assert decoder.next_frame() == Control(b"x" * 100)
    with pytest.raises(LocalProtocolError):
        decoder.max_frame = decoder.max_buffer


def test_zero_length_rejected() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(WireError, match="length 0"):
        decoder.next_frame()


@pytest.mark.parametrize(
    ("kind", "length", "error"),
    [
        (0x7F, 10, "unknown frame kind 0x7f"),
        (FrameKind.JOIN, 1001, "JOIN body must be 60 bytes, got 1000"),
        (FrameKind.PING, 1000, "PING body must be at most 32 bytes"),
        (FrameKind.BURN, 2, "BURN body must be 0 bytes, got 1"),
    ],
)
def test_bad_kind_or_length_rejected_before_body(kind: int, length: int, error: str) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", length))
    assert decoder.next_frame() is None  # kind byte not here yet
    decoder.receive_data(bytes((kind,)))
    with pytest.raises(WireError, match=re.escape(error)):
        decoder.next_frame()


def test_max_buffer_enforced() -> None:
    decoder = FrameDecoder(max_frame=100, max_buffer=200)
    decoder.receive_data(b"\x00" * 3)
    decoder.receive_data(b"\x00" * 197)  # exactly full is fine
    assert decoder.buffered == 200
    with pytest.raises(WireError, match="exceed 200 bytes"):
        decoder.receive_data(b"\x00")


def test_consumed_bytes_do_not_count_against_max_buffer() -> None:
    ping = encode_stream(Ping(b"x" * 32))  # 37 bytes
    decoder = FrameDecoder(max_frame=100, max_buffer=104)
    for _ in range(50):
        decoder.receive_data(ping * 2)
        assert list(decoder) == [Ping(b"x" * 32)] * 2


@pytest.mark.parametrize(("max_frame", "max_buffer"), [(0, 100), (100, 103), (MAX_FRAME, 1000)])
def test_bad_decoder_limits(max_frame: int, max_buffer: int) -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_frame=max_frame, max_buffer=max_buffer)


def test_eof() -> None:
    decoder = FrameDecoder()
    decoder.eof()
    data = encode_stream(Credit(5))
    decoder.receive_data(data + data[:2])
    assert decoder.next_frame() == Credit(5)
    assert decoder.next_frame() is None
    assert decoder.buffered == 2
    with pytest.raises(WireError, match="connection closed mid-frame"):
        decoder.eof()


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">IB", 2, 0x99) + b"\x00")
    with pytest.raises(WireError, match="unknown frame kind 0x99"):
        decoder.next_frame()
    for call in (
        decoder.next_frame,
        decoder.eof,
        lambda: decoder.receive_data(encode_stream(PeerUp())),
    ):
        with pytest.raises(WireError, match="decoder already failed: unknown frame kind"):
            call()


def test_failed_body_keeps_error_class() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">IBI", 5, FrameKind.CREDIT, 0))
    with pytest.raises(WireError, match="CREDIT amount"):
        decoder.next_frame()
    decoder = FrameDecoder(max_frame=10)
    decoder.receive_data(struct.pack(">I", 11))
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()
    with pytest.raises(FrameTooLargeError, match="already failed"):
        decoder.next_frame()


# -- body rules --------------------------------------------------------------------

T = b"t" * TICKET_SIZE
K = b"k" * TOKEN_SIZE


def _msg(kind: int, body: bytes = b"") -> bytes:
    return bytes((kind,)) + body


BAD_MESSAGES = [
    pytest.param(b"", "empty message", id="empty"),
    pytest.param(_msg(0x00), "unknown frame kind 0x00", id="kind-0"),
    pytest.param(_msg(0x08), "unknown frame kind 0x08", id="kind-8"),
    pytest.param(_msg(0xFF, b"abc"), "unknown frame kind 0xff", id="kind-ff"),
    pytest.param(_msg(FrameKind.CREATE_ROOM), "CREATE_ROOM body must be at least 1", id="cr-empty"),
    pytest.param(
        _msg(FrameKind.CREATE_ROOM, b"\x01" + b"s" * 256),
        "CREATE_ROOM body must be at most 256",
        id="cr-secret-long",
    ),
    pytest.param(
        _msg(FrameKind.ROOM_CREATED, T + K + K[:-1]), "ROOM_CREATED body must be 74", id="rc"
    ),
    pytest.param(_msg(FrameKind.JOIN, b"\x01A" + T + K + b"x"), "JOIN body must be 60", id="join"),
    pytest.param(_msg(FrameKind.JOIN, b"\x01a" + T + K), "seat byte must be", id="seat-lower"),
    pytest.param(_msg(FrameKind.JOIN, b"\x01C" + T + K), "seat byte must be", id="seat-C"),
    pytest.param(_msg(FrameKind.JOINED, b"\x01" + b"\x00" * 7), "JOINED body must be 9", id="jd"),
    pytest.param(_msg(FrameKind.JOINED, b"\x02" + b"\x00" * 8), "peer_online", id="jd-online"),
    pytest.param(_msg(FrameKind.PEER_UP, b"\x00"), "PEER_UP body must be 0", id="peer-up"),
    pytest.param(_msg(FrameKind.PEER_DOWN, b"\x00"), "PEER_DOWN body must be 0", id="peer-dn"),
    pytest.param(_msg(FrameKind.BURN, b"\x00"), "BURN body must be 0", id="burn"),
    pytest.param(_msg(FrameKind.CONTROL), "CONTROL body must be at least 1", id="control-empty"),
    pytest.param(_msg(FrameKind.BULK), "BULK body must be at least 1", id="bulk-empty"),
    pytest.param(_msg(FrameKind.CREDIT, b"\x00" * 4), "CREDIT amount", id="credit-zero"),
    pytest.param(_msg(FrameKind.CREDIT, b"\x00" * 3), "CREDIT body must be 4", id="credit-len"),
    pytest.param(_msg(FrameKind.PING, b"p" * 33), "PING body must be at most 32", id="ping"),
    pytest.param(_msg(FrameKind.PONG, b"p" * 33), "PONG body must be at most 32", id="pong"),
    pytest.param(_msg(FrameKind.ERROR, b"\x01"), "ERROR body must be at least 2", id="err-short"),
    pytest.param(
        _msg(FrameKind.ERROR, b"\x01\x90" + b"m" * 1025),
        "ERROR body must be at most 1026",
        id="err-long",
    ),
    pytest.param(_msg(FrameKind.ERROR, b"\x01\x90\xff"), "ERROR message is not valid", id="err-u8"),
    pytest.param(
        _msg(FrameKind.ERROR, b"\x01\x90\xed\xa0\x80"), "not valid UTF-8", id="err-surrogate"
    ),
    pytest.param(_msg(FrameKind.GOAWAY, b"\x00" * 3), "GOAWAY body must be at least 4", id="ga"),
    pytest.param(_msg(FrameKind.GOAWAY, b"\x00" * 4 + b"\xc3"), "GOAWAY reason", id="ga-utf8"),
]


@pytest.mark.parametrize(("message", "error"), BAD_MESSAGES)
def test_body_rules(message: bytes, error: str) -> None:
    with pytest.raises(WireError, match=re.escape(error)):
        decode(message)
    if message:
        decoder = FrameDecoder()
        decoder.receive_data(struct.pack(">I", len(message)) + message)
        with pytest.raises(WireError, match=re.escape(error)):
            decoder.next_frame()


@pytest.mark.parametrize("kind", [FrameKind.CONTROL, FrameKind.BULK])
def test_payload_caps(kind: FrameKind) -> None:
    assert len(decode(_msg(kind, b"x" * MAX_PAYLOAD)).payload) == MAX_PAYLOAD  # type: ignore[union-attr]
    with pytest.raises(FrameTooLargeError, match=f"{kind.name} body must be at most 262208"):
        decode(_msg(kind, b"x" * (MAX_PAYLOAD + 1)))


def test_text_caps_count_utf8_bytes() -> None:
    exact = "\u20ac" * 341 + "x"  # 3 * 341 + 1 = 1024 bytes
    assert decode(encode(GoAway(0, exact))) == GoAway(0, exact)
    assert decode(encode(Error(500, exact))) == Error(500, exact)
    with pytest.raises(LocalProtocolError, match="at most 1024 UTF-8 bytes"):
        encode(Error(500, exact + "x"))


def test_body_limits_cover_every_kind() -> None:
    assert set(BODY_LIMITS) == set(FrameKind)


def test_error_code_for() -> None:
    with pytest.raises(WireError) as too_large:
        decode(_msg(FrameKind.BULK, b"x" * (MAX_PAYLOAD + 1)))
    with pytest.raises(WireError) as bad:
        decode(_msg(FrameKind.BULK))
    assert error_code_for(too_large.value) is ErrorCode.TOO_LARGE
    assert error_code_for(bad.value) is ErrorCode.BAD_FRAME
    assert isinstance(too_large.value, RemoteProtocolError)


def test_error_messages_do_not_echo_bytes() -> None:
    secretish = b"\xffSECRETSECRET"
    with pytest.raises(WireError) as info:
        decode(_msg(FrameKind.ERROR, b"\x01\x90" + secretish))
    assert "SECRET" not in str(info.value)
    with pytest.raises(WireError) as info:
        decode(_msg(FrameKind.JOIN, b"\x01Z" + b"S" * TICKET_SIZE + b"K" * TOKEN_SIZE))
    assert "Z" not in str(info.value).replace("JOIN", "")
    assert "SSSS" not in str(info.value)


def test_failed_decode_releases_caller_buffer() -> None:
    # A traceback must not pin a view of the caller's bytearray (BufferError on resize).
    source = bytearray(_msg(FrameKind.ERROR, b"\x01\x90\xff"))
    with pytest.raises(WireError) as info:
        decode(source)
    source += b"more"
    assert info.value is not None


# -- encoding validation ------------------------------------------------------------

BAD_FRAMES = [
    pytest.param(Control(b""), "CONTROL: payload must be 1..262208 bytes", id="control-empty"),
    pytest.param(Bulk(b"x" * (MAX_PAYLOAD + 1)), "BULK: payload must be 1..262208", id="bulk-big"),
    pytest.param(Control("text"), "payload must be bytes", id="control-str"),  # type: ignore[arg-type]
    pytest.param(CreateRoom(version=256), "version must be an int in 0..255", id="cr-version"),
    pytest.param(CreateRoom(creation_secret=b"s" * 256), "creation_secret must be", id="cr-secret"),
    pytest.param(RoomCreated(T[:-1], K, K), "ticket must be 42 bytes, got 41", id="rc-ticket"),
    pytest.param(RoomCreated(T, K, K + b"x"), "token_b must be 16 bytes", id="rc-token"),
    pytest.param(Join(Seat.A, T, K[:-1]), "token must be 16 bytes, got 15", id="join-token"),
    pytest.param(Join("A", T, K), "seat must be a Seat", id="join-seat"),  # type: ignore[arg-type]
    pytest.param(Join(Seat.A, T, K, version=-1), "version", id="join-version"),
    pytest.param(Joined(True, -1, 0), "max_payload", id="joined-neg"),
    pytest.param(Joined(True, 0, 2**32), "bulk_window", id="joined-big"),
    pytest.param(Credit(0), "CREDIT: amount must be an int in 1..", id="credit-0"),
    pytest.param(Credit(2**32), "amount", id="credit-big"),
    pytest.param(Credit(1.5), "amount", id="credit-float"),  # type: ignore[arg-type]
    pytest.param(Ping(b"p" * 33), "PING: data must be 0..32 bytes", id="ping"),
    pytest.param(Pong(b"p" * 33), "PONG: data", id="pong"),
    pytest.param(Error(65536, ""), "code must be an int in 0..65535", id="err-code"),
    pytest.param(Error(400, "\ud800"), "message is not valid UTF-8", id="err-surrogate"),
    pytest.param(Error(400, b"x"), "message must be str", id="err-bytes"),  # type: ignore[arg-type]
    pytest.param(GoAway(-1), "grace_ms", id="ga-neg"),
    pytest.param(GoAway(0, "r" * 1025), "reason must be at most 1024", id="ga-long"),
]


@pytest.mark.parametrize(("frame", "error"), BAD_FRAMES)
def test_encode_validates(frame: Frame, error: str) -> None:
    for encoder in (encode, encode_stream):
        with pytest.raises(LocalProtocolError, match=re.escape(error)):
            encoder(frame)


def test_encode_rejects_non_frames() -> None:
    with pytest.raises(LocalProtocolError, match="not a relay frame"):
        encode(object())  # type: ignore[arg-type]


def test_encode_accepts_bytearray_fields() -> None:
    assert decode(encode(Bulk(bytearray(b"ab")))) == Bulk(b"ab")  # type: ignore[arg-type]


# -- reprs hide secrets -----------------------------------------------------------


def test_reprs_hide_tokens_secrets_and_payloads() -> None:
    token = b"TOKENTOKENTOKEN!"
    payload = b"PAYLOAD-PAYLOAD"
    cases = [
        (Join(Seat.A, T, token), token),
        (RoomCreated(T, token, b"TOKEN-B-TOKEN-B!"), token),
        (RoomCreated(T, K, token), token),
        (CreateRoom(creation_secret=b"CREATION-SECRET"), b"CREATION-SECRET"),
        (Control(payload), payload),
        (Bulk(payload), payload),
    ]
    for frame, secret in cases:
        text = repr(frame)
        assert secret.decode() not in text
        assert secret.hex() not in text
        assert "TOKEN" not in text
    assert repr(Bulk(payload)) == "Bulk(payload=<15 bytes>)"
    assert repr(Control(payload)) == "Control(payload=<15 bytes>)"
    assert "ticket=" in repr(Join(Seat.A, T, token))  # tickets are public, tokens are not
