"""File STREAM: round trips, resume, every attack the construction must catch, known answers.

The known answers below are the ones printed in docs/protocol.md;
if one changes, the spec and every other implementation change with it.
"""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from m42d.crypto.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    MAX_CHUNKS,
    TAG_SIZE,
    FileKey,
    StreamDecryptor,
    StreamEncryptor,
    chunk_count,
    decrypt_chunk,
    encrypted_size,
)
from m42d.errors import LocalProtocolError, StreamError

KAT_KEY = FileKey(key=bytes(range(32)), salt=bytes(range(32, 64)))


# --- an independent reading of the spec, from the standard library and bare AES-GCM ---


def ref_chunk_key(file_key: FileKey) -> bytes:
    """HKDF-SHA256 written out from RFC 5869, to check the module's derivation."""
    prk = hmac.new(file_key.salt, file_key.key, hashlib.sha256).digest()
    return hmac.new(prk, b"m42 file stream v1" + b"\x01", hashlib.sha256).digest()


def ref_seal(file_key: FileKey, index: int, plaintext: bytes, *, last: bool) -> bytes:
    """Seal a chunk without the module's framing checks (to forge bad framings)."""
    nonce = index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
    return AESGCM(ref_chunk_key(file_key)).encrypt(nonce, plaintext, None)


def split(data: bytes) -> list[bytes]:
    if not data:
        return [b""]
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def encrypt_file(file_key: FileKey, data: bytes, *, start: int = 0) -> list[bytes]:
    enc = StreamEncryptor(file_key)
    chunks = split(data)
    return [
        enc.encrypt_chunk(i, chunks[i], last=i == len(chunks) - 1)
        for i in range(start, len(chunks))
    ]


def decrypt_file(file_key: FileKey, sealed: list[bytes], *, start: int = 0) -> bytes:
    dec = StreamDecryptor(file_key, start=start)
    out = [dec.decrypt_next(c) for c in sealed]
    dec.finish()
    assert dec.done
    assert dec.next_index == start + len(sealed)
    return b"".join(out)


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --- known answers (the values printed in the spec) ---


def test_known_answer_chunk_key() -> None:
    assert ref_chunk_key(KAT_KEY).hex() == (
        "cdebb36bdaad078d31de2e13a2c862607a9762f28ceb11daaf2bd6c70fe8b28b"
    )


def test_known_answer_hello() -> None:
    sealed = StreamEncryptor(KAT_KEY).encrypt_chunk(0, b"hello", last=True)
    assert sealed.hex() == "d2775a7e17bd778cd9b4144f4f291b91066664c863"
    nonce = bytes.fromhex("000000000000000000000001")
    assert AESGCM(ref_chunk_key(KAT_KEY)).encrypt(nonce, b"hello", None) == sealed
    assert decrypt_file(KAT_KEY, [sealed]) == b"hello"


def test_known_answer_empty_file() -> None:
    sealed = StreamEncryptor(KAT_KEY).encrypt_chunk(0, b"", last=True)
    assert sealed.hex() == "c287cb38813fe671dccbe47da44a5bd7"
    assert decrypt_file(KAT_KEY, [sealed]) == b""


def test_known_answer_two_chunks() -> None:
    data = bytes(i % 251 for i in range(CHUNK_SIZE + 1))
    c0, c1 = encrypt_file(KAT_KEY, data)
    assert len(c0) == ENCRYPTED_CHUNK_SIZE == 262160
    assert hashlib.sha256(c0).hexdigest() == (
        "42d9661b11b354e65c3332b096f90dbcbbf96d44a1f82cddc5c68e4652288613"
    )
    assert c0[-TAG_SIZE:].hex() == "2836b5b76833f3f36fc5967ac9eaf146"
    assert c1.hex() == "b06d689a393ed7b476af082444c10450a8"


@settings(max_examples=50, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    salt=st.binary(min_size=32, max_size=32),
    index=st.integers(0, MAX_CHUNKS - 1),
    plaintext=st.binary(min_size=1, max_size=64),
    last=st.booleans(),
)
def test_matches_reference(
    key: bytes, salt: bytes, index: int, plaintext: bytes, last: bool
) -> None:
    fk = FileKey(key=key, salt=salt)
    if not last:
        plaintext = (
            plaintext * (CHUNK_SIZE // len(plaintext)) + plaintext[: CHUNK_SIZE % len(plaintext)]
        )
    sealed = StreamEncryptor(fk).encrypt_chunk(index, plaintext, last=last)
    assert sealed == ref_seal(fk, index, plaintext, last=last)
    assert decrypt_chunk(fk, index, sealed) == (plaintext, last)


# --- round trips and framing ---


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE]
)
def test_round_trip(size: int) -> None:
    fk = FileKey.generate()
    data = data_of(size)
    sealed = encrypt_file(fk, data)
    assert len(sealed) == chunk_count(size)
    assert sum(map(len, sealed)) == encrypted_size(size)
    assert all(len(c) == ENCRYPTED_CHUNK_SIZE for c in sealed[:-1])
    assert decrypt_file(fk, sealed) == data


@settings(max_examples=25, deadline=None)
@given(
    size=st.one_of(
        st.integers(0, 3 * 1024 * 1024),
        st.integers(1, 40).flatmap(lambda n: st.integers(n * CHUNK_SIZE - 2, n * CHUNK_SIZE + 2)),
    ),
    seed=st.integers(0, 2**32),
)
def test_round_trip_random_sizes(size: int, seed: int) -> None:
    fk = FileKey.generate()
    data = data_of(size, seed)
    assert decrypt_file(fk, encrypt_file(fk, data)) == data


@pytest.mark.parametrize(
    ("size", "count"),
    [
        (0, 1),
        (1, 1),
        (CHUNK_SIZE - 1, 1),
        (CHUNK_SIZE, 1),
        (CHUNK_SIZE + 1, 2),
        (10 * CHUNK_SIZE, 10),
    ],
)
def test_chunk_count(size: int, count: int) -> None:
    assert chunk_count(size) == count
    assert encrypted_size(size) == size + count * TAG_SIZE


def test_chunk_count_rejects_negative() -> None:
    with pytest.raises(LocalProtocolError, match="negative"):
        chunk_count(-1)


def test_full_size_final_chunk_is_recognised() -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(2 * CHUNK_SIZE))
    dec = StreamDecryptor(fk)
    dec.decrypt_next(sealed[0])
    assert not dec.done
    dec.decrypt_next(sealed[1])
    assert dec.done
    assert decrypt_chunk(fk, 0, sealed[0])[1] is False
    assert decrypt_chunk(fk, 1, sealed[1])[1] is True


def test_encryption_is_deterministic_per_position() -> None:
    fk = FileKey.generate()
    enc = StreamEncryptor(fk)
    block = data_of(CHUNK_SIZE)
    assert enc.encrypt_chunk(3, block, last=False) == enc.encrypt_chunk(3, block, last=False)
    assert enc.encrypt_chunk(3, block, last=False) != enc.encrypt_chunk(4, block, last=False)
    assert enc.encrypt_chunk(3, block, last=False) != enc.encrypt_chunk(3, block, last=True)


# --- resume ---


@pytest.mark.parametrize("start", [0, 1, 2, 4])
def test_resume_equals_tail_of_full_encryption(start: int) -> None:
    fk = FileKey.generate()
    data = data_of(4 * CHUNK_SIZE + 123)
    full = encrypt_file(fk, data)
    tail = encrypt_file(fk, data, start=start)
    assert tail == full[start:]
    assert decrypt_file(fk, tail, start=start) == data[start * CHUNK_SIZE :]


def test_resume_decryptor_rejects_chunks_before_start() -> None:
    fk = FileKey.generate()
    full = encrypt_file(fk, data_of(3 * CHUNK_SIZE))
    dec = StreamDecryptor(fk, start=1)
    assert dec.next_index == 1
    with pytest.raises(StreamError, match="chunk 1 failed authentication"):
        dec.decrypt_next(full[0])


def test_decryptor_start_out_of_range() -> None:
    fk = FileKey.generate()
    with pytest.raises(LocalProtocolError):
        StreamDecryptor(fk, start=-1)
    with pytest.raises(LocalProtocolError):
        StreamDecryptor(fk, start=MAX_CHUNKS)


def test_counter_limit() -> None:
    fk = FileKey.generate()
    enc = StreamEncryptor(fk)
    dec = StreamDecryptor(fk, start=MAX_CHUNKS - 1)
    block = data_of(CHUNK_SIZE)
    assert dec.decrypt_next(enc.encrypt_chunk(MAX_CHUNKS - 1, block, last=False)) == block
    with pytest.raises(StreamError, match=r"2\*\*64 chunks"):
        dec.decrypt_next(b"\x00" * ENCRYPTED_CHUNK_SIZE)


# --- attacks ---


@pytest.mark.parametrize("size", [0, 5, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 7])
def test_truncation(size: int) -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(size))
    dec = StreamDecryptor(fk)
    for c in sealed[:-1]:
        dec.decrypt_next(c)
    assert not dec.done
    with pytest.raises(StreamError, match="truncated"):
        dec.finish()


def test_truncated_inside_last_chunk() -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(CHUNK_SIZE + 100))
    dec = StreamDecryptor(fk)
    dec.decrypt_next(sealed[0])
    with pytest.raises(StreamError, match="failed authentication"):
        dec.decrypt_next(sealed[1][:-1])


def test_dropping_a_full_final_chunk_is_truncation() -> None:
    """The previous full chunk was sealed as non-final, so it cannot pass as the end."""
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(2 * CHUNK_SIZE))
    dec = StreamDecryptor(fk)
    dec.decrypt_next(sealed[0])
    with pytest.raises(StreamError, match="truncated: no final chunk after chunk 0"):
        dec.finish()


@pytest.mark.parametrize("size", [0, 5, 2 * CHUNK_SIZE])
def test_extension(size: int) -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(size))
    n = len(sealed)
    # Even a chunk the sender's own key sealed for the next position is refused.
    extra = StreamEncryptor(fk).encrypt_chunk(n, b"more", last=True)
    dec = StreamDecryptor(fk)
    for c in sealed:
        dec.decrypt_next(c)
    with pytest.raises(StreamError, match="after the final chunk"):
        dec.decrypt_next(extra)
    with pytest.raises(StreamError, match="already failed"):
        dec.decrypt_next(extra)


def test_reordering() -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(3 * CHUNK_SIZE))
    dec = StreamDecryptor(fk)
    with pytest.raises(StreamError, match="chunk 0 failed authentication"):
        dec.decrypt_next(sealed[1])


def test_skipped_chunk() -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(3 * CHUNK_SIZE))
    dec = StreamDecryptor(fk)
    dec.decrypt_next(sealed[0])
    with pytest.raises(StreamError, match="chunk 1 failed authentication"):
        dec.decrypt_next(sealed[2])


def test_replayed_chunk() -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(3 * CHUNK_SIZE))
    dec = StreamDecryptor(fk)
    dec.decrypt_next(sealed[0])
    with pytest.raises(StreamError, match="chunk 1 failed authentication"):
        dec.decrypt_next(sealed[0])


@pytest.mark.parametrize("which", ["key", "salt"])
def test_chunk_from_another_file(which: str) -> None:
    fk = FileKey.generate()
    other = FileKey.generate()
    other = FileKey(key=other.key, salt=fk.salt) if which == "key" else FileKey(fk.key, other.salt)
    data = data_of(CHUNK_SIZE + 10)
    mine, theirs = encrypt_file(fk, data), encrypt_file(other, data)
    dec = StreamDecryptor(fk)
    dec.decrypt_next(mine[0])
    with pytest.raises(StreamError, match="chunk 1 failed authentication") as info:
        dec.decrypt_next(theirs[1])
    message = str(info.value)
    for secret in (fk.key, fk.salt, other.key, other.salt):
        assert secret.hex() not in message


@settings(max_examples=60, deadline=None)
@given(position=st.integers(0, 5 + TAG_SIZE - 1), bit=st.integers(0, 7))
def test_tampered_small_chunk(position: int, bit: int) -> None:
    fk = FileKey(key=bytes(32), salt=bytes(32))
    sealed = bytearray(StreamEncryptor(fk).encrypt_chunk(0, b"hello", last=True))
    sealed[position] ^= 1 << bit
    dec = StreamDecryptor(fk)
    with pytest.raises(StreamError, match="failed authentication"):
        dec.decrypt_next(bytes(sealed))
    with pytest.raises(StreamError, match="truncated"):
        dec.finish()


@pytest.mark.parametrize("position", [0, CHUNK_SIZE // 2, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE - 1])
def test_tampered_full_chunk(position: int) -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(2 * CHUNK_SIZE))
    bad = bytearray(sealed[0])
    bad[position] ^= 0x80
    with pytest.raises(StreamError, match="chunk 0 failed authentication"):
        StreamDecryptor(fk).decrypt_next(bytes(bad))
    with pytest.raises(StreamError, match="failed authentication"):
        decrypt_chunk(fk, 0, bytes(bad))


def test_failure_poisons_decryptor() -> None:
    fk = FileKey.generate()
    sealed = encrypt_file(fk, data_of(2 * CHUNK_SIZE))
    dec = StreamDecryptor(fk)
    with pytest.raises(StreamError):
        dec.decrypt_next(sealed[1])
    with pytest.raises(StreamError, match="already failed"):
        dec.decrypt_next(sealed[0])
    assert dec.next_index == 0


@pytest.mark.parametrize("length", [1, CHUNK_SIZE - 1])
def test_short_non_final_chunk_rejected(length: int) -> None:
    fk = FileKey.generate()
    forged = ref_seal(fk, 0, data_of(length), last=False)
    dec = StreamDecryptor(fk)
    with pytest.raises(StreamError, match="marked non-final but holds fewer"):
        dec.decrypt_next(forged)
    with pytest.raises(StreamError, match="marked non-final"):
        decrypt_chunk(fk, 0, forged)


def test_empty_final_chunk_after_data_rejected() -> None:
    fk = FileKey.generate()
    c0 = ref_seal(fk, 0, data_of(CHUNK_SIZE), last=False)
    c1 = ref_seal(fk, 1, b"", last=True)
    dec = StreamDecryptor(fk)
    dec.decrypt_next(c0)
    with pytest.raises(StreamError, match="empty final chunk"):
        dec.decrypt_next(c1)


@pytest.mark.parametrize("length", [ENCRYPTED_CHUNK_SIZE + 1, 2 * ENCRYPTED_CHUNK_SIZE])
def test_over_long_chunk_rejected(length: int) -> None:
    fk = FileKey.generate()
    with pytest.raises(StreamError, match="longer than the maximum"):
        StreamDecryptor(fk).decrypt_next(bytes(length))


@pytest.mark.parametrize("length", [0, 1, TAG_SIZE - 1])
def test_chunk_shorter_than_tag_rejected(length: int) -> None:
    fk = FileKey.generate()
    with pytest.raises(StreamError, match="shorter than the 16-byte tag"):
        StreamDecryptor(fk).decrypt_next(bytes(length))


def test_finish_without_any_chunk() -> None:
    with pytest.raises(StreamError, match="truncated: no chunk received"):
        StreamDecryptor(FileKey.generate()).finish()


# --- encryptor misuse is a local error ---


def test_encryptor_refuses_bad_framing() -> None:
    enc = StreamEncryptor(FileKey.generate())
    with pytest.raises(LocalProtocolError, match="more than 262144"):
        enc.encrypt_chunk(0, bytes(CHUNK_SIZE + 1), last=True)
    with pytest.raises(LocalProtocolError, match="must hold exactly 262144"):
        enc.encrypt_chunk(0, bytes(CHUNK_SIZE - 1), last=False)
    with pytest.raises(LocalProtocolError, match="must hold exactly 262144"):
        enc.encrypt_chunk(0, b"", last=False)
    with pytest.raises(LocalProtocolError, match="empty final chunk"):
        enc.encrypt_chunk(1, b"", last=True)


@pytest.mark.parametrize("index", [-1, MAX_CHUNKS, 2**88])
def test_index_out_of_range(index: int) -> None:
    fk = FileKey.generate()
    with pytest.raises(LocalProtocolError, match="outside"):
        StreamEncryptor(fk).encrypt_chunk(index, b"x", last=True)
    with pytest.raises(LocalProtocolError, match="outside"):
        decrypt_chunk(fk, index, bytes(TAG_SIZE + 1))


# --- keys ---


def test_file_key_generate_is_random() -> None:
    a, b = FileKey.generate(), FileKey.generate()
    assert len(a.key) == len(a.salt) == 32
    assert a.key != b.key
    assert a.salt != b.salt
    assert a.key != a.salt


@pytest.mark.parametrize(("key_len", "salt_len", "field"), [(31, 32, "key"), (32, 33, "salt")])
def test_file_key_length_checked(key_len: int, salt_len: int, field: str) -> None:
    with pytest.raises(StreamError, match=f"{field} must be 32 bytes"):
        FileKey(key=bytes(key_len), salt=bytes(salt_len))


def test_secrets_not_in_repr() -> None:
    fk = FileKey(key=b"\xab" * 32, salt=b"\xcd" * 32)
    texts = [repr(fk), str(fk), repr(StreamEncryptor(fk)), repr(StreamDecryptor(fk))]
    for text in texts:
        assert "ab" * 4 not in text
        assert "cd" * 4 not in text
        assert "\\xab" not in text
        assert "\\xcd" not in text
