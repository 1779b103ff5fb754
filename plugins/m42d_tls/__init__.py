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
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Final, final

import trio

from m42d.errors import TransportError
from m42d.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    Admission,
    FrameConnection,
    FrameHandler,
    StreamFrameConnection,
    check_pin,
    client_ssl_context,
    format_url,
    open_tcp_listeners,
    parse_url,
    peer_address,
    run_handler,
    socket_listener_urls,
)

__all__ = ["DEFAULT_PORT", "HANDSHAKE_TIMEOUT", "TlsListener", "TlsTransport"]

logger = logging.getLogger("m42d.transport.tls")

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
        async def on_stream(stream: trio.SocketStream) -> None:
            peer = peer_address(stream)
            admission = self._admission
            if admission is not None and not admission.admit(peer):
                # No TLS yet, so no ERROR frame can be sent: just close.
                await trio.aclose_forcefully(stream)
                return
            tls = trio.SSLStream(stream, self._ssl_context, server_side=True)
            try:
                with trio.fail_after(self._handshake_timeout):
                    await tls.do_handshake()
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                logger.debug("TLS handshake failed or timed out")
                await trio.aclose_forcefully(tls)
                return
            finally:
                if admission is not None:
                    admission.release(peer)
            connection = StreamFrameConnection(tls, transport=SCHEME, peer=peer)
            await run_handler(handler, connection)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        trio.serve_listeners,
                        on_stream,
                        self._listeners,
                        handler_nursery=handler_nursery,
                    )
                )
                task_status.started()
        finally:
            await self.aclose()

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
        context = client_ssl_context(ssl_context, pin)
        target = format_url(SCHEME, where.host, where.port)
        try:
            with trio.fail_after(connect_timeout):
                tcp = await trio.open_tcp_stream(where.host, where.port)
                tls = trio.SSLStream(tcp, context, server_hostname=where.host)
                try:
                    await tls.do_handshake()
                    check_pin(tls, pin)
                except BaseException:
                    await trio.aclose_forcefully(tls)
                    raise
        except trio.TooSlowError as exc:
            raise TransportError(f"connecting to {target} timed out") from exc
        except OSError as exc:
            raise TransportError(f"cannot connect to {target}: {exc.strerror or exc}") from exc
        except trio.BrokenResourceError as exc:
            reason = type(exc.__cause__).__name__ if exc.__cause__ else "connection lost"
            raise TransportError(f"TLS handshake with {target} failed ({reason})") from exc
        connection = StreamFrameConnection(tls, transport=SCHEME, peer=where.host)
        try:
            yield connection
        finally:
            await connection.aclose()
