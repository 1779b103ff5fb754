"""Listening: binding sockets, the accept loop, admission, and running the relay's handler.

Every socket-based listener's ``serve()`` is the same loop --
``trio.serve_listeners`` (which backs off on EMFILE and runs handlers in the
relay's handler nursery), ``task_status.started()`` once accepting, close
on the way out -- so it is :func:`serve_sockets` here, not a copy per
plugin.  :func:`admitted` is how a listener gives the relay its say before
an expensive handshake (:class:`~m42d.transport.api.Admission`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import trio

from m42d.errors import TransportError
from m42d.transport.api import Admission, FrameConnection, FrameHandler
from m42d.transport.urls import format_url

__all__ = [
    "admitted",
    "open_tcp_listeners",
    "remote_address",
    "run_handler",
    "serve_sockets",
    "socket_listener_urls",
]

logger = logging.getLogger("m42d.transport")

_T = TypeVar("_T")


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


def remote_address(stream: trio.abc.Stream) -> str:
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


async def serve_sockets(
    listeners: Sequence[trio.SocketListener],
    handler: FrameHandler,
    handshake: Callable[[trio.SocketStream, str], Awaitable[FrameConnection | None]],
    *,
    admission: Callable[[], Admission | None] = lambda: None,
    close: Callable[[], Awaitable[None]],
    handler_nursery: trio.Nursery | None,
    task_status: trio.TaskStatus[None],
) -> None:
    """The whole body of a socket listener's :meth:`~m42d.transport.api.FrameListener.serve`.

    Accepts until cancelled; for each socket, asks ``admission()`` (the
    listener's current :class:`~m42d.transport.api.Admission`, if any) via
    :func:`admitted`, runs ``handshake(raw, address)`` (TLS, an HTTP upgrade,
    or nothing but framing) and hands the connection it returns to
    ``handler`` through :func:`run_handler`.  Handlers run in
    ``handler_nursery`` when given (so cancelling ``serve`` stops accepting
    without cutting live connections); ``close`` runs however it ends.
    """

    async def on_stream(raw: trio.SocketStream) -> None:
        connection = await admitted(raw, admission(), handshake)
        if connection is not None:
            await run_handler(handler, connection)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    trio.serve_listeners,
                    on_stream,
                    list(listeners),
                    handler_nursery=handler_nursery,
                )
            )
            task_status.started()
    finally:
        await close()


async def admitted(
    raw: trio.SocketStream,
    admission: Admission | None,
    handshake: Callable[[trio.SocketStream, str], Awaitable[_T | None]],
) -> _T | None:
    """Run ``handshake(raw, address)`` only if ``admission`` lets ``address`` in; None if refused.

    A refused socket is closed at once, before any handshake byte: nothing
    can be said to a client before its handshake, and refusing must cost the
    relay less than accepting.  The place is released when the handshake
    ends, however it ends; from then on the handler's accounting counts it.
    """
    address = remote_address(raw)
    if admission is not None and not admission.admit(address):
        await trio.aclose_forcefully(raw)
        return None
    try:
        return await handshake(raw, address)
    finally:
        if admission is not None:
            admission.release(address)
