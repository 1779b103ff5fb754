"""File STREAM encryption: one AES-256-GCM key per file, counter nonces, a last-chunk flag.

Files travel on the bulk lane, outside the Noise cipher states, so that a
large transfer never holds up text on the control lane and the relay may
interleave the lanes freely.  Each file therefore gets its own random key,
sent to the peer inside the (Noise-encrypted) file offer, and its chunks are
sealed with the STREAM construction of Hoang, Reyhanitabar, Rogaway and
Vizár as used by age: the nonce is the chunk counter plus a flag that is set
only on the final chunk.  That one bit is what makes truncation detectable;
the counter is what makes reordering, skipping and splicing detectable.

Rules and invariants (normative text: docs/protocol.md, "File STREAM encryption"):

* Plaintext is cut into chunks of exactly ``CHUNK_SIZE`` bytes; only the
  final chunk may be shorter.  The final chunk is empty only when the whole
  file is empty (a 0-byte file is one empty final chunk), so every file has
  exactly ``chunk_count(size)`` chunks and exactly one framing.
* Chunk key ``K = HKDF-SHA256(ikm=file_key, salt=salt, info="m42 file stream
  v1", L=32)``.  Nonce of chunk ``i`` = ``i`` as 11 bytes big-endian || flag,
  flag ``0x01`` on the final chunk, else ``0x00``.  No associated data.
* Chunk indexes are below ``MAX_CHUNKS`` (2**64).
* A decryptor accepts chunks strictly in order from ``start``.  After the
  final chunk it is ``done`` and refuses any further chunk (extension).
  ``finish()`` before the final chunk raises (truncation).  Any refused chunk
  poisons the decryptor: a stream that failed once is never trusted again;
  resuming means building a new decryptor with ``start=next_index``.
* The encryptor is stateless apart from the key, so a sender can resume at
  any chunk without re-encrypting the earlier ones.  It refuses (as a caller
  bug, :class:`LocalProtocolError`) any chunk that would break the framing
  rule above; the decryptor refuses the same with :class:`StreamError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final, final

import attrs
from attrs import field
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from m42d.errors import LocalProtocolError, StreamError

__all__ = [
    "CHUNK_SIZE",
    "ENCRYPTED_CHUNK_SIZE",
    "FILE_KEY_SIZE",
    "MAX_CHUNKS",
    "SALT_SIZE",
    "STREAM_INFO",
    "TAG_SIZE",
    "FileKey",
    "StreamDecryptor",
    "StreamEncryptor",
    "chunk_count",
    "decrypt_chunk",
    "encrypted_size",
]

CHUNK_SIZE: Final = 262144
"""Plaintext bytes in every chunk but the last."""

TAG_SIZE: Final = 16
"""AES-GCM tag appended to each chunk."""

ENCRYPTED_CHUNK_SIZE: Final = CHUNK_SIZE + TAG_SIZE
"""Size on the wire of a full chunk; no chunk is larger."""

FILE_KEY_SIZE: Final = 32
SALT_SIZE: Final = 32

MAX_CHUNKS: Final = 2**64
"""Chunk indexes stay below this (the nonce has room for 2**88; 2**64 is plenty)."""

STREAM_INFO: Final = b"m42 file stream v1"
"""HKDF info label; a new version of the construction gets a new label."""

_NONCE_PREFIX_SIZE: Final = 11
_FLAG_MORE: Final = b"\x00"
_FLAG_LAST: Final = b"\x01"


def _check_size(name: str, size: int) -> Callable[[object, attrs.Attribute[bytes], bytes], None]:
    def check(_inst: object, _attr: attrs.Attribute[bytes], value: bytes) -> None:
        # The offer that carries these fields comes from the peer, so a wrong
        # length is a remote error; the message names the field, never the value.
        if len(value) != size:
            raise StreamError(f"file stream {name} must be {size} bytes, got {len(value)}")

    return check


@final
@attrs.frozen
class FileKey:
    """The per-file secret sent in a file offer: key material plus the HKDF salt.

    Both halves are random per file so that a chunk of one file can never
    authenticate as a chunk of another, even if one half were reused.
    """

    key: bytes = field(repr=False, validator=_check_size("key", FILE_KEY_SIZE))
    salt: bytes = field(repr=False, validator=_check_size("salt", SALT_SIZE))

    @classmethod
    def generate(cls) -> FileKey:
        """A fresh key for one file; never reuse it for another file."""
        return cls(key=os.urandom(FILE_KEY_SIZE), salt=os.urandom(SALT_SIZE))


def _chunk_cipher(file_key: FileKey) -> AESGCM:
    chunk_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=file_key.salt,
        info=STREAM_INFO,
    ).derive(file_key.key)
    return AESGCM(chunk_key)


def chunk_count(size: int) -> int:
    """Number of chunks of a file of ``size`` bytes; an empty file still has one."""
    if size < 0:
        raise LocalProtocolError(f"file size must not be negative, got {size}")
    if size == 0:
        return 1
    return -(-size // CHUNK_SIZE)


def encrypted_size(size: int) -> int:
    """Bytes on the bulk lane for a file of ``size`` bytes (plaintext plus one tag per chunk)."""
    return size + chunk_count(size) * TAG_SIZE


def _check_index(index: int) -> None:
    if not 0 <= index < MAX_CHUNKS:
        raise LocalProtocolError(f"chunk index {index} is outside [0, 2**64)")


def _open(aead: AESGCM, index: int, ciphertext: bytes) -> tuple[bytes, bool]:
    """Decrypt chunk ``index``, working out from the tag whether it is the final one.

    As in age, a full-size chunk is tried as non-final first (the common
    case), then as final; a shorter chunk can only be final.  A short chunk
    that authenticates as non-final was framed wrongly by the sender; it is
    checked for only after failing, so it costs nothing on the good path.
    """
    n = len(ciphertext)
    if n < TAG_SIZE:
        raise StreamError(f"chunk {index} is {n} bytes, shorter than the {TAG_SIZE}-byte tag")
    if n > ENCRYPTED_CHUNK_SIZE:
        raise StreamError(
            f"chunk {index} is {n} bytes, longer than the maximum {ENCRYPTED_CHUNK_SIZE}"
        )
    prefix = index.to_bytes(_NONCE_PREFIX_SIZE, "big")
    if n == ENCRYPTED_CHUNK_SIZE:
        try:
            return aead.decrypt(prefix + _FLAG_MORE, ciphertext, None), False
        except InvalidTag:
            pass  # maybe a full-size final chunk: try the other flag below
    try:
        plaintext = aead.decrypt(prefix + _FLAG_LAST, ciphertext, None)
    except InvalidTag as exc:
        if n < ENCRYPTED_CHUNK_SIZE:
            try:
                aead.decrypt(prefix + _FLAG_MORE, ciphertext, None)
            except InvalidTag:
                pass
            else:
                raise StreamError(
                    f"chunk {index} is marked non-final but holds fewer than {CHUNK_SIZE} bytes"
                ) from exc
        raise StreamError(
            f"chunk {index} failed authentication (tampered, out of order, or from another file)"
        ) from exc
    if not plaintext and index != 0:
        raise StreamError(
            f"chunk {index} is an empty final chunk; only an empty file may end with one"
        )
    return plaintext, True


def decrypt_chunk(file_key: FileKey, index: int, ciphertext: bytes) -> tuple[bytes, bool]:
    """Decrypt one chunk out of order; returns ``(plaintext, is_last)``.

    Builds the cipher on each call, so it suits spot checks, not a transfer:
    use :class:`StreamDecryptor`, which also enforces order and completeness.
    """
    _check_index(index)
    return _open(_chunk_cipher(file_key), index, ciphertext)


@final
@attrs.define
class StreamEncryptor:
    """Seals the chunks of one file.

    Random access on purpose: after a reconnect the sender resumes at the
    first chunk the receiver has not acknowledged, without touching earlier
    ones.  Deterministic: the same key, index and plaintext give the same
    ciphertext, which is safe because a (key, nonce) pair only ever seals the
    one chunk of the file at that position.
    """

    file_key: FileKey = field(repr=False)
    _aead: AESGCM = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._aead = _chunk_cipher(self.file_key)

    def encrypt_chunk(self, index: int, plaintext: bytes, *, last: bool) -> bytes:
        """Chunk ``index`` of the file, sealed; ``last`` marks the final chunk.

        Raises:
            LocalProtocolError: the index is out of range, or the chunk breaks
                the framing rule (a non-final chunk must hold exactly
                ``CHUNK_SIZE`` bytes; only chunk 0 may be an empty final chunk).
        """
        _check_index(index)
        n = len(plaintext)
        if n > CHUNK_SIZE:
            raise LocalProtocolError(f"chunk {index} holds {n} bytes, more than {CHUNK_SIZE}")
        if last:
            if n == 0 and index != 0:
                raise LocalProtocolError(
                    f"chunk {index} would be an empty final chunk; make chunk {index - 1} final"
                )
            flag = _FLAG_LAST
        else:
            if n != CHUNK_SIZE:
                raise LocalProtocolError(
                    f"non-final chunk {index} holds {n} bytes; it must hold exactly {CHUNK_SIZE}"
                )
            flag = _FLAG_MORE
        return self._aead.encrypt(index.to_bytes(_NONCE_PREFIX_SIZE, "big") + flag, plaintext, None)


@final
@attrs.define
class StreamDecryptor:
    """Opens the chunks of one file strictly in order and tells when it is complete.

    The decryptor owns the chunk counter, so the transport never tells it
    which chunk it is holding: a chunk that arrives out of place fails
    authentication instead of being silently accepted.
    """

    file_key: FileKey = field(repr=False)
    start: int = field(default=0, kw_only=True)
    _aead: AESGCM = field(init=False, repr=False)
    _next: int = field(init=False)
    _done: bool = field(init=False, default=False)
    _failed: bool = field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        _check_index(self.start)
        self._aead = _chunk_cipher(self.file_key)
        self._next = self.start

    @property
    def next_index(self) -> int:
        """Index of the chunk expected next (after the final chunk: one past it)."""
        return self._next

    @property
    def done(self) -> bool:
        """True once the final chunk has been authenticated."""
        return self._done

    def decrypt_next(self, ciphertext: bytes) -> bytes:
        """Plaintext of the next chunk.

        Raises:
            StreamError: the chunk is tampered, out of order, from another
                file, badly framed, over-long, or comes after the final chunk;
                or this decryptor already failed.
        """
        if self._failed:
            raise StreamError("file stream already failed; resume with a new decryptor")
        if self._done:
            self._failed = True
            raise StreamError(f"chunk {self._next} arrived after the final chunk (stream extended)")
        if self._next >= MAX_CHUNKS:
            self._failed = True
            raise StreamError("file stream has 2**64 chunks and no final chunk")
        try:
            plaintext, last = _open(self._aead, self._next, ciphertext)
        except StreamError:
            self._failed = True
            raise
        self._next += 1
        self._done = last
        return plaintext

    def finish(self) -> None:
        """Confirm the file is complete; call it when the sender says the file ended.

        Raises:
            StreamError: the final chunk was never seen (the stream was truncated).
        """
        if not self._done:
            raise StreamError(
                f"file stream truncated: no final chunk after chunk {self._next - 1}"
                if self._next > 0
                else "file stream truncated: no chunk received"
            )
