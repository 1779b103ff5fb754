"""m42d: end-to-end-encrypted chat and file transfer for exactly two people.

The package holds the sans-IO protocol cores (``crypto``, ``link``,
``ticket``, ``wire``, ``session``) shared by the relay daemon and the ``m42``
client, plus the trio glue that runs them.  The cores import no I/O library
so they can be tested without an event loop and reimplemented elsewhere from
``docs/protocol.md``.
"""

from __future__ import annotations

from m42d.errors import (
    ConfigError,
    ConnectionClosed,
    CryptoError,
    DecryptError,
    HandshakeError,
    LinkError,
    LocalProtocolError,
    M42Error,
    RemoteProtocolError,
    StreamError,
    TicketError,
    TransportError,
    WireError,
)

__version__ = "0.1.0"

PROTOCOL_VERSION = 2
"""Version of what the relay sees (links, tickets, relay frames), sent in CREATE_ROOM and JOIN.

The end-to-end session has its own version (``m42d.session.SESSION_VERSION``,
bound into the Noise prologue): docs/protocol.md, "Versions"."""

__all__ = [
    "PROTOCOL_VERSION",
    "ConfigError",
    "ConnectionClosed",
    "CryptoError",
    "DecryptError",
    "HandshakeError",
    "LinkError",
    "LocalProtocolError",
    "M42Error",
    "RemoteProtocolError",
    "StreamError",
    "TicketError",
    "TransportError",
    "WireError",
    "__version__",
]
