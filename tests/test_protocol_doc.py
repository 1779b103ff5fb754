"""docs/protocol.md is normative: its known-answer values must be what the code produces.

Each value is recomputed here from the code, not copied from the document,
so a protocol change that forgets the spec (or a spec edit that forgets the
code) fails this test.
"""

from __future__ import annotations

import json
from pathlib import Path

from m42d.crypto.sas import sas_words
from m42d.crypto.stream import FileKey, StreamEncryptor
from m42d.link import make_links
from m42d.ticket import Seat, TicketKeyRing

from .test_session_vectors import build_transcript

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def test_link_and_ticket_example() -> None:
    ring = TicketKeyRing({1: bytes(range(32))}, current=1)
    expires = 1767225600
    issued = ring.mint(
        now=expires - 3600, ttl=3600, room_id=bytes.fromhex("00112233445566778899aabbccddeeff")
    )
    assert issued.ticket.to_bytes().hex() in SPEC.replace(" ", "").replace("\n", "")
    assert issued.token(Seat.A).hex() in SPEC
    assert issued.token(Seat.B).hex() in SPEC
    link_b = make_links("wss://relay.example.org", issued, bytes(range(0x20, 0x40)))[1]
    assert link_b.format() in SPEC


def test_stream_example() -> None:
    key = FileKey(key=bytes(range(32)), salt=bytes(range(32, 64)))
    sealed = StreamEncryptor(key).encrypt_chunk(0, b"hello", last=True)
    assert sealed.hex() in SPEC


def test_sas_example() -> None:
    assert " ".join(sas_words(bytes(32))) in SPEC


def test_session_transcript_is_referenced_and_current() -> None:
    assert "docs/vectors/session-transcript.json" in SPEC
    published = json.loads((ROOT / "docs/vectors/session-transcript.json").read_text())
    assert published == json.loads(json.dumps(build_transcript()))


def test_safety_words_example() -> None:
    from m42d.crypto.sas import safety_words

    words = " ".join(safety_words(bytes(range(16)), bytes(32), bytes(range(32))))
    assert f"safety words = {words}" in SPEC
