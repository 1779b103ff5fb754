"""The one cipher suite m42d has: X25519, AES-256-GCM and SHA-256 (spec section 12).

The functions the framework is built from, and the sizes they fix; the
states above call them only through these objects, which is what keeps the
suite a name in the protocol string (``_25519_AESGCM_SHA256``) rather than
code spread over the engine.
"""

from __future__ import annotations

import struct
from typing import ClassVar, Final, final

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from m42d.crypto.noise.errors import LowOrderPointError
from m42d.errors import LocalProtocolError

MAX_MESSAGE: Final = 65535
"""The largest Noise message, handshake or transport (spec section 3)."""

MAX_NONCE: Final = 2**64 - 1
"""Reserved nonce: used only by Rekey, never to encrypt a message."""


_TAG_LEN: Final = 16


# --------------------------------------------------------------------------- suite


@final
@attrs.frozen
class KeyPair:
    """An X25519 key pair as raw 32-byte strings (the wire and storage format)."""

    private: bytes = attrs.field(repr=False)
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls._from_key(X25519PrivateKey.generate())

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        """Rebuild a key pair from a stored private key.

        Raises:
            LocalProtocolError: ``private`` is not 32 bytes.
        """
        if len(private) != X25519DH.dhlen:
            raise LocalProtocolError(f"an X25519 private key is {X25519DH.dhlen} bytes")
        return cls._from_key(X25519PrivateKey.from_private_bytes(private))

    @classmethod
    def _from_key(cls, key: X25519PrivateKey) -> KeyPair:
        return cls(private=key.private_bytes_raw(), public=key.public_key().public_bytes_raw())


@final
@attrs.frozen
class X25519DH:
    """The Noise DH functions for Curve25519 (spec section 12.1)."""

    name: ClassVar[str] = "25519"
    dhlen: ClassVar[int] = 32

    def generate_keypair(self) -> KeyPair:
        return KeyPair.generate()

    def dh(self, key_pair: KeyPair, public_key: bytes) -> bytes:
        """Raises LowOrderPointError when the result would be all zeros."""
        private = X25519PrivateKey.from_private_bytes(key_pair.private)
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(public_key))
        except ValueError as exc:
            raise LowOrderPointError("peer public key is a low-order point") from exc

    def check_public(self, public_key: bytes) -> None:
        """Reject a low-order point before it is used in any DH.

        Every clamped X25519 scalar is a multiple of the cofactor 8, so the
        product with a fixed scalar is zero exactly when the point's order
        divides 8; ``cryptography`` signals that zero with ValueError.
        """
        self.dh(_PROBE_KEY, public_key)


_PROBE_KEY: Final = KeyPair.generate()


@final
@attrs.frozen
class AESGCMCipher:
    """The Noise cipher functions for AES-256-GCM (spec section 12.4)."""

    name: ClassVar[str] = "AESGCM"
    keylen: ClassVar[int] = 32
    _nonce_struct: ClassVar[struct.Struct] = struct.Struct(">4xQ")

    def nonce(self, n: int) -> bytes:
        """32 bits of zeros followed by the big-endian 64-bit counter."""
        return self._nonce_struct.pack(n)

    def new(self, key: bytes) -> AESGCM:
        return AESGCM(key)

    def rekey(self, aead: AESGCM) -> bytes:
        """REKEY(k) = ENCRYPT(k, 2^64-1, zero-length ad, 32 zero bytes)[:32]."""
        return aead.encrypt(self.nonce(MAX_NONCE), bytes(32), b"")[:32]


@final
@attrs.frozen
class SHA256Hash:
    """The Noise hash functions for SHA-256 (spec section 12.5)."""

    name: ClassVar[str] = "SHA256"
    hashlen: ClassVar[int] = 32
    blocklen: ClassVar[int] = 64

    def hash(self, data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        return digest.finalize()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        mac = crypto_hmac.HMAC(key, hashes.SHA256())
        mac.update(data)
        return mac.finalize()

    def hkdf(self, chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
        """HKDF as Noise defines it (spec section 4.3), for 2 or 3 outputs."""
        temp_key = self.hmac(chaining_key, ikm)
        result: list[bytes] = []
        previous = b""
        for i in range(1, outputs + 1):
            previous = self.hmac(temp_key, previous + bytes([i]))
            result.append(previous)
        return tuple(result)


_DH_FUNCTIONS: Final = {X25519DH.name: X25519DH()}
_CIPHER_FUNCTIONS: Final = {AESGCMCipher.name: AESGCMCipher()}
_HASH_FUNCTIONS: Final = {SHA256Hash.name: SHA256Hash()}
