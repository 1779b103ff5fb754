"""The relay's fast path: CONTROL and BULK passed on in their encoded form.

The relay never reads an end-to-end payload, so these frames are checked
against the body limits and kept as bytes, never parsed into values and
encoded again; this module is that one exception to "bytes in, frames out".
"""

from __future__ import annotations

from typing import Final, final

from m42d.wire.codec import decode
from m42d.wire.frames import Bulk, Control, Frame
from m42d.wire.kinds import FrameKind
from m42d.wire.limits import _U32, LENGTH_PREFIX_SIZE, _check_body_length

_CONTROL_BYTE: Final = int(FrameKind.CONTROL)
_BULK_BYTE: Final = int(FrameKind.BULK)
_FORWARDED: Final = frozenset({_CONTROL_BYTE, _BULK_BYTE})


@final
class Relayed:
    """A CONTROL or BULK frame kept in its encoded form, for a relay to pass on.

    ``data[start:]`` is the message form (``kind:u8 | payload``).  With
    ``start == 4`` the four bytes before it are the stream form's length
    prefix, so a stream writer sends ``data`` as is and a message writer
    sends ``data[4:]``.  The relay never looks inside the payload (it is
    end-to-end ciphertext), so skipping the decode and the re-encode saves
    a copy, an object and a validation per frame: this is the relay's hot
    path, hence ``__slots__`` and no attrs machinery.

    Build it only from bytes whose body length already passed
    :data:`BODY_LIMITS` (:meth:`FrameDecoder.next_relayed`,
    :func:`relayed_message`); :meth:`frame` decodes it when a transport
    needs a frame value after all.
    """

    __slots__ = ("bulk", "data", "size", "start")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start
        self.bulk = data[start] == _BULK_BYTE
        self.size = len(data) - start - 1
        """Payload length: what a BULK costs in credit."""

    def __repr__(self) -> str:
        kind = "BULK" if self.bulk else "CONTROL"
        return f"<Relayed {kind} <{self.size} bytes>>"

    @property
    def kind(self) -> FrameKind:
        return FrameKind.BULK if self.bulk else FrameKind.CONTROL

    def stream_bytes(self) -> bytes:
        """The stream form, ``length:u32 | kind | payload``."""
        if self.start == LENGTH_PREFIX_SIZE:
            return self.data
        return _U32.pack(len(self.data) - self.start) + self.data[self.start :]

    def message_bytes(self) -> bytes:
        """The message form, ``kind | payload``."""
        return self.data if self.start == 0 else self.data[self.start :]

    def frame(self) -> Control | Bulk:
        """The frame value (decodes the payload into a new object)."""
        with memoryview(self.data) as whole, whole[self.start + 1 :] as body:
            return Bulk(bytes(body)) if self.bulk else Control(bytes(body))


def relayed_message(message: bytes) -> Frame | Relayed:
    """Like :func:`decode`, but CONTROL and BULK come back as :class:`Relayed` (no copy).

    Raises:
        WireError: the message is empty, of an unknown kind or breaks a body rule.
    """
    if message and message[0] in _FORWARDED:
        _check_body_length(message[0], len(message) - 1)
        return Relayed(message, 0)
    return decode(message)
