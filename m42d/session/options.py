"""The tunable parts of a :class:`~m42d.session.Session`, as one typed value.

Callers that build a Session indirectly (the client engine builds one per
seat) used to forward ``**kwargs``, which type checkers cannot see through:
a misspelt timer passed silently until run time.  :class:`SessionOptions`
names each knob once, with the same defaults as :class:`Session` (a test
holds the two together), and :func:`open_session` applies them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import final

import attrs

from m42d.session.keys import KeyStore
from m42d.session.machine import Session
from m42d.session.records import DEFAULT_MAX_TEXT
from m42d.ticket import Seat


@final
@attrs.frozen
class SessionOptions:
    """Limits and timers of one session; see :class:`Session` for each one."""

    max_text: int = DEFAULT_MAX_TEXT
    handshake_timeout: float = 30.0
    rehandshake_records: int = 10_000
    rehandshake_seconds: float = 3600.0
    probe_after: float = 15.0
    stall_after: float = 30.0
    random: Callable[[int], bytes] = attrs.field(default=os.urandom, repr=False)


def open_session(
    seat: Seat,
    room_id: bytes,
    secret: bytes,
    keys: KeyStore,
    options: SessionOptions | None = None,
) -> Session:
    """Make a :class:`Session` for ``seat`` with ``options`` (default: the defaults)."""
    o = options or SessionOptions()
    return Session(
        seat,
        room_id,
        secret,
        keys,
        max_text=o.max_text,
        handshake_timeout=o.handshake_timeout,
        rehandshake_records=o.rehandshake_records,
        rehandshake_seconds=o.rehandshake_seconds,
        probe_after=o.probe_after,
        stall_after=o.stall_after,
        random=o.random,
    )
