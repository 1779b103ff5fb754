"""Points docs/protocol.md states because an independent implementer had to guess them.

Each test is one of issue 16's points: it pins the behaviour the spec now
states, through the session's public inputs only.
"""

from __future__ import annotations

import pytest

from m42d.errors import RemoteProtocolError
from m42d.session import (
    PAD_BUCKET,
    TEXT_PART,
    Envelope,
    SessionFailed,
    TextReceived,
    decode_record,
    encode_record,
)
from m42d.session import RecordType as R
from tests.session_harness import Pair


def test_an_aligned_record_gets_no_padding_and_misaligned_ones_are_refused() -> None:
    header = 3  # type:u8, length:u16
    assert len(encode_record(R.PING, bytes(PAD_BUCKET - header))) == PAD_BUCKET
    assert len(encode_record(R.PING, bytes(PAD_BUCKET - header + 1))) == 2 * PAD_BUCKET
    record = encode_record(R.ACK, bytes(8))
    assert decode_record(record) == (R.ACK, bytes(8))
    for bad in (record[:-1], record + b"\x00", b"", b"\x03\x00"):
        with pytest.raises(RemoteProtocolError):
            decode_record(bad)


def test_a_text_part_may_end_inside_a_utf8_character() -> None:
    text = "a" * (TEXT_PART - 1) + "\u00e9 and more"  # the first part ends inside 'é'
    assert len(text.encode()[:TEXT_PART].decode("utf-8", errors="ignore")) == TEXT_PART - 1
    pair = Pair.make()
    pair.connect()
    pair.a.session.send_text(text)
    pair.pump()
    assert [e.text for e in pair.b.of(TextReceived)] == [text]
    assert not pair.b.of(SessionFailed)


def test_the_empty_text_is_a_text() -> None:
    pair = Pair.make()
    pair.connect()
    pair.a.session.send_text("")
    pair.pump()
    assert [e.text for e in pair.b.of(TextReceived)] == [""]


def test_peer_down_drops_the_keys_and_only_a_starts_again_on_peer_up() -> None:
    pair = Pair.make()
    pair.connect()
    a, b = pair.a.session, pair.b.session
    assert a.established
    assert b.established
    a.peer_offline()
    b.peer_offline()
    assert not a.established
    assert not b.established
    a.send_text("queued while the peer is away")
    assert a.data_to_send() == []  # no keys: nothing goes out
    b.peer_online(pair.now)
    assert b.data_to_send() == []  # B never starts a handshake
    a.peer_online(pair.now)
    assert [payload[0] for payload in _payloads(a.data_to_send())] == [Envelope.HS1]


def _payloads(items: list[object]) -> list[bytes]:
    """CONTROL payloads, whether data_to_send() returns them bare or with a lane tag."""
    return [item if isinstance(item, bytes) else item[1] for item in items]  # type: ignore[index]
