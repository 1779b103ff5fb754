"""The Noise engine's own errors, each a subclass of one class of m42d/errors.py.

Every layer of the engine raises them (a primitive a low-order point, the
pattern parser an unknown name, a CipherState an exhausted nonce, the
handshake a failed authentication), so they live below all of those layers
and no module has to import a higher one to raise.
"""

from __future__ import annotations

from m42d.errors import (
    HandshakeError,
    LocalProtocolError,
)

# --------------------------------------------------------------------------- errors


class HandshakeAuthError(HandshakeError):
    """A handshake message failed authentication: a wrong psk or a tampered message.

    An AEAD failure like :class:`DecryptError`, but a HandshakeError: the
    handshake is over, and that is what a caller at this layer must know.
    """


class LowOrderPointError(HandshakeError):
    """A public key was a low-order X25519 point, which would make a DH result public."""


class UnsupportedProtocolError(LocalProtocolError):
    """The protocol name is malformed or names a pattern or function m42d does not have."""


class NonceExhaustedError(LocalProtocolError):
    """A CipherState reached the reserved nonce 2^64-1: a fresh handshake is required."""
