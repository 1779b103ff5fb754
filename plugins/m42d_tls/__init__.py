"""TCP+TLS transport for m42d: length-prefixed relay frames over trio's SSL streams.

URL: ``tls://host[:port]`` (default port 8043).  The relay needs a server
``ssl_context`` (certificate and key); the client verifies the server with
the system CAs, a given context, or a certificate pin.

Frames use the stream form of ``m42d.wire`` (``length:u32 | kind | body``)
through :class:`m42d.transport.StreamFrameConnection`, which reads 128 KiB
at a time.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Final, final

import trio

from m42d.errors import TransportError
from m42d.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    Admission,
    FrameConnection,
    FrameHandler,
    StreamFrameConnection,
    format_url,
    open_tcp_listeners,
    open_tls_stream,
    parse_url,
    serve_sockets,
    socket_listener_urls,
    tls_server_handshake,
)

__all__ = ["DEFAULT_PORT", "HANDSHAKE_TIMEOUT", "TlsListener", "TlsTransport"]

SCHEME: Final = "tls"
DEFAULT_PORT: Final = 8043
HANDSHAKE_TIMEOUT: Final = 10.0
"""A client that has not finished TLS within this is dropped (slowloris)."""


@final
class TlsListener:
    """Accepts TCP connections, runs the TLS handshake with a deadline, then frames."""

    def __init__(
        self,
        listeners: Sequence[trio.SocketListener],
        ssl_context: ssl.SSLContext,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._listeners = list(listeners)
        self._ssl_context = ssl_context
        self._handshake_timeout = handshake_timeout
        self._admission: Admission | None = None

    def set_admission(self, admission: Admission) -> None:
        """Refuse over-limit peers at TCP accept, before paying for a TLS handshake."""
        self._admission = admission

    @property
    def urls(self) -> Sequence[str]:
        return socket_listener_urls(SCHEME, self._listeners)

    async def serve(
        self,
        handler: FrameHandler,
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve_sockets(
            self._listeners,
            handler,
            self._handshake,
            admission=lambda: self._admission,
            close=self.aclose,
            handler_nursery=handler_nursery,
            task_status=task_status,
        )

    async def _handshake(
        self, raw: trio.SocketStream, address: str
    ) -> StreamFrameConnection | None:
        tls = await tls_server_handshake(raw, self._ssl_context, seconds=self._handshake_timeout)
        return (
            None if tls is None else StreamFrameConnection(tls, transport=SCHEME, address=address)
        )

    async def aclose(self) -> None:
        for listener in self._listeners:
            await trio.aclose_forcefully(listener)


@final
class TlsTransport:
    """The ``tls`` entry point of the ``m42d.transports`` group."""

    async def open_listener(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> TlsListener:
        where = parse_url(url, (SCHEME,), DEFAULT_PORT)
        if ssl_context is None:
            raise TransportError("a tls:// listener needs a certificate (ssl_context)")
        listeners = await open_tcp_listeners(where.host, where.port, sock)
        return TlsListener(listeners, ssl_context)

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
        where = parse_url(url, (SCHEME,), DEFAULT_PORT)
        tls = await open_tls_stream(
            where.host,
            where.port,
            target=format_url(SCHEME, where.host, where.port),
            seconds=connect_timeout,
            ssl_context=ssl_context,
            pin=pin,
        )
        connection = StreamFrameConnection(tls, transport=SCHEME, address=where.host)
        try:
            yield connection
        finally:
            await connection.aclose()
