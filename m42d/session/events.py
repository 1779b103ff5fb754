"""What the session machine tells the user interface: plain frozen values.

The glue reads them with :meth:`m42d.session.Session.events`, oldest first.
Nothing in an event is trusted for more than it says: names, reasons and
texts come from the peer and are escaped by whoever shows them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from m42d.session.records import ResetReason


@attrs.frozen
class HandshakeComplete:
    """A session is established; the safety words stay the same while neither key changes."""

    words: tuple[str, ...]
    peer_key: bytes
    first_contact: bool


@attrs.frozen
class PeerKeyChanged:
    """The peer's static key differs from the pinned one; nothing flows until trusted."""

    pinned: bytes
    offered: bytes
    words: tuple[str, ...]
    """The safety words with the offered key: compare them before trusting it."""


@attrs.frozen
class TextReceived:
    seq: int
    text: str


@attrs.frozen
class TextRefused:
    """The peer sent a text this side must not show (over the cap, not UTF-8).

    Answered with TEXT_REFUSED instead of ACK, so that the peer stops
    re-sending it and does not count it as delivered; only a sender that
    broke the protocol's rules can cause this.
    """

    seq: int
    size: int
    reason: str


@attrs.frozen
class TextRejected:
    """The peer refused our text ``seq`` (TEXT_REFUSED): it will not be shown or sent again."""

    seq: int
    reason: str


@attrs.frozen
class TextDelivered:
    """The peer acknowledged our text end to end."""

    seq: int


@attrs.frozen
class FileOffered:
    """The peer offers a file: answer with accept_file() or reject_file()."""

    file_id: int
    name: str
    size: int


@attrs.frozen
class SendChunks:
    """Start (or restart) sending the file's chunks from ``start`` on the bulk lane."""

    file_id: int
    start: int


@attrs.frozen
class FileChunk:
    """Decrypted, authenticated data to write at ``offset`` of the incoming file."""

    file_id: int
    index: int
    offset: int
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class FileProgress:
    """Bytes confirmed so far: received (incoming) or acked by the peer (outgoing)."""

    file_id: int
    outgoing: bool
    done: int
    size: int


@attrs.frozen
class FileCompleted:
    """Incoming file fully received and authenticated (its final chunk): move it into place."""

    file_id: int


@attrs.frozen
class FileDelivered:
    """The peer received, authenticated and saved our file."""

    file_id: int


@attrs.frozen
class FileFailed:
    """A transfer ended without success (rejected, cancelled, size mismatch)."""

    file_id: int
    outgoing: bool
    code: int
    reason: str


@attrs.frozen
class SessionFailed:
    """The secure session broke; the machine starts over by itself where it can.

    ``why`` is the cause as RESET carries it: ``AUTHENTICATION`` (the room
    secrets differ, or someone is in the middle) on B when message 3 fails
    and on A when B's RESET says so, so both sides can name it.  On A it is
    B's unauthenticated word: a hint for the user, acted on by nothing.
    """

    reason: str
    why: ResetReason = ResetReason.UNSPECIFIED


Event = (
    HandshakeComplete
    | PeerKeyChanged
    | TextReceived
    | TextRefused
    | TextRejected
    | TextDelivered
    | FileOffered
    | SendChunks
    | FileChunk
    | FileProgress
    | FileCompleted
    | FileDelivered
    | FileFailed
    | SessionFailed
)

EventSink = Callable[[Event], None]
"""Where a part of the machine puts an event for the user interface."""
