"""Transports: how relay frames travel between a client and the relay.

A transport moves :mod:`m42d.wire` frames over one kind of connection
(WebSocket, TCP+TLS, a Unix socket, ...).  It has two sides:

* the relay calls :meth:`Transport.open_listener` and then
  :meth:`FrameListener.serve`, which hands each accepted connection, already
  speaking frames, to the relay's handler;
* the client calls :meth:`Transport.connect`, an async context manager that
  yields one :class:`FrameConnection`.

Transports are plugins found through the ``m42d.transports`` entry-point
group, keyed by URL scheme; :func:`load_transports` loads them and skips
(with a log line) any plugin that fails, so one broken plugin never takes the
daemon or the other transports down.  The built-in ones in ``plugins/``
register exactly like an outside plugin would.

Rules every transport follows (``docs/plugins.md`` explains them to authors):

* Foreign exceptions stop at this boundary: OS, TLS and library errors
  become :class:`~m42d.errors.TransportError` (could not connect, listen or
  carry) or its subclass :class:`~m42d.errors.ConnectionClosed` (no more
  frames will arrive), raised ``from`` the original.  Malformed input is
  :class:`~m42d.errors.WireError`.
* :meth:`FrameConnection.receive` is cancel-safe: cancelled, it loses no frame.
* :meth:`FrameConnection.send` may be called from several tasks; frames are
  written whole and in call order.
* ``peer`` is the remote address without port (the key for per-address
  limits); it is logged only when the operator turns address logging on.
* Work per turn is bounded: between two checkpoints a connection parses or
  hands on at most :data:`FRAMES_PER_TURN` frames and :data:`BYTES_PER_TURN`
  bytes, whatever the peer sends (the relay is one event loop).

Byte-stream transports can reuse :class:`StreamFrameConnection`, which runs
the length-prefixed framing of :class:`m42d.wire.FrameDecoder` over any
``trio.abc.Stream``, and the small URL, TLS-pin and listener helpers below.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.metadata
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, NoReturn, Protocol, TypeAlias, cast, final, runtime_checkable
from urllib.parse import SplitResult, urlsplit

import attrs
import trio

from m42d.errors import ConnectionClosed, TransportError, WireError
from m42d.wire import LENGTH_PREFIX_SIZE, MAX_FRAME, Frame, FrameDecoder, Relayed, encode_stream

__all__ = [
    "BYTES_PER_TURN",
    "DEFAULT_CONNECT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "FRAMES_PER_TURN",
    "READ_SIZE",
    "Admission",
    "AdmittingListener",
    "FrameConnection",
    "FrameHandler",
    "FrameListener",
    "RelayingConnection",
    "StreamFrameConnection",
    "Transport",
    "TransportURL",
    "acquire_send_lock",
    "as_relaying",
    "check_pin",
    "client_ssl_context",
    "format_url",
    "load_transports",
    "map_stream_errors",
    "open_tcp_listeners",
    "parse_url",
    "peer_address",
    "run_handler",
    "socket_listener_urls",
]

logger = logging.getLogger("m42d.transport")

ENTRY_POINT_GROUP: Final = "m42d.transports"

READ_SIZE: Final = 128 * 1024
"""Bytes asked of the OS per read.  Large reads are what make a Python relay
fast (4 KiB reads cost half the throughput); 128 KiB holds two bulk frames."""

FRAMES_PER_TURN: Final = 64
"""Frames a connection parses or hands on between two checkpoints, at most.

The relay is one event loop: a connection that parsed a whole read of
tiny frames (or a message in tens of thousands of one-byte WebSocket
fragments) without yielding held every other room for as long as that
took -- over a second per message.  Parsing a frame costs 1-20 us, so a
turn is at most ~1 ms, whatever the client sends."""

BYTES_PER_TURN: Final = 128 * 1024
"""Payload bytes a connection hands on between two checkpoints, at most (one read)."""

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
PIN_SIZE: Final = 32
"""A certificate pin is the SHA-256 of the server certificate's DER bytes."""


@runtime_checkable
class FrameConnection(Protocol):
    """One connection that carries whole relay frames in both directions."""

    @property
    def transport(self) -> str:
        """The scheme of the transport that made this connection (``"tls"``, ``"ws"``...)."""
        ...

    @property
    def peer(self) -> str:
        """Remote address without port, or ``""`` when the transport has none."""
        ...

    async def send(self, frame: Frame) -> None:
        """Write one frame.

        Raises:
            ConnectionClosed: the connection is closed or broke.
        """
        ...

    async def send_many(self, frames: Sequence[Frame]) -> None:
        """Write frames in order, as one write where the framing allows it."""
        ...

    async def receive(self) -> Frame:
        """The next frame; cancel-safe.

        Raises:
            ConnectionClosed: the other end closed or the connection broke.
            WireError: the peer sent something that is not a valid frame.
        """
        ...

    async def aclose(self) -> None:
        """Close; idempotent, and closes even when cancelled."""
        ...


@runtime_checkable
class RelayingConnection(FrameConnection, Protocol):
    """Optional, for the relay's hot path: CONTROL and BULK as :class:`~m42d.wire.Relayed`.

    A connection that offers these lets the relay pass payloads on in their
    encoded form instead of decoding and re-encoding every frame.  The relay
    falls back to :meth:`FrameConnection.receive` and ``send_many`` for
    connections that do not.
    """

    async def receive_relayed(self) -> list[Frame | Relayed]:
        """Every frame already received (at least one; waits for one), CONTROL and
        BULK as ``Relayed``.  Frames decoded before a malformed one are returned
        first; the next call raises the ``WireError``.  Cancel-safe like ``receive``.
        """
        ...

    async def send_batch(self, items: Sequence[Frame | Relayed]) -> None:
        """Like ``send_many``, accepting ``Relayed`` items too."""
        ...


_RELAYING_CLASSES: dict[type, bool] = {}


def as_relaying(connection: FrameConnection) -> RelayingConnection | None:
    """``connection`` if it offers :class:`RelayingConnection`'s fast path, else None.

    Decided once per class: ``isinstance`` against a runtime-checkable
    Protocol inspects every member and cost ~2% of the relay's CPU per join.
    """
    cls = type(connection)
    known = _RELAYING_CLASSES.get(cls)
    if known is None:
        known = _RELAYING_CLASSES[cls] = isinstance(connection, RelayingConnection)
    return cast(RelayingConnection, connection) if known else None


FrameHandler: TypeAlias = Callable[[FrameConnection], Awaitable[None]]
"""Called once per accepted connection; the listener closes it when this returns."""


@runtime_checkable
class FrameListener(Protocol):
    """Bound sockets that accept connections and turn them into frame connections."""

    @property
    def urls(self) -> Sequence[str]:
        """One URL per bound socket, with the real port (for the "listening on" line)."""
        ...

    async def serve(
        self,
        handler: FrameHandler,
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled, running ``handler`` for each connection.

        Handlers run in ``handler_nursery`` when given, so cancelling
        :meth:`serve` stops accepting without cutting live connections (the
        relay's graceful stop depends on that).  On EMFILE and similar
        resource errors the listener backs off and retries instead of dying.
        """
        ...

    async def aclose(self) -> None:
        """Close the listening sockets."""
        ...


class Admission(Protocol):
    """The relay's say on a connection *before* its expensive handshake.

    A TLS (or WebSocket) handshake costs the relay far more than refusing a
    TCP connection, and it runs on the one event loop: 2,000 handshakes from
    one address would stall every room.  A listener that can, asks
    :meth:`admit` with the peer address as soon as TCP accepts, closes the
    socket at once on False, and calls :meth:`release` when the handshake is
    over (succeeded or not) -- from then on the handler's own accounting
    counts the connection.
    """

    def admit(self, peer: str) -> bool:
        """Reserve a place for a connection from ``peer`` (False: refuse it now)."""
        ...

    def release(self, peer: str) -> None:
        """Give back the place :meth:`admit` reserved."""
        ...


@runtime_checkable
class AdmittingListener(FrameListener, Protocol):
    """A listener that can refuse connections before their handshake (optional)."""

    def set_admission(self, admission: Admission) -> None:
        """Use ``admission`` for every connection accepted from now on."""
        ...


@runtime_checkable
class Transport(Protocol):
    """A plugin: both the listening and the connecting side of one kind of connection."""

    async def open_listener(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> FrameListener:
        """Bind ``url`` (or adopt ``sock``, already listening, from socket activation).

        Raises:
            TransportError: bad URL, missing TLS context, or the bind failed.
        """
        ...

    def connect(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        pin: bytes | None = None,
        room_id: bytes | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> AbstractAsyncContextManager[FrameConnection]:
        """Connect to a relay; the connection is closed when the block exits.

        ``pin``, when given, is the SHA-256 of the server certificate (DER):
        that certificate is accepted, self-signed or not, and no other.
        ``room_id`` lets a transport route on the room (the WebSocket path
        carries it for load balancers); others ignore it.

        Raises:
            TransportError: could not connect, TLS failed, or the pin did not match.
        """
        ...


def load_transports() -> dict[str, Transport]:
    """Every transport plugin that loads, keyed by URL scheme.

    A plugin that fails to import, to construct, or that does not look like a
    :class:`Transport` is logged on the ``m42d.transport`` logger and skipped.
    """
    found: dict[str, Transport] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory = entry.load()
            transport = factory()
        except Exception:
            logger.exception(
                "transport plugin %r (%s) failed to load; skipped", entry.name, entry.value
            )
            continue
        if not isinstance(transport, Transport):
            logger.error(
                "transport plugin %r (%s) does not provide open_listener and connect; skipped",
                entry.name,
                entry.value,
            )
            continue
        found[entry.name] = transport
    return found


# -- errors -------------------------------------------------------------------


@contextlib.contextmanager
def map_stream_errors(what: str = "connection") -> Iterator[None]:
    """Translate trio, OS and TLS errors of an open stream into ``ConnectionClosed``."""
    try:
        yield
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ConnectionClosed(f"{what} closed or broken") from exc
    except OSError as exc:  # ssl.SSLError included
        raise ConnectionClosed(f"{what} failed: {type(exc).__name__}") from exc


def _raise_closed(exc: BaseException, what: str = "connection") -> NoReturn:
    """The translation :func:`map_stream_errors` does, for hot paths that avoid its overhead."""
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
        raise ConnectionClosed(f"{what} closed or broken") from exc
    raise ConnectionClosed(f"{what} failed: {type(exc).__name__}") from exc


# -- URLs ---------------------------------------------------------------------


@final
@attrs.frozen
class TransportURL:
    """The parts of a transport URL a plugin needs."""

    scheme: str
    host: str
    port: int
    path: str


def parse_url(
    url: str, schemes: Sequence[str], default_port: int | Callable[[str], int]
) -> TransportURL:
    """Split ``scheme://host[:port][/path]``; IPv6 hosts in brackets.

    Raises:
        TransportError: another scheme, no host, or a bad port.
    """
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TransportError(f"invalid transport URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise TransportError(f"URL scheme {scheme!r} is not one of {', '.join(schemes)}")
    if not parts.hostname:
        raise TransportError(f"transport URL {url!r} has no host")
    if port is None:
        port = default_port(scheme) if callable(default_port) else default_port
    return TransportURL(scheme, parts.hostname, port, parts.path)


def format_url(scheme: str, host: str, port: int, path: str = "") -> str:
    """The inverse of :func:`parse_url`, bracketing IPv6 literals."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}{path}"


# -- listeners ----------------------------------------------------------------


async def open_tcp_listeners(
    host: str, port: int, sock: socket.socket | None = None
) -> list[trio.SocketListener]:
    """Bind ``host:port`` (every address it resolves to), or adopt an inherited socket.

    Raises:
        TransportError: the bind failed (address in use, permission...).
    """
    if sock is not None:
        return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise TransportError(
            f"cannot listen on {format_url('tcp', host, port)}: {exc.strerror}"
        ) from exc


def socket_listener_urls(scheme: str, listeners: Sequence[trio.SocketListener]) -> list[str]:
    """One URL per bound socket, with the port the kernel chose for port 0."""
    urls = []
    for listener in listeners:
        name = listener.socket.getsockname()
        if isinstance(name, tuple):
            urls.append(format_url(scheme, str(name[0]), int(name[1])))
        else:  # pragma: no cover - AF_UNIX adopted through socket activation
            urls.append(f"{scheme}://{name}")
    return urls


def peer_address(stream: trio.abc.Stream) -> str:
    """The remote IP of a socket stream (through TLS), without port; ``""`` if unknown."""
    inner: object = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            name = inner.socket.getpeername()
        except OSError:
            return ""
        return str(name[0]) if isinstance(name, tuple) else ""
    return ""


# -- TLS ------------------------------------------------------------------------


def client_ssl_context(ssl_context: ssl.SSLContext | None, pin: bytes | None) -> ssl.SSLContext:
    """The context to connect with: the caller's, the system CAs, or pin-only.

    With a pin, chain and host name checks are off because :func:`check_pin`
    replaces them with a stricter rule: exactly that certificate.
    """
    if pin is not None:
        if len(pin) != PIN_SIZE:
            raise TransportError(f"a certificate pin is {PIN_SIZE} bytes (SHA-256), got {len(pin)}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl_context if ssl_context is not None else ssl.create_default_context()


def check_pin(stream: trio.SSLStream[Any], pin: bytes | None) -> None:
    """After the handshake: refuse a server whose certificate is not the pinned one.

    Raises:
        TransportError: the certificate's SHA-256 differs from ``pin``.
    """
    if pin is None:
        return
    der = stream.getpeercert(binary_form=True)
    if der is None or not hmac.compare_digest(hashlib.sha256(der).digest(), pin):
        raise TransportError("the relay's certificate does not match the pin in the link")


# -- length-prefixed frames over a byte stream -------------------------------------


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
        peer: str = "",
        max_frame: int = MAX_FRAME,
        read_size: int = READ_SIZE,
    ) -> None:
        self._stream = stream
        self._transport = transport
        self._peer = peer
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
    def peer(self) -> str:
        return self._peer

    @property
    def stream(self) -> trio.abc.Stream:
        """The underlying stream (for TLS details such as the peer certificate)."""
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            _raise_closed(exc)
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            _raise_closed(exc)
        # receive_some is a checkpoint: a new turn begins.
        self._turn_frames = 0
        self._turn_bytes = len(data)
        if not data:
            self._decoder.eof()
            raise ConnectionClosed("the other end closed the connection")
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
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self._stream.aclose()


async def run_handler(handler: FrameHandler, connection: FrameConnection) -> None:
    """Run the relay's handler for one connection, contain its failure, then close.

    A listener calls this so that a bug in one connection's handling is
    logged and never cancels the listener or the other connections.
    """
    try:
        await handler(connection)
    except Exception:
        logger.exception("handler for a %s connection failed", connection.transport)
    finally:
        await connection.aclose()
