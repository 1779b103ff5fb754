"""The Noise Protocol Framework (revision 34), sans-IO, for ``25519_AESGCM_SHA256``.

m42d runs ``Noise_XXpsk3_25519_AESGCM_SHA256`` between the two clients of a room;
the engine is general enough to run every fundamental, deferred and ``pskN``
pattern of the specification, so that third-party known-answer vectors check it
against implementations no one on this project wrote.

Rules and invariants of the state machine (HandshakeState):

* Handshake patterns are *data*: the table below is the specification's own
  notation, parsed once.  ``pskN`` modifiers edit the parsed token lists.
* One HandshakeState runs one handshake, then is spent.  Messages are taken
  strictly in pattern order; each message has a fixed direction.  Writing when
  the next message is the peer's, reading when it is ours, or either after the
  handshake completed is a :class:`~m42d.errors.LocalProtocolError`.
* Noise state is not rollback-safe: a failed ``read_message`` (bad length, bad
  tag, low-order key) has already mixed data into the hash, so the handshake is
  marked FAILED and every later call raises ``LocalProtocolError``.  A
  ``write_message`` refused for an oversized payload is checked before any
  state changes and leaves the handshake usable.
* Every message, handshake or transport, is at most :data:`MAX_MESSAGE` bytes.
  Message lengths are fixed by the pattern apart from the payload, so they are
  checked before any token is processed.
* Received public keys (``e`` and ``s`` tokens) are rejected at once when they
  are low-order points, so the error surfaces on the message that carried them.
* After the last message the two transport CipherStates are derived
  (``Split``), the ephemeral keys and the chaining key are dropped, and only the
  handshake hash and the remote static key stay readable.
* A CipherState's nonce counts messages; it is never reused: it advances only
  on success and the reserved value 2^64-1 is never used to encrypt a message.
* No key, psk or chaining key ever appears in a repr, str or error message.

The engine follows the specification's sections, one module each; callers
import from here:

* :mod:`~m42d.crypto.noise.errors`: the errors every layer raises;
* :mod:`~m42d.crypto.noise.primitives`: the suite (section 12): :class:`KeyPair`,
  :class:`X25519DH`, :class:`AESGCMCipher`, :class:`SHA256Hash`;
* :mod:`~m42d.crypto.noise.patterns`: tokens, message and handshake patterns, the
  notation and its table (sections 7 to 10), :class:`NoiseProtocol`;
* :mod:`~m42d.crypto.noise.symmetric`: :class:`CipherState` and :class:`SymmetricState`
  (sections 5.1 and 5.2);
* :mod:`~m42d.crypto.noise.handshake`: :class:`HandshakeState` (section 5.3).

Read in that order they are the specification's order, which is what lets a
reviewer check the engine section by section against the spec and the
third-party vectors.
"""

from __future__ import annotations

from m42d.crypto.noise.errors import (
    HandshakeAuthError,
    LowOrderPointError,
    NonceExhaustedError,
    UnsupportedProtocolError,
)
from m42d.crypto.noise.handshake import PSK_LEN, HandshakeState
from m42d.crypto.noise.patterns import (
    BASE_PATTERNS,
    PROTOCOL_NAME,
    HandshakePattern,
    MessagePattern,
    NoiseProtocol,
    Token,
    handshake_pattern,
)

# Not public, but tests/test_noise.py builds extra patterns with it.
from m42d.crypto.noise.patterns import _parse_notation as _parse_notation
from m42d.crypto.noise.primitives import (
    MAX_MESSAGE,
    MAX_NONCE,
    X25519DH,
    AESGCMCipher,
    KeyPair,
    SHA256Hash,
)
from m42d.crypto.noise.symmetric import CipherState, SymmetricState, TransportPair

__all__ = [
    "BASE_PATTERNS",
    "MAX_MESSAGE",
    "MAX_NONCE",
    "PROTOCOL_NAME",
    "PSK_LEN",
    "X25519DH",
    "AESGCMCipher",
    "CipherState",
    "HandshakeAuthError",
    "HandshakePattern",
    "HandshakeState",
    "KeyPair",
    "LowOrderPointError",
    "MessagePattern",
    "NoiseProtocol",
    "NonceExhaustedError",
    "SHA256Hash",
    "SymmetricState",
    "Token",
    "TransportPair",
    "UnsupportedProtocolError",
    "handshake_pattern",
]
