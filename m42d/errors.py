"""The one exception hierarchy of m42d.

Every error the project raises on purpose derives from :class:`M42Error`, so
a caller that wants "anything m42d refused" catches one class.  Each class
has exactly one base: the tree says *who* is at fault, and a caller picks
the branch its layer thinks in.  As in h11, the first split is:

* :class:`LocalProtocolError`: this side used an API wrongly (sent out of
  turn, reused a finished object).  A bug in the caller, never the network.
* :class:`RemoteProtocolError`: bytes from outside were malformed, forged or
  out of order.  Expected in production; handled by closing or re-keying.
  Cryptographic failures (:class:`CryptoError`) are remote ones: an AEAD
  that does not verify is what a forger or a wrong key produces.
* :class:`ConfigError` and :class:`LinkError`: what a person typed or wrote
  in a file is unusable; the message names the option or the part.
* :class:`TransportError`: the network itself (refused, reset, timed out).
  Its :class:`ConnectionClosed` branch keeps apart "the other end closed"
  (:class:`PeerClosed`), "it broke" (:class:`ConnectionBroken`) and "this
  side closed it" (:class:`ClosedLocally`).

A relay-visible remote error carries :attr:`RemoteProtocolError.wire_code`,
the ERROR code a relay answers it with (as h11's ``error_status_hint``), so
the relay maps an exception to a code by reading it, not by a table.

Messages never contain key material, tokens or room secrets: they name the
field and the rule that was broken, not the value.
"""

from __future__ import annotations

from typing import ClassVar


class M42Error(Exception):
    """Base of every error m42d raises deliberately."""


class LocalProtocolError(M42Error):
    """This side broke the rules of an API or state machine (a caller bug)."""


class RemoteProtocolError(M42Error):
    """Input from the network or a peer violated the protocol."""

    wire_code: ClassVar[int] = 400
    """The ERROR code (docs/protocol.md, "Errors") a relay answers this with: BAD_FRAME."""


class WireError(RemoteProtocolError):
    """A relay frame is malformed or exceeds a size cap."""


class TicketError(RemoteProtocolError):
    """A room ticket is malformed, forged, expired or uses an unknown key."""


class CryptoError(RemoteProtocolError):
    """Base of cryptographic failures on what arrived."""


class DecryptError(CryptoError):
    """Authenticated decryption failed: tampering, a wrong key or a wrong psk."""


class HandshakeError(CryptoError):
    """The Noise handshake could not complete (bad message, bad key, low-order point)."""


class StreamError(CryptoError):
    """A file stream was truncated, extended, reordered or mixed with another file."""


class ConfigError(M42Error):
    """A configuration file or option is invalid; the message names the option."""


class LinkError(M42Error):
    """A room link could not be parsed or is not valid; the message says which part."""


class TransportError(M42Error):
    """A transport could not connect, listen or carry frames (OS and TLS errors translated)."""


class ConnectionClosed(TransportError):
    """No more frames will arrive on this connection; the subclass says why.

    Catch this to stop using a connection; look at the subclass to decide
    what to tell someone: a clean close by the other end is news, a reset is
    a fault, and a connection this side closed itself is neither.
    """


class PeerClosed(ConnectionClosed):
    """The other end closed the connection cleanly (EOF, a WebSocket close frame)."""


class ConnectionBroken(ConnectionClosed):
    """The connection broke: reset, timed out in the OS, TLS failed, protocol violation."""


class ClosedLocally(ConnectionClosed):
    """This side had already closed the connection ("you closed it", not "it broke")."""
