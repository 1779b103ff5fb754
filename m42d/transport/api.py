"""The plugin interface: what a transport provides and what the relay asks of it.

Everything here is public API for plugin authors (docs/plugins.md explains
it): three required protocols (:class:`Transport`, :class:`FrameListener`,
:class:`FrameConnection`) and two optional ones that built-in and outside
plugins use alike -- :class:`RelayingConnection`, the relay's fast path, and
:class:`AdmittingListener` with :class:`Admission`, the relay's say on a
connection before its expensive handshake.  A plugin that implements
neither still works, with per-frame decoding and limits counted only once
the handshake is over.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol, TypeAlias, cast, runtime_checkable

import trio

from m42d.wire import Frame, Relayed

__all__ = [
    "BYTES_PER_TURN",
    "DEFAULT_CONNECT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "FRAMES_PER_TURN",
    "PIN_SIZE",
    "READ_SIZE",
    "Admission",
    "AdmittingListener",
    "FrameConnection",
    "FrameHandler",
    "FrameListener",
    "RelayingConnection",
    "Transport",
    "as_relaying",
]

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
    def address(self) -> str:
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
            WireError: the other end sent something that is not a valid frame.
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
    :meth:`admit` with the remote address as soon as TCP accepts, closes the
    socket at once on False, and calls :meth:`release` when the handshake is
    over (succeeded or not) -- from then on the handler's own accounting
    counts the connection.
    """

    def admit(self, address: str) -> bool:
        """Reserve a place for a connection from ``address`` (False: refuse it now)."""
        ...

    def release(self, address: str) -> None:
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
