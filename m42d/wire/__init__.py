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

The modules behind this facade each hold one part; callers import from here:

* :mod:`~m42d.wire.kinds`: frame kinds, lanes and ERROR codes (the protocol's numbers);
* :mod:`~m42d.wire.limits`: the size caps, :data:`BODY_LIMITS` and the one body-size check;
* :mod:`~m42d.wire.fields`: the field codecs the frame classes share;
* :mod:`~m42d.wire.frames`: one value class per kind, and :data:`Frame`;
* :mod:`~m42d.wire.codec`: :func:`encode`, :func:`encode_stream` and :func:`decode`;
* :mod:`~m42d.wire.relayed`: :class:`Relayed`, the relay's forward-without-decode path;
* :mod:`~m42d.wire.decoder`: :class:`FrameDecoder`, the incremental stream decoder.

The kinds still share one table (:data:`BODY_LIMITS`) and one set of field
codecs, so the split follows those seams rather than the kinds: an
implementer reads :mod:`~m42d.wire.frames` side by side with
docs/protocol.md, section "Relay wire format".
"""

from __future__ import annotations

from m42d.wire.codec import decode, encode, encode_stream
from m42d.wire.decoder import FrameDecoder
from m42d.wire.frames import (
    Bulk,
    Burn,
    Control,
    CreateRoom,
    Credit,
    Error,
    Frame,
    GoAway,
    Join,
    Joined,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    RoomCreated,
    lane_of,
)
from m42d.wire.kinds import ERROR_SENTENCES, ErrorCode, FrameKind, Lane, error_code_for
from m42d.wire.limits import (
    BODY_LIMITS,
    LENGTH_PREFIX_SIZE,
    MAX_FRAME,
    MAX_PAYLOAD,
    MAX_PING_DATA,
    MAX_SECRET,
    MAX_TEXT,
    WIRE_VERSION,
    FrameTooLargeError,
)
from m42d.wire.relayed import Relayed, relayed_message

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
