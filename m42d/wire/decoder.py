"""The incremental decoder of the stream form (TCP+TLS, Unix socket), with bounded memory.

It is the only stateful part of the wire format: it buffers a byte stream,
judges each frame from its 5-byte header before the body arrives, and dies
for good on the first malformed frame, since resynchronising would let a
peer smuggle frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn, final

import attrs

from m42d.errors import LocalProtocolError, WireError
from m42d.wire.codec import _DECODERS
from m42d.wire.frames import Frame
from m42d.wire.limits import (
    _U32,
    LENGTH_PREFIX_SIZE,
    MAX_FRAME,
    FrameTooLargeError,
    _check_body_length,
)
from m42d.wire.relayed import _FORWARDED, Relayed


def _check_decoder_limits(max_frame: int, max_buffer: int) -> None:
    if max_frame < 1:
        raise LocalProtocolError("FrameDecoder max_frame must be at least 1")
    if max_buffer < LENGTH_PREFIX_SIZE + max_frame:
        raise LocalProtocolError("FrameDecoder max_buffer must hold one whole frame of max_frame")


def _validate_limits(decoder: FrameDecoder, _: attrs.Attribute[int], value: int) -> None:
    _check_decoder_limits(decoder.max_frame, decoder.max_buffer)


@final
@attrs.define(on_setattr=attrs.setters.NO_OP)
class FrameDecoder:
    """Incremental decoder for the stream form, in the style of h11/wsproto.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_frame` until it
    returns ``None`` (or iterate).  Bytes live in one ``bytearray`` read from
    an offset; consumed bytes are dropped in bulk when new data arrives, so a
    stream of 64 KiB frames costs one copy into the buffer and one copy out
    into each payload, never a quadratic reshuffle.

    Memory is bounded by ``max_buffer``: a caller that drains after every
    :meth:`receive_data` holds at most one partial frame plus one read, so
    reads must not exceed ``max_buffer - (4 + max_frame)`` bytes (the
    transports' 128 KiB reads fit the default with room to spare).

    ``max_frame`` may be lowered or raised between frames (a relay might keep
    it small until JOIN succeeds); the per-kind body limits apply regardless.
    """

    # The limits are checked when set through the properties below, and the
    # class has no attrs setattr hooks: a hooked __setattr__ on ``_pos``
    # cost ~0.3 us per frame (~5% of the relay's CPU for small messages).
    _max_frame: int = attrs.field(
        default=MAX_FRAME, kw_only=True, alias="max_frame", validator=_validate_limits
    )
    _max_buffer: int = attrs.field(
        default=4 * (LENGTH_PREFIX_SIZE + MAX_FRAME),
        kw_only=True,
        alias="max_buffer",
        validator=_validate_limits,
    )
    _buf: bytearray = attrs.field(factory=bytearray, init=False, repr=False)
    _pos: int = attrs.field(default=0, init=False, repr=False)
    _failure: WireError | None = attrs.field(default=None, init=False, repr=False)

    @property
    def max_frame(self) -> int:
        """Cap on the length prefix; may change between frames."""
        return self._max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        _check_decoder_limits(value, self._max_buffer)
        self._max_frame = value

    @property
    def max_buffer(self) -> int:
        """Cap on buffered bytes: one whole frame of ``max_frame`` plus one read."""
        return self._max_buffer

    @max_buffer.setter
    def max_buffer(self, value: int) -> None:
        _check_decoder_limits(self._max_frame, value)
        self._max_buffer = value

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the stream.

        Raises:
            WireError: the decoder already failed, or holding ``data`` would
                exceed ``max_buffer`` (the caller is not draining, or the peer
                floods faster than frames can be parsed).
        """
        self._raise_if_failed()
        size = len(data) if isinstance(data, bytes | bytearray) else memoryview(data).nbytes
        if not size:
            return
        buf = self._buf
        if self._pos:
            # Compact: drop consumed bytes.  Only a partial frame remains.
            del buf[: self._pos]
            self._pos = 0
        if len(buf) + size > self._max_buffer:
            self._fail(WireError(f"receive buffer would exceed {self._max_buffer} bytes"))
        buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or ``None`` when more bytes are needed.

        A bad length prefix or kind is reported as soon as the 5-byte header
        is buffered, before any of the body arrives.

        Raises:
            WireError: malformed input; the decoder is unusable afterwards.
        """
        item = self._next(False)
        assert not isinstance(item, Relayed)
        return item

    def next_relayed(self) -> Frame | Relayed | None:
        """Like :meth:`next_frame`, but CONTROL and BULK come out as :class:`Relayed`.

        Raises:
            WireError: malformed input; the decoder is unusable afterwards.
        """
        return self._next(True)

    def _next(self, relay: bool) -> Frame | Relayed | None:
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < LENGTH_PREFIX_SIZE:
            return None
        (length,) = _U32.unpack_from(buf, pos)
        if length == 0:
            self._fail(WireError("frame length 0 is invalid: a frame has at least a kind byte"))
        if length > self._max_frame:
            self._fail(
                FrameTooLargeError(f"declared frame length {length} exceeds cap {self._max_frame}")
            )
        if available <= LENGTH_PREFIX_SIZE:
            return None
        kind_byte = buf[pos + LENGTH_PREFIX_SIZE]
        try:
            _check_body_length(kind_byte, length - 1)
        except WireError as exc:
            self._fail(exc)
        end = pos + LENGTH_PREFIX_SIZE + length
        if len(buf) < end:
            return None
        frame: Frame | Relayed
        if relay and kind_byte in _FORWARDED:
            # One copy out of the buffer, prefix included: forwarded as is.
            # Small frames: slicing (two copies) beats making a memoryview.
            if length < 4096:
                frame = Relayed(bytes(buf[pos:end]), LENGTH_PREFIX_SIZE)
            else:
                with memoryview(buf) as whole, whole[pos:end] as raw:
                    frame = Relayed(bytes(raw), LENGTH_PREFIX_SIZE)
        else:
            try:
                with memoryview(buf) as whole, whole[pos + LENGTH_PREFIX_SIZE + 1 : end] as body:
                    frame = _DECODERS[kind_byte](body)
            except WireError as exc:
                self._fail(exc)
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return frame

    def frames(self) -> Iterator[Frame]:
        """Drain every complete frame currently buffered."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def eof(self) -> None:
        """Declare the stream ended; an unfinished frame is an error.

        Raises:
            WireError: the decoder already failed, or a partial frame is buffered.
        """
        self._raise_if_failed()
        if self.buffered:
            self._fail(WireError("connection closed mid-frame"))

    def _fail(self, exc: WireError) -> NoReturn:
        # Drop the buffer rather than resize it: a traceback may still hold a
        # view of it, and its contents are worthless once framing is lost.
        self._failure = exc
        self._buf = bytearray()
        self._pos = 0
        raise exc

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(f"decoder already failed: {self._failure}")
