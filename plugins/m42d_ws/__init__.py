"""WebSocket transport for m42d: one relay frame per binary message.

The relay's side is :mod:`m42d_ws.server` (wsproto driven by the connection's
own task: a third less memory per connection than trio-websocket); clients
connect with trio-websocket.

URLs: ``ws://`` and ``wss://`` (``http://`` and ``https://`` are aliases).
Listening without a port uses 8042; connecting uses the scheme's usual port
(80/443), which is what a relay behind a load balancer publishes.

Paths: ``/m42/v1`` (room creation) and ``/m42/v1/room/<room id, 32
lowercase hex>`` (joins), after the path of the client URL with its
trailing ``/`` removed (:func:`room_path`); the relay accepts them after any
prefix.  The room id is in the path so a load balancer can hash on it and
keep both seats on one node; the relay itself trusts only the ticket in
JOIN.  A plain HTTP request gets 426 on an m42 path and 404 elsewhere
(:mod:`m42d_ws.http`).

A message holds ``kind:u8 | body`` (``m42d.wire.encode``); a message longer
than one frame is closed with 1009, a text message is a protocol error.
Reads are 128 KiB on both sides: trio-websocket's 4 KiB default halves throughput.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Final, final

import trio
import trio_websocket

from m42d.errors import ConnectionClosed, TransportError, WireError
from m42d.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    READ_SIZE,
    Admission,
    FrameConnection,
    FrameHandler,
    check_pin,
    client_ssl_context,
    format_url,
    open_tcp_listeners,
    parse_url,
    peer_address,
    run_handler,
    socket_listener_urls,
)
from m42d.wire import MAX_FRAME, Frame, Relayed, decode, encode, relayed_message
from m42d_ws.server import ServerWebSocket, accept_websocket

__all__ = [
    "DEFAULT_LISTEN_PORT",
    "PATH",
    "WebSocketFrameConnection",
    "WebSocketListener",
    "WebSocketTransport",
    "room_path",
]

logger = logging.getLogger("m42d.transport.ws")

SCHEMES: Final = ("ws", "wss", "http", "https")
SECURE: Final = frozenset({"wss", "https"})
DEFAULT_LISTEN_PORT: Final = 8042
PATH: Final = "/m42/v1"
HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
MESSAGE_QUEUE: Final = 4


def room_path(prefix: str = "", room_id: bytes | None = None) -> str:
    """The request path for a room (or for room creation when ``room_id`` is None)."""
    path = prefix.rstrip("/") + PATH
    return path if room_id is None else f"{path}/room/{room_id.hex()}"


def _canonical(scheme: str) -> str:
    return "wss" if scheme in SECURE else "ws"


@final
class WebSocketFrameConnection:
    """A :class:`~m42d.transport.FrameConnection` over one trio-websocket connection."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, *, transport: str, peer: str
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._peer = peer

    def __repr__(self) -> str:
        return f"<WebSocketFrameConnection {self._transport}>"

    @property
    def transport(self) -> str:
        return self._transport

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once closed (1009: message too big)."""
        reason = self._ws.closed
        return None if reason is None else int(reason.code)

    async def send(self, frame: Frame) -> None:
        await self._send_message(encode(frame))

    async def send_many(self, frames: Sequence[Frame]) -> None:
        for frame in frames:
            await self._send_message(encode(frame))

    async def send_batch(self, items: Sequence[Frame | Relayed]) -> None:
        for item in items:
            await self._send_message(
                item.message_bytes() if isinstance(item, Relayed) else encode(item)
            )

    async def _send_message(self, data: bytes) -> None:
        # Inline translation (no map_stream_errors() per message: hot path).
        try:
            await self._ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(f"websocket closed ({_code(exc)})") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed("websocket closed or broken") from exc
        except OSError as exc:
            raise ConnectionClosed(f"websocket failed: {type(exc).__name__}") from exc

    async def receive(self) -> Frame:
        return decode(await self._receive_message())

    async def receive_relayed(self) -> list[Frame | Relayed]:
        return [relayed_message(await self._receive_message())]

    async def _receive_message(self) -> bytes:
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(f"websocket closed ({_code(exc)})") from exc
        if isinstance(message, str):
            raise WireError("text message: relay frames travel in binary messages")
        return message

    async def aclose(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self._ws.aclose()


def _code(exc: trio_websocket.ConnectionClosed) -> str:
    return str(exc.reason.code) if exc.reason is not None else "no close frame"


@final
class WebSocketListener:
    """Accepts TCP (and TLS) connections and upgrades them on the m42 paths."""

    def __init__(
        self,
        scheme: str,
        listeners: Sequence[trio.SocketListener],
        ssl_context: ssl.SSLContext | None,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._scheme = scheme
        self._listeners = list(listeners)
        self._ssl_context = ssl_context
        self._handshake_timeout = handshake_timeout
        self._admission: Admission | None = None

    def set_admission(self, admission: Admission) -> None:
        """Refuse over-limit peers at TCP accept, before the TLS and HTTP handshakes."""
        self._admission = admission

    @property
    def urls(self) -> Sequence[str]:
        return socket_listener_urls(self._scheme, self._listeners)

    async def serve(
        self,
        handler: FrameHandler,
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        trio.serve_listeners,
                        partial(self._on_stream, handler),
                        self._listeners,
                        handler_nursery=handler_nursery,
                    )
                )
                task_status.started()
        finally:
            await self.aclose()

    async def _on_stream(self, handler: FrameHandler, raw: trio.SocketStream) -> None:
        peer = peer_address(raw)
        admission = self._admission
        if admission is not None and not admission.admit(peer):
            await trio.aclose_forcefully(raw)  # nothing can be said before the handshake
            return
        try:
            connection = await self._upgrade(raw, peer)
        except Exception:
            # Hostile input wsproto or h11 choke on in an unforeseen way ends
            # this connection only, never the listener and its siblings.
            logger.debug("websocket handshake failed", exc_info=True)
            await trio.aclose_forcefully(raw)
            return
        finally:
            if admission is not None:
                admission.release(peer)
        if connection is not None:
            await run_handler(handler, connection)

    async def _upgrade(self, raw: trio.SocketStream, peer: str) -> ServerWebSocket | None:
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = raw
        connection: ServerWebSocket | None = None
        with trio.move_on_after(self._handshake_timeout):
            try:
                if self._ssl_context is not None:
                    stream = trio.SSLStream(
                        raw, self._ssl_context, server_side=True, https_compatible=True
                    )
                    await stream.do_handshake()
                connection = await accept_websocket(stream, transport=self._scheme, peer=peer)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
                connection = None
        if connection is None:
            logger.debug("websocket handshake refused, failed or timed out")
            await trio.aclose_forcefully(stream)
        return connection

    async def aclose(self) -> None:
        for listener in self._listeners:
            await trio.aclose_forcefully(listener)


@final
class WebSocketTransport:
    """The ``ws``/``wss``/``http``/``https`` entry points of ``m42d.transports``."""

    async def open_listener(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> WebSocketListener:
        where = parse_url(url, SCHEMES, DEFAULT_LISTEN_PORT)
        scheme = _canonical(where.scheme)
        if scheme == "wss" and ssl_context is None:
            raise TransportError("a wss:// listener needs a certificate (ssl_context)")
        listeners = await open_tcp_listeners(where.host, where.port, sock)
        return WebSocketListener(scheme, listeners, ssl_context if scheme == "wss" else None)

    @contextlib.asynccontextmanager
    async def connect(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        pin: bytes | None = None,
        room_id: bytes | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> AsyncIterator[FrameConnection]:
        where = parse_url(url, SCHEMES, lambda scheme: 443 if scheme in SECURE else 80)
        scheme = _canonical(where.scheme)
        target = format_url(scheme, where.host, where.port)
        host_header = where.host if where.port in (80, 443) else f"{where.host}:{where.port}"
        resource = room_path(where.path, room_id)
        user_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                stream = await _open_stream(
                    where.host, where.port, scheme, ssl_context, pin, connect_timeout, target
                )
                watched = _WatchedStream(stream)
                try:
                    with trio.fail_after(connect_timeout):
                        ws = await _client_handshake(nursery, watched, host_header, resource)
                    if ws is None:
                        raise TransportError(
                            f"{target} closed the connection during the websocket handshake "
                            "(over its connection limit, or not an m42 relay?)"
                        )
                except BaseException as exc:
                    # Refused upgrade, bad answer, timeout or cancel: the
                    # socket is ours to close (trio-websocket leaves it
                    # open, and the error's traceback would keep it alive).
                    await trio.aclose_forcefully(stream)
                    if isinstance(exc, trio.TooSlowError):
                        raise TransportError(
                            f"websocket handshake with {target} timed out"
                        ) from exc
                    raise
                connection = WebSocketFrameConnection(ws, transport=scheme, peer=where.host)
                try:
                    yield connection
                except BaseException as exc:
                    user_error = exc
                    raise
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                        scope.shield = True
                        await connection.aclose()
                    # trio-websocket leaves the stream open when the server
                    # closed first; close it ourselves.
                    await trio.aclose_forcefully(stream)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _unwrap(group, user_error, target) from None


@final
class _WatchedStream(trio.abc.Stream):
    """Forwards to a stream and notes when the other end has closed it.

    trio-websocket's client waits for the handshake answer until its caller's
    timeout even when the server has already closed the connection (its
    reader sees the EOF but does not end the wait), so a refused client sat
    out the whole connect timeout and then reported a timeout.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.ended = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _client_handshake(
    nursery: trio.Nursery, stream: _WatchedStream, host_header: str, resource: str
) -> trio_websocket.WebSocketConnection | None:
    """The client handshake, or None as soon as the server closes the connection instead."""
    result: list[trio_websocket.WebSocketConnection] = []
    async with trio.open_nursery() as race:

        async def shake() -> None:
            result.append(
                await trio_websocket.wrap_client_stream(
                    nursery,  # the reader task lives as long as the connection
                    # Typed for socket streams, but only the Stream methods are
                    # used (the endpoint shown in its repr falls back to text).
                    stream,  # type: ignore[arg-type]
                    host_header,
                    resource,
                    message_queue_size=MESSAGE_QUEUE,
                    max_message_size=MAX_FRAME,
                    receive_buffer_size=READ_SIZE,
                )
            )
            race.cancel_scope.cancel()

        async def watch() -> None:
            await stream.ended.wait()
            race.cancel_scope.cancel()

        race.start_soon(shake)
        race.start_soon(watch)
    return result[0] if result else None


def _unwrap(
    group: BaseExceptionGroup, user_error: BaseException | None, target: str
) -> BaseException:
    """One exception for the caller, as if no nursery had been involved.

    The nursery only holds trio-websocket's reader, so a group means: the
    caller's own exception, or the handshake failing in the reader task.
    """
    errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if user_error is not None and user_error in group.exceptions:
        return user_error
    if len(errors) == 1:
        error = errors[0]
        if isinstance(error, trio_websocket.HandshakeError):
            status = getattr(error, "status_code", None)
            detail = f"HTTP {status}" if status is not None else type(error).__name__
            wrapped = TransportError(f"websocket handshake with {target} refused ({detail})")
            wrapped.__cause__ = error
            return wrapped
        return error
    return group if not errors else errors[0]


async def _open_stream(
    host: str,
    port: int,
    scheme: str,
    ssl_context: ssl.SSLContext | None,
    pin: bytes | None,
    seconds: float,
    target: str,
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """TCP, then TLS and the pin check, before a single HTTP byte is sent."""
    try:
        with trio.fail_after(seconds):
            tcp = await trio.open_tcp_stream(host, port)
            if scheme != "wss":
                return tcp
            tls = trio.SSLStream(
                tcp,
                client_ssl_context(ssl_context, pin),
                server_hostname=host,
                https_compatible=True,
            )
            try:
                await tls.do_handshake()
                check_pin(tls, pin)
            except BaseException:
                await trio.aclose_forcefully(tls)
                raise
            return tls
    except trio.TooSlowError as exc:
        raise TransportError(f"connecting to {target} timed out") from exc
    except OSError as exc:
        raise TransportError(f"cannot connect to {target}: {exc.strerror or exc}") from exc
    except trio.BrokenResourceError as exc:
        reason = type(exc.__cause__).__name__ if exc.__cause__ else "connection lost"
        raise TransportError(f"TLS handshake with {target} failed ({reason})") from exc
