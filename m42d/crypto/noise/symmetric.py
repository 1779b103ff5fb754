"""CipherState and SymmetricState (spec sections 5.1 and 5.2): the keys and the hash.

A CipherState also carries the transport traffic after the handshake, so it
is kept apart from HandshakeState, which only drives the SymmetricState it
holds and hands out a :class:`TransportPair` at the end.
"""

from __future__ import annotations

from typing import Final, final

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from m42d.crypto.noise.errors import NonceExhaustedError
from m42d.crypto.noise.patterns import NoiseProtocol
from m42d.crypto.noise.primitives import _TAG_LEN, MAX_MESSAGE, MAX_NONCE, AESGCMCipher, SHA256Hash
from m42d.errors import (
    DecryptError,
    LocalProtocolError,
)

# --------------------------------------------------------------------------- CipherState

_AESGCM: Final = AESGCMCipher()


@final
@attrs.define(eq=False, repr=False)
class CipherState:
    """A key and a message counter (spec section 5.1).

    Holds one AEAD object per key, built when the key is set, because transport
    encryption runs once per control message and building it is not free.
    Without a key, encryption passes data through unchanged, as the spec
    requires during the first handshake messages.
    """

    _key: bytes | None = attrs.field(default=None, alias="key")
    _cipher: AESGCMCipher = attrs.field(default=_AESGCM, alias="cipher")
    _n: int = attrs.field(default=0, init=False)
    _aead: AESGCM | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.initialize_key(self._key)

    def __repr__(self) -> str:
        return f"CipherState(has_key={self.has_key()}, nonce={self._n})"

    def initialize_key(self, key: bytes | None) -> None:
        """Set (or clear) the key and reset the nonce to zero."""
        if key is not None and len(key) != self._cipher.keylen:
            raise LocalProtocolError(f"a cipher key is {self._cipher.keylen} bytes")
        self._key = key
        self._aead = None if key is None else self._cipher.new(key)
        self._n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The nonce the next message will use (= messages processed so far)."""
        return self._n

    def set_nonce(self, n: int) -> None:
        if not 0 <= n <= MAX_NONCE:
            raise LocalProtocolError("nonce must be in 0 .. 2^64-1")
        self._n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt one message and advance the nonce.

        Raises:
            NonceExhaustedError: the nonce reached 2^64-1.
            LocalProtocolError: the ciphertext would exceed MAX_MESSAGE bytes.
        """
        aead = self._aead
        if aead is None:
            if len(plaintext) > MAX_MESSAGE:
                raise LocalProtocolError(f"message longer than {MAX_MESSAGE} bytes")
            return plaintext
        n = self._n
        if n >= MAX_NONCE:
            raise NonceExhaustedError("cipher nonce exhausted; run a new handshake")
        if len(plaintext) > MAX_MESSAGE - _TAG_LEN:
            raise LocalProtocolError(f"plaintext longer than {MAX_MESSAGE - _TAG_LEN} bytes")
        ciphertext = aead.encrypt(self._cipher.nonce(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt one message; the nonce advances only on success.

        Raises:
            DecryptError: wrong key, tampered or oversized ciphertext.
            NonceExhaustedError: the nonce reached 2^64-1.
        """
        aead = self._aead
        if len(ciphertext) > MAX_MESSAGE:
            raise DecryptError(f"ciphertext longer than {MAX_MESSAGE} bytes")
        if aead is None:
            return ciphertext
        n = self._n
        if n >= MAX_NONCE:
            raise NonceExhaustedError("cipher nonce exhausted; run a new handshake")
        try:
            plaintext = aead.decrypt(self._cipher.nonce(n), ciphertext, ad)
        except InvalidTag as exc:
            raise DecryptError("message authentication failed (wrong key or tampered)") from exc
        self._n = n + 1
        return plaintext

    def rekey(self) -> None:
        """Replace the key by REKEY(k); the nonce is kept (spec section 11.3)."""
        if self._aead is None:
            raise LocalProtocolError("rekey on a CipherState without a key")
        self._key = self._cipher.rekey(self._aead)
        self._aead = self._cipher.new(self._key)


@final
@attrs.frozen
class TransportPair:
    """The two transport CipherStates after Split, oriented for this side."""

    send: CipherState
    recv: CipherState


# --------------------------------------------------------------------------- SymmetricState


@final
@attrs.define(eq=False, repr=False)
class SymmetricState:
    """Chaining key, handshake hash and the handshake CipherState (spec section 5.2)."""

    _hash: SHA256Hash
    _ck: bytes
    _h: bytes
    _cs: CipherState

    def __repr__(self) -> str:
        return f"SymmetricState(has_key={self._cs.has_key()})"

    @classmethod
    def initialize(cls, protocol: NoiseProtocol) -> SymmetricState:
        name = protocol.name.encode("ascii")
        hash_ = protocol.hash
        h = name.ljust(hash_.hashlen, b"\x00") if len(name) <= hash_.hashlen else hash_.hash(name)
        return cls(hash_, h, h, CipherState(cipher=protocol.cipher))

    @property
    def handshake_hash(self) -> bytes:
        return self._h

    def has_key(self) -> bool:
        return self._cs.has_key()

    def mix_key(self, ikm: bytes) -> None:
        self._ck, temp_k = self._hash.hkdf(self._ck, ikm, 2)
        self._cs.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self._h = self._hash.hash(self._h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self._ck, temp_h, temp_k = self._hash.hkdf(self._ck, ikm, 3)
        self.mix_hash(temp_h)
        self._cs.initialize_key(temp_k[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cs.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cs.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = self._hash.hkdf(self._ck, b"", 2)
        cipher = self._cs._cipher
        return (
            CipherState(key=temp_k1[:32], cipher=cipher),
            CipherState(key=temp_k2[:32], cipher=cipher),
        )
