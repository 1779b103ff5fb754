"""The one exception hierarchy of m42d.

Every error the project raises on purpose derives from :class:`M42Error`, so
a caller that wants "anything m42d refused" catches one class.  As in h11,
errors are split by *who* is at fault:

* :class:`LocalProtocolError`: this side used an API wrongly (sent out of
  turn, reused a finished object).  A bug in the caller, never the network.
* :class:`RemoteProtocolError`: bytes from outside were malformed, forged or
  out of order.  Expected in production; handled by closing or re-keying.

Messages never contain key material, tokens or room secrets: they name the
field and the rule that was broken, not the value.
"""

from __future__ import annotations


class M42Error(Exception):
    """Base of every error m42d raises deliberately."""


class LocalProtocolError(M42Error):
    """This side broke the rules of an API or state machine (a caller bug)."""


class RemoteProtocolError(M42Error):
    """Input from the network or a user violated the protocol."""


class LinkError(M42Error, ValueError):
    """A room link could not be parsed or is not valid; the message says which part."""


class TicketError(RemoteProtocolError):
    """A room ticket is malformed, forged, expired or uses an unknown key."""


class WireError(RemoteProtocolError):
    """A relay frame is malformed or exceeds a size cap."""


class CryptoError(M42Error):
    """Base of cryptographic failures."""


class DecryptError(CryptoError, RemoteProtocolError):
    """Authenticated decryption failed: tampering, a wrong key or a wrong psk."""


class HandshakeError(CryptoError, RemoteProtocolError):
    """The Noise handshake could not complete (bad message, bad key, low-order point)."""


class StreamError(CryptoError, RemoteProtocolError):
    """A file stream was truncated, extended, reordered or mixed with another file."""


class ConfigError(M42Error, ValueError):
    """A configuration file or option is invalid; the message names the option."""


class TransportError(M42Error):
    """A transport could not connect, listen or carry frames (OS and TLS errors translated)."""


class ConnectionClosed(TransportError):
    """The other end closed the connection, or it broke; no more frames will arrive."""
