"""Length-prefixed relay frames over any trio byte stream (TLS, TCP, Unix, memory).

:class:`StreamFrameConnection` is the ready-made :class:`FrameConnection`
(with the relay's fast path, :class:`RelayingConnection`) for every
byte-stream transport: the built-in ``tls`` one, the Unix plugin, tests.

One private attribute of another library is read here, trio's
``SSLStream._ssl_object``, because no public way exists to take a TLS record
that OpenSSL has already received without another trip through the
scheduler (see :meth:`StreamFrameConnection._read_buffered_records`; a 64 KiB
frame otherwise costs four checkpoints).  It is looked up with ``getattr``
and checked to be an ``ssl.SSLObject``: if trio renames it, the connection
silently takes the ordinary path, correct and somewhat slower.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from typing import final

import trio

from m42d.errors import PeerClosed, WireError
from m42d.transport.api import BYTES_PER_TURN, FRAMES_PER_TURN, READ_SIZE
from m42d.transport.edges import STREAM_ERRORS, raise_closed
from m42d.wire import LENGTH_PREFIX_SIZE, MAX_FRAME, Frame, FrameDecoder, Relayed, encode_stream

__all__ = ["StreamFrameConnection", "acquire_send_lock"]


async def acquire_send_lock(lock: trio.StrictFIFOLock) -> None:
    """Take a connection's send lock, without a checkpoint when it is free.

    The ``send_all`` that follows checkpoints anyway, so a free lock costs no
    second trip through the scheduler per write (the transports' hot path).
    """
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


@final
class StreamFrameConnection:
    """A :class:`FrameConnection` over any trio byte stream (TLS, TCP, Unix, memory).

    Frames use the stream form of :mod:`m42d.wire` (``length:u32 | kind | body``).
    Reads are :data:`READ_SIZE` bytes; the decoder buffer is capped at one read
    plus one frame, so a peer cannot make it grow.  Between two checkpoints
    it hands on at most :data:`FRAMES_PER_TURN` frames and decodes at most
    :data:`BYTES_PER_TURN` bytes, whatever the peer sends.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        transport: str,
        address: str = "",
        max_frame: int = MAX_FRAME,
        read_size: int = READ_SIZE,
    ) -> None:
        self._stream = stream
        self._transport = transport
        self._address = address
        self._read_size = read_size
        self._decoder = FrameDecoder(
            max_frame=max_frame, max_buffer=read_size + LENGTH_PREFIX_SIZE + max_frame
        )
        self._send_lock = trio.StrictFIFOLock()
        # See _read_buffered_records.  Private to trio, hence looked up, not assumed.
        ssl_object = getattr(stream, "_ssl_object", None)
        self._ssl_object: ssl.SSLObject | None = (
            ssl_object
            if isinstance(stream, trio.SSLStream) and isinstance(ssl_object, ssl.SSLObject)
            else None
        )
        self._records_buffered = False
        self._closed = False
        self._turn_frames = 0
        self._turn_bytes = 0
        """Frames handed on and bytes decoded since the last checkpoint."""

    def __repr__(self) -> str:
        return f"<StreamFrameConnection {self._transport}>"

    @property
    def transport(self) -> str:
        return self._transport

    @property
    def address(self) -> str:
        return self._address

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream (for TLS details such as the peer's certificate)."""
        return self._stream

    async def send(self, frame: Frame) -> None:
        await self._send_bytes(encode_stream(frame))

    async def send_many(self, frames: Sequence[Frame]) -> None:
        if frames:
            await self._send_bytes(b"".join([encode_stream(frame) for frame in frames]))

    async def send_batch(self, items: Sequence[Frame | Relayed]) -> None:
        if len(items) == 1:
            item = items[0]
            await self._send_bytes(
                item.stream_bytes() if isinstance(item, Relayed) else encode_stream(item)
            )
        elif items:
            await self._send_bytes(
                b"".join(
                    [
                        item.stream_bytes() if isinstance(item, Relayed) else encode_stream(item)
                        for item in items
                    ]
                )
            )

    async def _send_bytes(self, data: bytes) -> None:
        # try/except inline rather than map_stream_errors(): a generator
        # context manager per frame was ~4% of the relay's CPU under bulk.
        lock = self._send_lock
        await acquire_send_lock(lock)
        try:
            await self._stream.send_all(data)
        except STREAM_ERRORS as exc:
            raise_closed(exc)
        finally:
            lock.release()

    async def _next_turn(self) -> None:
        # Before anything is taken from the decoder, so cancelling it loses nothing.
        await trio.lowlevel.checkpoint()
        self._turn_frames = self._turn_bytes = 0

    async def receive(self) -> Frame:
        if self._turn_frames >= FRAMES_PER_TURN:
            await self._next_turn()
        decoder = self._decoder
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                self._turn_frames += 1
                return frame
            await self._fill()

    async def receive_relayed(self) -> list[Frame | Relayed]:
        if self._turn_frames >= FRAMES_PER_TURN:
            await self._next_turn()
        decoder = self._decoder
        while True:
            item = decoder.next_relayed()
            if item is not None:
                break
            await self._fill()
        # Everything else already buffered (up to the turn's share), in one
        # call: per-frame calls and clock reads were a fifth of the relay's
        # CPU for small messages.
        items = [item]
        room = FRAMES_PER_TURN - self._turn_frames - 1
        try:
            while room > 0 and (item := decoder.next_relayed()) is not None:
                items.append(item)
                room -= 1
        except WireError:
            pass  # the decoder stays failed: the next call raises it again
        self._turn_frames += len(items)
        return items

    async def _fill(self) -> None:
        if (
            self._records_buffered
            and self._turn_bytes < BYTES_PER_TURN
            and self._read_buffered_records()
        ):
            return
        try:
            data = await self._stream.receive_some(self._read_size)
        except STREAM_ERRORS as exc:
            raise_closed(exc)
        # receive_some is a checkpoint: a new turn begins.
        self._turn_frames = 0
        self._turn_bytes = len(data)
        if not data:
            self._decoder.eof()
            raise PeerClosed("the other end closed the connection")
        self._decoder.receive_data(data)
        self._records_buffered = self._ssl_object is not None

    def _read_buffered_records(self) -> bool:
        """Decrypt a TLS record already received, without a trip through the scheduler.

        trio's ``SSLStream.receive_some`` reads 64 KiB from the socket but
        OpenSSL returns one 16 KiB record per call, so a 64 KiB frame took
        four ``receive_some`` calls, each a checkpoint.  Records already in
        the SSL object's input buffer are read here directly; when none is
        complete (or on any error, which the next ``receive_some`` reports
        through trio's own mapping) this returns False and the caller reads
        the socket as before.  Anything the read makes OpenSSL want to send
        stays in trio's outgoing buffer, flushed by the next send or receive.
        """
        ssl_object = self._ssl_object
        if ssl_object is None or self._closed:  # pragma: no cover - guarded by the caller
            self._records_buffered = False
            return False
        try:
            data = ssl_object.read(self._read_size)
        except (ssl.SSLError, ValueError):
            data = b""
        if not data:
            self._records_buffered = False
            return False
        self._turn_bytes += len(data)
        self._decoder.receive_data(data)
        return True

    async def aclose(self) -> None:
        self._closed = True
        self._records_buffered = False
        # A broken stream is closed all the same; nothing to report.
        with contextlib.suppress(*STREAM_ERRORS):
            await self._stream.aclose()
