"""Transports: how relay frames travel between a client and the relay.

This package is the whole, public API for transport plugins, built-in and
third-party alike (``docs/plugins.md`` explains it to authors).  A transport
moves :mod:`m42d.wire` frames over one kind of connection (WebSocket,
TCP+TLS, a Unix socket, ...).  It has two sides:

* the relay calls :meth:`Transport.open_listener` and then
  :meth:`FrameListener.serve`, which hands each accepted connection, already
  speaking frames, to the relay's handler;
* the client calls :meth:`Transport.connect`, an async context manager that
  yields one :class:`FrameConnection`.

Where each piece lives:

=============  =============================================================
``api``        the protocols a plugin implements (required and optional)
               and the per-turn work bounds every connection keeps
``loader``     finding plugins through the ``m42d.transports`` entry points
``edges``      the one mapping of trio/OS/TLS exceptions to m42d's, per edge
``urls``       ``scheme://host[:port][/path]``
``serving``    binding, the accept loop, admission, running the handler
``tls``        the client's context and pin, and both TLS handshakes
``stream``     :class:`StreamFrameConnection`: framing over a byte stream
=============  =============================================================

Rules every transport follows:

* Foreign exceptions stop at this boundary: OS, TLS and library errors
  become :class:`~m42d.errors.TransportError` (could not connect, listen or
  carry) or its subclass :class:`~m42d.errors.ConnectionClosed` (no more
  frames will arrive), raised ``from`` the original.  Malformed input is
  :class:`~m42d.errors.WireError`.
* :meth:`FrameConnection.receive` is cancel-safe: cancelled, it loses no frame.
* :meth:`FrameConnection.send` may be called from several tasks; frames are
  written whole and in call order.
* ``address`` is the remote address without port (the key for per-address
  limits); it is logged only when the operator turns address logging on.
* Work per turn is bounded: between two checkpoints a connection parses or
  hands on at most :data:`FRAMES_PER_TURN` frames and :data:`BYTES_PER_TURN`
  bytes, whatever the peer sends (the relay is one event loop).
"""

from __future__ import annotations

from m42d.transport.api import (
    BYTES_PER_TURN,
    DEFAULT_CONNECT_TIMEOUT,
    ENTRY_POINT_GROUP,
    FRAMES_PER_TURN,
    PIN_SIZE,
    READ_SIZE,
    Admission,
    AdmittingListener,
    FrameConnection,
    FrameHandler,
    FrameListener,
    RelayingConnection,
    Transport,
    as_relaying,
)
from m42d.transport.edges import (
    STREAM_ERRORS,
    closed_error,
    dialing,
    map_stream_errors,
    raise_closed,
)
from m42d.transport.loader import load_transports
from m42d.transport.serving import (
    admitted,
    open_tcp_listeners,
    remote_address,
    run_handler,
    serve_sockets,
    socket_listener_urls,
)
from m42d.transport.stream import StreamFrameConnection, acquire_send_lock
from m42d.transport.tls import check_pin, client_ssl_context, open_tls_stream, tls_server_handshake
from m42d.transport.urls import TransportURL, format_url, parse_url

__all__ = [
    "BYTES_PER_TURN",
    "DEFAULT_CONNECT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "FRAMES_PER_TURN",
    "PIN_SIZE",
    "READ_SIZE",
    "STREAM_ERRORS",
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
    "admitted",
    "as_relaying",
    "check_pin",
    "client_ssl_context",
    "closed_error",
    "dialing",
    "format_url",
    "load_transports",
    "map_stream_errors",
    "open_tcp_listeners",
    "open_tls_stream",
    "parse_url",
    "raise_closed",
    "remote_address",
    "run_handler",
    "serve_sockets",
    "socket_listener_urls",
    "tls_server_handshake",
]
