"""The relay's side of a WebSocket: wsproto on the connection's own task, nothing else.

trio-websocket gives every connection a reader task, a nursery, a message
channel and several events and locks; for a relay holding thousands of mostly
idle connections that was most of a connection's memory (section d of
docs/benchmarks.md) and a good part of each join's CPU.  Here the relay's
reader task drives wsproto directly: it reads the socket only when it wants
a message, so the TCP window is the only buffer, and a batch of frames the
relay writes is one ``send_all``.  Clients keep trio-websocket (one
connection each, where the convenience is worth it).

Behaviour matches what the relay relied on before: binary messages only (a
text message is a :class:`~m42d.errors.WireError`), a message longer than
``max_message`` is closed with 1009, pings are answered, a close is answered
and reported as :class:`~m42d.errors.ConnectionClosed` after the messages
that came before it, and closing sends a close frame and waits (briefly) for
the answer so the last frames are not lost to a TCP reset.

Work is bounded per turn (the relay is one event loop): wsproto parses
lazily, one frame per event, so frames are pulled from it at most
:data:`~m42d.transport.FRAMES_PER_TURN` (and
:data:`~m42d.transport.BYTES_PER_TURN` payload bytes) between two
checkpoints, and a message may come in at most :data:`MAX_FRAGMENTS`
frames (1009 beyond).  A message in 65,601 one-byte fragments used to keep
the loop busy for 1.3 s.
"""

from __future__ import annotations

import collections
import contextlib
import struct
from collections.abc import Iterator, Sequence
from typing import Final, final

import h11
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from m42d.errors import ConnectionBroken, ConnectionClosed, PeerClosed, WireError
from m42d.transport import (
    BYTES_PER_TURN,
    FRAMES_PER_TURN,
    READ_SIZE,
    STREAM_ERRORS,
    acquire_send_lock,
)
from m42d.wire import MAX_FRAME, Frame, Relayed, decode, encode, relayed_message
from m42d_ws import http

__all__ = ["ServerWebSocket", "accept_websocket"]

CLOSE_TIMEOUT: Final = 2.0
CLOSE_DRAIN_LIMIT: Final = 1 << 20
"""Bytes read while waiting for the answer to our close, at most (then the socket closes)."""
CLOSE_DRAIN_FRAMES: Final = 4 * FRAMES_PER_TURN
"""Frames parsed while waiting for that answer, at most: a client still sending a
flood of tiny fragments would otherwise cost ~20 us a frame for the whole wait."""
MESSAGE_TOO_BIG: Final = 1009
MAX_FRAGMENTS: Final = 128
"""WebSocket frames one message may be split into.  Browsers and the common
libraries send a message in one frame, or in 4 KiB pieces (17 for the
largest relay frame); parsing a frame costs ~20 us, so this bounds a
message's parsing cost to a few ms."""
_NORMAL: Final = 1000

AnyStream = trio.SocketStream | trio.SSLStream[trio.SocketStream]

_FIN_BINARY: Final = 0x82
_HEAD_7: Final = struct.Struct("!BB")
_HEAD_16: Final = struct.Struct("!BBH")
_HEAD_64: Final = struct.Struct("!BBQ")


def _binary_header(size: int) -> bytes:
    """The RFC 6455 (5.2) header of one final, unmasked binary frame of ``size`` bytes."""
    if size <= 125:
        return _HEAD_7.pack(_FIN_BINARY, size)
    if size <= 0xFFFF:
        return _HEAD_16.pack(_FIN_BINARY, 126, size)
    return _HEAD_64.pack(_FIN_BINARY, 127, size)


@final
class ServerWebSocket:
    """A :class:`~m42d.transport.FrameConnection` (and relaying connection) over wsproto."""

    def __init__(
        self,
        stream: AnyStream,
        ws: Connection,
        *,
        transport: str,
        address: str,
        max_message: int = MAX_FRAME,
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._transport = transport
        self._address = address
        self._max_message = max_message
        self._messages: collections.deque[bytes] = collections.deque()
        self._partial = bytearray()
        """A message arriving in several frames (or pieces): one buffer, so a client
        sending many small fragments costs their bytes, not an object each."""
        self._fragments = 0
        """Frames of the message in ``_partial`` so far."""
        self._events: Iterator[Event] | None = ws.events()
        """wsproto's events for the bytes it holds (parsed lazily, one frame per
        event); None once they are used up and the socket must be read."""
        self._turn_frames = 0
        self._turn_bytes = 0
        """Frames and payload bytes taken from wsproto since the last checkpoint."""
        self._ending: BaseException | None = None
        """What to raise once the messages before it are taken (close, 1009, text)."""
        self._close_code: int | None = None
        self._unusable = False
        """No close handshake is possible: the socket failed, reached EOF, a write was cut
        short (half a frame may be on the wire), or wsproto's parser gave up."""
        self._send_lock = trio.StrictFIFOLock()

    def __repr__(self) -> str:
        return f"<ServerWebSocket {self._transport}>"

    @property
    def transport(self) -> str:
        return self._transport

    @property
    def address(self) -> str:
        return self._address

    @property
    def close_code(self) -> int | None:
        """The close code sent or received (1006: the connection ended without one)."""
        return self._close_code

    # -- sending -------------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self._send_messages([encode(frame)])

    async def send_many(self, frames: Sequence[Frame]) -> None:
        await self._send_messages([encode(frame) for frame in frames])

    async def send_batch(self, items: Sequence[Frame | Relayed]) -> None:
        await self._send_messages(
            [
                memoryview(item.data)[item.start :] if isinstance(item, Relayed) else encode(item)
                for item in items
            ]
        )

    async def _send_messages(self, messages: Sequence[bytes | memoryview]) -> None:
        """Frame ``messages`` here, one final unmasked binary frame each, in one write.

        wsproto's ``send`` would copy each payload four times (into a
        bytearray, onto the header, into another bytearray, onto b"") and
        run its generic path per frame; a relay forwarding 64 KiB frames
        paid ~10% of its CPU for that.  A server frame needs only the
        RFC 6455 header (no mask, no extension: none is negotiated), so
        the payload is copied once, by the join.  wsproto still owns the
        state: a frame is refused once it has sent or received a close.
        """
        if not messages:
            return
        if self._ws.state is not ConnectionState.OPEN:
            raise _ended(self._close_code)
        parts: list[bytes | memoryview] = []
        for message in messages:
            parts.append(_binary_header(len(message)))
            parts.append(message)
        await self._send_raw(b"".join(parts))

    async def _send_raw(self, data: bytes) -> None:
        lock = self._send_lock
        await acquire_send_lock(lock)
        try:
            await self._stream.send_all(data)
        except STREAM_ERRORS as exc:
            self._unusable = True
            if self._close_code is None:
                self._close_code = 1006
            raise ConnectionBroken("websocket connection broken") from exc
        except BaseException:  # cancelled mid-write: the framing may be cut
            self._unusable = True
            raise
        finally:
            lock.release()

    # -- receiving -----------------------------------------------------------------------

    async def receive(self) -> Frame:
        await self._fill()
        return decode(self._messages.popleft())

    async def receive_relayed(self) -> list[Frame | Relayed]:
        await self._fill()
        # Every message already received, in one call (as the stream transport does).
        items: list[Frame | Relayed] = []
        messages = self._messages
        while messages:
            try:
                items.append(relayed_message(messages[0]))
            except WireError:
                if items:
                    break  # raised on the next call, after these
                messages.popleft()
                raise
            messages.popleft()
        return items

    async def _fill(self) -> None:
        """Parse until at least one whole message is queued, or raise how the connection ended.

        Cancel-safe: what was parsed stays queued (``_messages``,
        ``_partial``) and the rest stays in wsproto's buffer.
        """
        while not self._messages:
            if self._ending is not None:
                raise self._ending
            if self._events is None:
                await self._read()
            else:
                await self._handle_events()

    async def _read(self) -> None:
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except STREAM_ERRORS as exc:
            self._unusable = True
            self._end(ConnectionBroken("websocket connection broken"), 1006)
            raise ConnectionBroken("websocket connection broken") from exc
        # receive_some is a checkpoint: a new turn begins.
        self._turn_frames = self._turn_bytes = 0
        if not data:
            self._unusable = True
            self._end(ConnectionBroken("websocket closed (no close frame)"), 1006)
            return
        try:
            self._ws.receive_data(_as_bytes(data))
        except RemoteProtocolError as exc:  # pragma: no cover - wsproto closes with 1002
            self._unusable = True
            self._end(ConnectionBroken(f"websocket protocol error: {exc}"), 1002)
            return
        self._events = self._ws.events()

    async def _handle_events(self) -> None:
        """Take events from wsproto until they run out or the turn is used up.

        When the turn is used up with messages queued, they go to the caller
        first (the next call begins with the checkpoint); without any, this
        checkpoints and goes on.
        """
        events = self._events
        while events is not None:
            if self._ending is not None:
                self._events = None  # nothing after the end counts: parse no more
                return
            if self._turn_frames >= FRAMES_PER_TURN or self._turn_bytes >= BYTES_PER_TURN:
                if self._messages:
                    return
                await trio.lowlevel.checkpoint()
                self._turn_frames = self._turn_bytes = 0
            event = next(events, None)
            if event is None:
                self._events = None
                return
            self._turn_frames += 1
            if isinstance(event, BytesMessage):
                await self._on_bytes(event)
            elif isinstance(event, TextMessage):
                self._end(WireError("text message: relay frames travel in binary messages"))
            elif isinstance(event, Ping):
                with contextlib.suppress(ConnectionClosed, LocalProtocolError):
                    await self._send_raw(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                # wsproto reports a frame it cannot parse as a close (1002,
                # 1007...) while its state stays OPEN, and parses nothing
                # after it: answer, but do not wait for more in aclose.
                parse_failed = self._ws.state is ConnectionState.OPEN
                if parse_failed:
                    self._unusable = True
                self._close_code = event.code
                with contextlib.suppress(ConnectionClosed, LocalProtocolError):
                    await self._send_raw(self._ws.send(event.response()))
                self._end(
                    ConnectionBroken(f"websocket protocol error ({event.code})")
                    if parse_failed
                    else _ended(event.code)
                )
            # Pong: nothing to do.

    async def _on_bytes(self, event: BytesMessage) -> None:
        data = event.data
        self._turn_bytes += len(data)
        partial = self._partial
        if event.frame_finished:  # a frame that arrived in pieces is still one frame
            self._fragments += 1
        if len(partial) + len(data) > self._max_message or self._fragments > MAX_FRAGMENTS:
            partial.clear()
            self._fragments = 0
            await self._close(MESSAGE_TOO_BIG, "message too big")
            self._end(ConnectionBroken(f"websocket closed ({MESSAGE_TOO_BIG})"))
            return
        if event.message_finished:
            self._fragments = 0
            if not partial:
                self._messages.append(bytes(data))  # wsproto unmasks into bytearrays
            else:
                partial += data
                self._messages.append(bytes(partial))
                partial.clear()
        else:
            partial += data

    def _end(self, error: BaseException, code: int | None = None) -> None:
        if self._ending is None:
            self._ending = error
        if code is not None and self._close_code is None:
            self._close_code = code

    async def _close(self, code: int, reason: str) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            return
        if self._close_code is None:
            self._close_code = code
        with contextlib.suppress(ConnectionClosed, LocalProtocolError):
            await self._send_raw(self._ws.send(CloseConnection(code=code, reason=reason)))

    async def aclose(self) -> None:
        """Send a close frame, wait briefly for the answer, then close the socket.

        Waiting matters: closing a socket with unread input makes the kernel
        send a reset, which can destroy the last frames (an ERROR) before
        the client reads them.  The wait is bounded in time and in bytes,
        skipped when no handshake is possible, and not shielded: a relay
        being cancelled closes at once.
        """
        try:
            if not self._unusable:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._close_handshake()
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _close_handshake(self) -> None:
        if self._ws.state is ConnectionState.OPEN:
            await self._close(_NORMAL, "")
        drained = parsed = 0
        while (
            self._ws.state is not ConnectionState.CLOSED
            and not self._unusable
            and drained < CLOSE_DRAIN_LIMIT
            and parsed < CLOSE_DRAIN_FRAMES
        ):
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except STREAM_ERRORS:
                return
            if not data:
                return
            drained += len(data)
            try:
                self._ws.receive_data(_as_bytes(data))
            except RemoteProtocolError:  # pragma: no cover - defensive
                return
            for event in self._ws.events():
                if isinstance(event, CloseConnection) and self._ws.state is ConnectionState.OPEN:
                    return  # a parse failure: nothing more will be understood
                parsed += 1
                if parsed >= CLOSE_DRAIN_FRAMES:
                    return
                if parsed % FRAMES_PER_TURN == 0:
                    await trio.lowlevel.checkpoint()  # the same bound as _handle_events


async def accept_websocket(
    stream: AnyStream, *, transport: str, address: str
) -> ServerWebSocket | None:
    """Read the request; upgrade it on an m42 path, else answer it (m42d_ws.http) and close.

    Plain requests outside the m42 paths get the browser client
    (:mod:`m42d.web.pages`), so a page and its WebSocket share one origin.

    Returns None when the request was answered or the client went away;
    the caller bounds the time this may take.
    """
    request = await _read_request(stream)
    if request is None:
        return None
    if isinstance(request, int):  # not HTTP/1.1, or a head over HEAD_LIMIT
        await _answer(stream, http.error_answer(request))
        return None
    event, trailing = request
    if not (http.is_websocket_upgrade(event) and http.is_m42_path(event.target)):
        plain = http.answer_plain(event, tls=transport == "wss")
        await _answer(stream, plain, head=event.method == b"HEAD")
        return None
    answer = http.accept_upgrade(event)
    if isinstance(answer, http.PlainAnswer):
        await _answer(stream, answer)
        return None
    try:
        await stream.send_all(answer)
    except STREAM_ERRORS:
        return None
    # From here on only the frame protocol runs: no handshake state is kept.
    ws = Connection(ConnectionType.SERVER)
    if trailing:
        # RFC 6455 has the client wait for the 101, but frames sent right
        # behind the request (JOIN, often) must not vanish: parsed by the
        # first receive, like any others.
        ws.receive_data(trailing)
    return ServerWebSocket(stream, ws, transport=transport, address=address)


async def _read_request(stream: AnyStream) -> tuple[h11.Request, bytes] | int | None:
    """The request head and any bytes after it; an HTTP status to refuse with; None: gone."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=http.HEAD_LIMIT)
    request: h11.Request | None = None
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            return exc.error_status_hint if request is None else None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(READ_SIZE)
            except STREAM_ERRORS:
                return None
            if not data:
                return None
            connection.receive_data(_as_bytes(data))
        elif isinstance(event, h11.Request):
            request = event
            if not http.is_websocket_upgrade(event):
                return event, b""  # answered at once; the connection then closes
        elif event is h11.PAUSED and request is not None:
            # An upgrade request, complete: what follows is the new protocol.
            return request, bytes(connection.trailing_data[0])
        elif isinstance(event, h11.ConnectionClosed):
            return None
        # EndOfMessage (and Data of a body nobody should send): read on.


async def _answer(stream: AnyStream, answer: http.Answer, *, head: bool = False) -> None:
    """A refusal or plain answer is best effort: the client may already be gone."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(http.serialize(answer, head=head))


def _as_bytes(data: bytes | bytearray) -> bytes:
    """trio's streams return bytes; the type allows bytearray, wsproto's does not."""
    return data if isinstance(data, bytes) else bytes(data)


def _ended(code: int | None) -> ConnectionClosed:
    """How a connection that got (or sent) close ``code`` ended: on purpose, or broken."""
    if code in (1000, 1001):  # normal closure, going away
        return PeerClosed(f"websocket closed ({code})")
    return ConnectionBroken(f"websocket closed ({code if code is not None else 'no close frame'})")
