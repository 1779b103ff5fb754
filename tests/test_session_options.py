"""SessionOptions is the typed way to tune a Session: it must mirror it exactly."""

from __future__ import annotations

import attrs

from m42d.session import MemoryKeyStore, Session, SessionOptions, open_session
from m42d.ticket import Seat


def _knobs(cls: type) -> dict[str, object]:
    return {
        f.name: f.default for f in attrs.fields(cls) if f.init and f.default is not attrs.NOTHING
    }


def test_options_name_every_knob_of_session_with_its_default() -> None:
    """A knob added to Session but not to SessionOptions (or a default that
    drifts) would make the engine's sessions differ from a plain Session."""
    assert _knobs(SessionOptions) == _knobs(Session)


def test_open_session_applies_every_option() -> None:
    def draw(n: int) -> bytes:
        return b"\x01" * n

    options = SessionOptions(
        max_text=1000,
        handshake_timeout=1.0,
        rehandshake_records=7,
        rehandshake_seconds=9.0,
        probe_after=2.0,
        stall_after=3.0,
        random=draw,
    )
    session = open_session(Seat.A, b"r" * 16, b"s" * 32, MemoryKeyStore(), options)
    assert {name: getattr(session, name) for name in _knobs(Session)} == attrs.asdict(
        options, recurse=False
    )


def test_open_session_without_options_is_a_default_session() -> None:
    session = open_session(Seat.B, b"r" * 16, b"s" * 32, MemoryKeyStore())
    assert {name: getattr(session, name) for name in _knobs(Session)} == _knobs(SessionOptions)
