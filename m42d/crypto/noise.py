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

Why this module is big (~980 lines): it is the Noise Protocol Framework
(revision 34) as the specification lays it out -- the primitives, the
pattern notation, CipherState, SymmetricState, HandshakeState -- and those
objects are defined in terms of each other.  Keeping them in one file, in the
specification's order, is what lets a reviewer check it section by section
against the spec and the third-party vectors.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Sequence
from typing import ClassVar, Final, TypeVar, final

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from m42d.errors import (
    DecryptError,
    HandshakeError,
    LocalProtocolError,
)

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

MAX_MESSAGE: Final = 65535
"""The largest Noise message, handshake or transport (spec section 3)."""

MAX_NONCE: Final = 2**64 - 1
"""Reserved nonce: used only by Rekey, never to encrypt a message."""

PSK_LEN: Final = 32

PROTOCOL_NAME: Final = "Noise_XXpsk3_25519_AESGCM_SHA256"
"""The protocol m42d clients speak (see the session section of docs/protocol.md)."""

_TAG_LEN: Final = 16


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


# --------------------------------------------------------------------------- patterns


class Token(enum.Enum):
    """A handshake token (spec section 7.1 and 9)."""

    E = "e"
    S = "s"
    EE = "ee"
    ES = "es"
    SE = "se"
    SS = "ss"
    PSK = "psk"


_DH_TOKENS: Final = frozenset({Token.EE, Token.ES, Token.SE, Token.SS})


@final
@attrs.frozen
class MessagePattern:
    """One line of a pattern: who sends it and its tokens in order."""

    from_initiator: bool
    tokens: tuple[Token, ...]


@final
@attrs.frozen
class HandshakePattern:
    """A parsed handshake pattern, modifiers already applied."""

    name: str
    pre_messages: tuple[MessagePattern, ...]
    messages: tuple[MessagePattern, ...]

    @property
    def one_way(self) -> bool:
        return all(m.from_initiator for m in self.messages)

    @property
    def psk_count(self) -> int:
        return sum(m.tokens.count(Token.PSK) for m in self.messages)

    def overheads(self, dhlen: int, taglen: int) -> tuple[int, ...]:
        """Bytes each message adds to its payload.

        Whether a key is set at each token is fixed by the pattern (it is set by
        the first MixKey and never cleared), so message sizes are known in
        advance and can be checked before any state changes.
        """
        psk_mode = self.psk_count > 0
        has_key = False
        for pre in self.pre_messages:
            if psk_mode and Token.E in pre.tokens:
                has_key = True
        result: list[int] = []
        for message in self.messages:
            size = 0
            for token in message.tokens:
                if token is Token.E:
                    size += dhlen
                    has_key = has_key or psk_mode
                elif token is Token.S:
                    size += dhlen + (taglen if has_key else 0)
                else:
                    has_key = True
            result.append(size + (taglen if has_key else 0))
        return tuple(result)


def _parse_notation(name: str, text: str) -> HandshakePattern:
    """Parse the specification's notation: pre-messages, ``...``, messages."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "..." in lines:
        split_at = lines.index("...")
        pre_lines, message_lines = lines[:split_at], lines[split_at + 1 :]
    else:
        pre_lines, message_lines = [], lines

    def parse_line(line: str) -> MessagePattern:
        arrow, _, rest = line.partition(" ")
        if arrow not in ("->", "<-"):
            raise ValueError(f"pattern {name}: bad line {line!r}")
        tokens = tuple(Token(t.strip()) for t in rest.split(","))
        return MessagePattern(from_initiator=arrow == "->", tokens=tokens)

    return HandshakePattern(
        name=name,
        pre_messages=tuple(parse_line(line) for line in pre_lines),
        messages=tuple(parse_line(line) for line in message_lines),
    )


# Spec sections 7.4 (one-way), 7.5 (interactive) and 18 (deferred patterns).
_PATTERN_NOTATION: Final[dict[str, str]] = {
    "N": "<- s\n...\n-> e, es",
    "K": "-> s\n<- s\n...\n-> e, es, ss",
    "X": "<- s\n...\n-> e, es, s, ss",
    "NN": "-> e\n<- e, ee",
    "NK": "<- s\n...\n-> e, es\n<- e, ee",
    "NX": "-> e\n<- e, ee, s, es",
    "KN": "-> s\n...\n-> e\n<- e, ee, se",
    "KK": "-> s\n<- s\n...\n-> e, es, ss\n<- e, ee, se",
    "KX": "-> s\n...\n-> e\n<- e, ee, se, s, es",
    "XN": "-> e\n<- e, ee\n-> s, se",
    "XK": "<- s\n...\n-> e, es\n<- e, ee\n-> s, se",
    "XX": "-> e\n<- e, ee, s, es\n-> s, se",
    "IN": "-> e, s\n<- e, ee, se",
    "IK": "<- s\n...\n-> e, es, s, ss\n<- e, ee, se",
    "IX": "-> e, s\n<- e, ee, se, s, es",
    "NK1": "<- s\n...\n-> e\n<- e, ee, es",
    "NX1": "-> e\n<- e, ee, s\n-> es",
    "X1N": "-> e\n<- e, ee\n-> s\n<- se",
    "X1K": "<- s\n...\n-> e, es\n<- e, ee\n-> s\n<- se",
    "XK1": "<- s\n...\n-> e\n<- e, ee, es\n-> s, se",
    "X1K1": "<- s\n...\n-> e\n<- e, ee, es\n-> s\n<- se",
    "X1X": "-> e\n<- e, ee, s, es\n-> s\n<- se",
    "XX1": "-> e\n<- e, ee, s\n-> es, s, se",
    "X1X1": "-> e\n<- e, ee, s\n-> es, s\n<- se",
    "K1N": "-> s\n...\n-> e\n<- e, ee\n-> se",
    "K1K": "-> s\n<- s\n...\n-> e, es\n<- e, ee\n-> se",
    "KK1": "-> s\n<- s\n...\n-> e\n<- e, ee, se, es",
    "K1K1": "-> s\n<- s\n...\n-> e\n<- e, ee, es\n-> se",
    "K1X": "-> s\n...\n-> e\n<- e, ee, s, es\n-> se",
    "KX1": "-> s\n...\n-> e\n<- e, ee, se, s\n-> es",
    "K1X1": "-> s\n...\n-> e\n<- e, ee, s\n-> se, es",
    "I1N": "-> e, s\n<- e, ee\n-> se",
    "I1K": "<- s\n...\n-> e, es, s\n<- e, ee\n-> se",
    "IK1": "<- s\n...\n-> e, s\n<- e, ee, se, es",
    "I1K1": "<- s\n...\n-> e, s\n<- e, ee, es\n-> se",
    "I1X": "-> e, s\n<- e, ee, s, es\n-> se",
    "IX1": "-> e, s\n<- e, ee, se, s\n-> es",
    "I1X1": "-> e, s\n<- e, ee, s\n-> se, es",
}

BASE_PATTERNS: Final[dict[str, HandshakePattern]] = {
    name: _parse_notation(name, text) for name, text in _PATTERN_NOTATION.items()
}

_PATTERN_NAME_RE: Final = re.compile(r"([A-Z0-9]+)([a-z0-9+]*)")
_PSK_MODIFIER_RE: Final = re.compile(r"psk(0|[1-9][0-9]*)")


def handshake_pattern(name: str) -> HandshakePattern:
    """Resolve a pattern name such as ``XXpsk3`` or ``XXpsk0+psk2`` (spec 8 and 10.2).

    ``psk0`` puts a ``psk`` token at the start of the first message; ``pskN``
    (N >= 1) appends one to the end of message N.  Modifiers apply left to right.

    Raises:
        UnsupportedProtocolError: unknown base pattern or modifier.
    """
    match = _PATTERN_NAME_RE.fullmatch(name)
    base = BASE_PATTERNS.get(match.group(1)) if match else None
    if match is None or base is None:
        raise UnsupportedProtocolError(f"unknown handshake pattern {name!r}")
    modifiers = match.group(2).split("+") if match.group(2) else []
    messages = [list(m.tokens) for m in base.messages]
    seen: set[str] = set()
    for modifier in modifiers:
        psk = _PSK_MODIFIER_RE.fullmatch(modifier)
        if psk is None:
            raise UnsupportedProtocolError(
                f"unsupported pattern modifier {modifier!r} in {name!r} (only pskN)"
            )
        if modifier in seen:
            raise UnsupportedProtocolError(f"repeated modifier {modifier!r} in {name!r}")
        seen.add(modifier)
        position = int(psk.group(1))
        if position > len(messages):
            raise UnsupportedProtocolError(
                f"{modifier!r} in {name!r}: pattern has only {len(messages)} messages"
            )
        if position == 0:
            messages[0].insert(0, Token.PSK)
        else:
            messages[position - 1].append(Token.PSK)
    return HandshakePattern(
        name=name,
        pre_messages=base.pre_messages,
        messages=tuple(
            MessagePattern(from_initiator=m.from_initiator, tokens=tuple(tokens))
            for m, tokens in zip(base.messages, messages, strict=True)
        ),
    )


@final
@attrs.frozen
class NoiseProtocol:
    """A parsed protocol name: ``Noise_<pattern>_<dh>_<cipher>_<hash>``."""

    name: str
    pattern: HandshakePattern
    dh: X25519DH
    cipher: AESGCMCipher
    hash: SHA256Hash

    @classmethod
    def parse(cls, name: str) -> NoiseProtocol:
        """Raises UnsupportedProtocolError for anything but ``*_25519_AESGCM_SHA256``."""
        parts = name.split("_")
        if len(parts) != 5 or parts[0] != "Noise":
            raise UnsupportedProtocolError(
                f"malformed Noise protocol name {name!r}"
                " (want Noise_<pattern>_<dh>_<cipher>_<hash>)"
            )
        _, pattern_name, dh_name, cipher_name, hash_name = parts
        return cls(
            name=name,
            pattern=handshake_pattern(pattern_name),
            dh=_lookup("DH", dh_name, _DH_FUNCTIONS, name),
            cipher=_lookup("cipher", cipher_name, _CIPHER_FUNCTIONS, name),
            hash=_lookup("hash", hash_name, _HASH_FUNCTIONS, name),
        )


_T = TypeVar("_T")


def _lookup(kind: str, given: str, known: dict[str, _T], protocol_name: str) -> _T:
    try:
        return known[given]
    except KeyError:
        raise UnsupportedProtocolError(
            f"unsupported {kind} function {given!r} in {protocol_name!r}"
            f" (supported: {', '.join(known)})"
        ) from None


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


# --------------------------------------------------------------------------- HandshakeState


class _Phase(enum.Enum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


_AUTH_FAILED: Final = "handshake authentication failed: wrong room secret or tampered message"


@final
@attrs.define(init=False, eq=False, repr=False)
class HandshakeState:
    """One side of one Noise handshake (spec section 5.3).

    Args:
        protocol_name: e.g. :data:`PROTOCOL_NAME`.
        initiator: whether this side sends the first message.
        prologue: data both sides must agree on; mixed into the hash first.
        s: this side's static key pair, if the pattern uses one.
        e: an ephemeral to use instead of a fresh one; only for known-answer tests.
        rs: the peer's static public key, only for patterns that pre-share it.
        re: the peer's ephemeral public key, only for patterns that pre-share it.
        psks: one 32-byte psk per ``psk`` token, in pattern order.

    Raises:
        UnsupportedProtocolError: the protocol name is not supported.
        LocalProtocolError: a key or psk the pattern needs is missing, or one
            is given that it cannot use, or one has the wrong length.
        LowOrderPointError: ``rs`` or ``re`` is a low-order point.
    """

    _protocol: NoiseProtocol
    _initiator: bool
    _symmetric: SymmetricState | None
    _s: KeyPair | None
    _e: KeyPair | None
    _rs: bytes | None
    _re: bytes | None
    _psks: tuple[bytes, ...]
    _psk_index: int
    _psk_mode: bool
    _overheads: tuple[int, ...]
    _index: int
    _phase: _Phase
    _transport: TransportPair | None
    _handshake_hash: bytes | None

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        protocol = NoiseProtocol.parse(protocol_name)
        pattern = protocol.pattern
        dhlen = protocol.dh.dhlen
        self._protocol = protocol
        self._initiator = initiator
        self._s, self._e, self._rs, self._re = s, e, rs, re
        self._psks = tuple(psks)
        self._psk_index = 0
        self._psk_mode = pattern.psk_count > 0
        self._overheads = pattern.overheads(dhlen, _TAG_LEN)
        self._index = 0
        self._phase = _Phase.RUNNING
        self._transport = None
        self._handshake_hash = None
        self._symmetric = None

        mine = [m for m in pattern.messages if m.from_initiator == initiator]
        my_pre = [m for m in pattern.pre_messages if m.from_initiator == initiator]
        their_pre = [m for m in pattern.pre_messages if m.from_initiator != initiator]
        if s is None and any(Token.S in m.tokens for m in mine + my_pre):
            raise LocalProtocolError(f"pattern {pattern.name} needs this side's static key (s)")
        if e is None and any(Token.E in m.tokens for m in my_pre):
            raise LocalProtocolError(f"pattern {pattern.name} needs this side's pre-shared e")
        for label, key, token in (("rs", rs, Token.S), ("re", re, Token.E)):
            pre_known = any(token in m.tokens for m in their_pre)
            if pre_known and key is None:
                raise LocalProtocolError(
                    f"pattern {pattern.name} needs the peer's pre-known key ({label})"
                )
            if not pre_known and key is not None:
                raise LocalProtocolError(
                    f"pattern {pattern.name} does not pre-share the peer's key ({label})"
                )
            if key is not None:
                if len(key) != dhlen:
                    raise LocalProtocolError(f"{label} must be {dhlen} bytes")
                protocol.dh.check_public(key)
        if len(self._psks) != pattern.psk_count:
            raise LocalProtocolError(
                f"pattern {pattern.name} needs {pattern.psk_count} psk(s), got {len(self._psks)}"
            )
        if any(len(psk) != PSK_LEN for psk in self._psks):
            raise LocalProtocolError(f"each psk must be {PSK_LEN} bytes")

        symmetric = SymmetricState.initialize(protocol)
        symmetric.mix_hash(prologue)
        # The initiator's pre-message keys are always hashed first (spec 7.1).
        for pre in sorted(pattern.pre_messages, key=lambda m: not m.from_initiator):
            local = pre.from_initiator == initiator
            for token in pre.tokens:
                if token is Token.S:
                    public = self._need_s().public if local else self._need_rs()
                    symmetric.mix_hash(public)
                else:  # validated: pre-messages hold only e and s
                    public = self._need_e().public if local else self._need_re()
                    symmetric.mix_hash(public)
                    if self._psk_mode:
                        symmetric.mix_key(public)
        self._symmetric = symmetric

    def __repr__(self) -> str:
        total = len(self._protocol.pattern.messages)
        return (
            f"HandshakeState(protocol={self._protocol.name!r}, initiator={self._initiator},"
            f" phase={self._phase.value!r}, message={self._index}/{total})"
        )

    # ------------------------------------------------------------------ properties

    @property
    def protocol_name(self) -> str:
        return self._protocol.name

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def complete(self) -> bool:
        return self._phase is _Phase.COMPLETE

    @property
    def failed(self) -> bool:
        return self._phase is _Phase.FAILED

    @property
    def handshake_hash(self) -> bytes:
        """The final handshake hash h: the channel binding the SAS is drawn from."""
        if self._handshake_hash is None:
            raise LocalProtocolError("handshake hash is only defined once the handshake completes")
        return self._handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once known (pre-shared or received)."""
        return self._rs

    def is_my_turn(self) -> bool:
        """True when the next call must be ``write_message``."""
        if self._phase is not _Phase.RUNNING:
            return False
        return self._protocol.pattern.messages[self._index].from_initiator == self._initiator

    def split(self) -> TransportPair:
        """The transport CipherStates: the initiator sends with c1, the responder with c2.

        Every call returns the same pair, so nonces cannot be reused by
        splitting twice.  In one-way patterns only initiator-to-responder
        traffic is meaningful (the spec discards c2).
        """
        if self._transport is None:
            raise LocalProtocolError("split() before the handshake completed")
        return self._transport

    # ------------------------------------------------------------------ messages

    def write_message(self, payload: bytes = b"") -> bytes:
        """Produce the next handshake message, carrying ``payload``.

        Raises:
            LocalProtocolError: out of turn, after completion or failure, or the
                message would exceed MAX_MESSAGE bytes (nothing changed then).
        """
        symmetric = self._check_turn(writing=True)
        overhead = self._overheads[self._index]
        if overhead + len(payload) > MAX_MESSAGE:
            raise LocalProtocolError(
                f"handshake payload of {len(payload)} bytes exceeds the"
                f" {MAX_MESSAGE - overhead} bytes this message can carry"
            )
        try:
            parts: list[bytes] = []
            for token in self._protocol.pattern.messages[self._index].tokens:
                if token is Token.E:
                    if self._e is None:
                        self._e = self._protocol.dh.generate_keypair()
                    parts.append(self._e.public)
                    symmetric.mix_hash(self._e.public)
                    if self._psk_mode:
                        symmetric.mix_key(self._e.public)
                elif token is Token.S:
                    parts.append(symmetric.encrypt_and_hash(self._need_s().public))
                elif token is Token.PSK:
                    self._mix_psk(symmetric)
                else:
                    symmetric.mix_key(self._dh(token))
            parts.append(symmetric.encrypt_and_hash(payload))
        except BaseException:
            self._phase = _Phase.FAILED
            raise
        self._advance(symmetric)
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message and return its payload.

        Raises:
            LocalProtocolError: out of turn, after completion or failure.
            HandshakeAuthError: the message does not authenticate (wrong psk,
                wrong keys, tampering).
            LowOrderPointError: it carries a low-order public key.
            HandshakeError: it is too short or too long.
        """
        symmetric = self._check_turn(writing=False)
        try:
            payload = self._read_tokens(symmetric, message)
        except BaseException:
            self._phase = _Phase.FAILED
            raise
        self._advance(symmetric)
        return payload

    def _read_tokens(self, symmetric: SymmetricState, message: bytes) -> bytes:
        overhead = self._overheads[self._index]
        number = self._index + 1
        if len(message) > MAX_MESSAGE:
            raise HandshakeError(f"handshake message {number} longer than {MAX_MESSAGE} bytes")
        if len(message) < overhead:
            raise HandshakeError(
                f"handshake message {number} too short: {len(message)} < {overhead} bytes"
            )
        dh = self._protocol.dh
        view = memoryview(message)
        offset = 0
        try:
            for token in self._protocol.pattern.messages[self._index].tokens:
                if token is Token.E:
                    re_public = bytes(view[offset : offset + dh.dhlen])
                    offset += dh.dhlen
                    dh.check_public(re_public)
                    self._re = re_public
                    symmetric.mix_hash(re_public)
                    if self._psk_mode:
                        symmetric.mix_key(re_public)
                elif token is Token.S:
                    size = dh.dhlen + (_TAG_LEN if symmetric.has_key() else 0)
                    rs_public = symmetric.decrypt_and_hash(bytes(view[offset : offset + size]))
                    offset += size
                    dh.check_public(rs_public)
                    self._rs = rs_public
                elif token is Token.PSK:
                    self._mix_psk(symmetric)
                else:
                    symmetric.mix_key(self._dh(token))
            return symmetric.decrypt_and_hash(bytes(view[offset:]))
        except HandshakeError:
            raise
        except DecryptError as exc:
            raise HandshakeAuthError(_AUTH_FAILED) from exc

    # ------------------------------------------------------------------ internals

    def _check_turn(self, *, writing: bool) -> SymmetricState:
        verb = "write" if writing else "read"
        if self._phase is _Phase.FAILED:
            raise LocalProtocolError(
                f"cannot {verb}: this handshake failed earlier; start a new one"
            )
        if self._phase is _Phase.COMPLETE or self._symmetric is None:
            raise LocalProtocolError(f"cannot {verb}: the handshake is complete; use split()")
        if self.is_my_turn() != writing:
            other = "read" if writing else "write"
            raise LocalProtocolError(
                f"cannot {verb} handshake message {self._index + 1}: it is this side's turn"
                f" to {other}"
            )
        return self._symmetric

    def _advance(self, symmetric: SymmetricState) -> None:
        self._index += 1
        if self._index < len(self._protocol.pattern.messages):
            return
        c1, c2 = symmetric.split()
        self._transport = (
            TransportPair(send=c1, recv=c2) if self._initiator else TransportPair(send=c2, recv=c1)
        )
        self._handshake_hash = symmetric.handshake_hash
        self._phase = _Phase.COMPLETE
        # Drop what forward secrecy needs forgotten; the caller owns s.
        self._symmetric = None
        self._e = None
        self._re = None
        self._psks = ()

    def _mix_psk(self, symmetric: SymmetricState) -> None:
        symmetric.mix_key_and_hash(self._psks[self._psk_index])
        self._psk_index += 1

    def _dh(self, token: Token) -> bytes:
        dh = self._protocol.dh
        if token is Token.EE:
            return dh.dh(self._need_e(), self._need_re())
        if token is Token.SS:
            return dh.dh(self._need_s(), self._need_rs())
        # es: initiator's e with responder's s; se: initiator's s with responder's e.
        local_e = (token is Token.ES) == self._initiator
        if local_e:
            return dh.dh(self._need_e(), self._need_rs())
        return dh.dh(self._need_s(), self._need_re())

    def _need_s(self) -> KeyPair:
        if self._s is None:  # pragma: no cover - excluded by __init__ checks
            raise LocalProtocolError("static key pair (s) missing")
        return self._s

    def _need_e(self) -> KeyPair:
        if self._e is None:  # pragma: no cover - excluded by the pattern table
            raise LocalProtocolError("ephemeral key pair (e) missing")
        return self._e

    def _need_rs(self) -> bytes:
        if self._rs is None:  # pragma: no cover - excluded by the pattern table
            raise LocalProtocolError("remote static key (rs) missing")
        return self._rs

    def _need_re(self) -> bytes:
        if self._re is None:  # pragma: no cover - excluded by the pattern table
            raise LocalProtocolError("remote ephemeral key (re) missing")
        return self._re
