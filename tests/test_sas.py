"""SAS words: determinism, spread, the pinned known answer, and the shipped word list.

The known answer is the one printed in docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import m42d.crypto.sas as sas_module
from m42d.crypto.sas import (
    SAS_WORDS,
    WORDLIST_SIZE,
    WordlistError,
    format_sas,
    safety_words,
    sas_words,
    wordlist,
)
from m42d.errors import CryptoError, LocalProtocolError, M42Error

# SHA-256 of the shipped list: the SAS depends on the exact order of the words.
WORDLIST_SHA256 = "6d557f0693958fb5e650b68b5bee585eb82cf4da32965505c789e924743bc522"


def ref_sas(handshake_hash: bytes) -> tuple[str, ...]:
    """The derivation written out from RFC 5869 and the spec, independently of the module."""
    prk = hmac.new(b"", handshake_hash, hashlib.sha256).digest()
    t1 = hmac.new(prk, b"m42 sas v1\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + b"m42 sas v1\x02", hashlib.sha256).digest()
    okm = (t1 + t2)[:40]
    words = wordlist()
    return tuple(words[int.from_bytes(okm[8 * i : 8 * i + 8], "big") % 7776] for i in range(5))


def test_known_answer_zero_hash() -> None:
    words = sas_words(bytes(32))
    assert words == ("unengaged", "startling", "parched", "unawake", "boundless")
    assert format_sas(words) == "unengaged startling parched unawake boundless"


def test_known_answer_zero_hash_intermediates() -> None:
    okm_hex = "87d8b388464bdc9751d2766496a117a7fd6dd6cefd036a681c28db6b3d9f8124c3e5de1be1724869"
    okm = bytes.fromhex(okm_hex)
    prk = hmac.new(b"", bytes(32), hashlib.sha256).digest()
    t1 = hmac.new(prk, b"m42 sas v1\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + b"m42 sas v1\x02", hashlib.sha256).digest()
    assert (t1 + t2)[:40] == okm
    indexes = [int.from_bytes(okm[8 * i : 8 * i + 8], "big") % 7776 for i in range(5)]
    assert indexes == [7095, 6311, 4488, 6980, 649]
    assert tuple(wordlist()[i] for i in indexes) == sas_words(bytes(32))


def test_known_answer_counting_hash() -> None:
    assert format_sas(sas_words(bytes(range(32)))) == "flashy coyness pampered graceless dial"


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_matches_reference_and_is_deterministic(handshake_hash: bytes) -> None:
    words = sas_words(handshake_hash)
    assert len(words) == SAS_WORDS
    assert all(w in wordlist() for w in words)
    assert words == sas_words(handshake_hash)
    assert words == ref_sas(handshake_hash)


def test_different_hashes_give_different_words() -> None:
    rng = random.Random(42)
    hashes = {rng.randbytes(32) for _ in range(1000)}
    results = [sas_words(h) for h in hashes]
    assert len(set(results)) == len(hashes)
    for position in range(SAS_WORDS):
        # 1,000 draws from 7,776 words: expect ~940 distinct, so 800 is a safe floor.
        assert len({r[position] for r in results}) > 800


def test_one_bit_changes_the_words() -> None:
    base = bytes(32)
    flipped = bytes([1]) + bytes(31)
    assert sas_words(base) != sas_words(flipped)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_handshake_hash_length_checked(size: int) -> None:
    with pytest.raises(LocalProtocolError, match="must be 32 bytes"):
        sas_words(bytes(size))


def test_format_sas() -> None:
    assert format_sas(["a", "b", "c"]) == "a b c"
    assert format_sas(()) == ""


# --- the shipped word list ---


def test_wordlist_integrity() -> None:
    words = wordlist()
    assert len(words) == WORDLIST_SIZE == 7776
    assert len(set(words)) == 7776
    assert list(words) == sorted(words)
    assert words[0] == "abacus"
    assert words[-1] == "zoom"
    assert all(w.isascii() and w == w.strip() and w for w in words)


def test_wordlist_file_pinned() -> None:
    data = (
        importlib.resources.files("m42d.crypto")
        .joinpath("data/eff_large_wordlist.txt")
        .read_bytes()
    )
    assert hashlib.sha256(data).hexdigest() == WORDLIST_SHA256


def test_wordlist_attribution_shipped() -> None:
    readme = importlib.resources.files("m42d.crypto").joinpath("data/README.md").read_text("utf-8")
    assert "EFF large word list, Electronic Frontier Foundation, CC BY 3.0" in readme


def test_wordlist_loaded_once() -> None:
    assert wordlist() is wordlist()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("abacus\n" * 10, "has 10 lines, expected 7776"),
        ("\n".join(["abacus"] * 7776), "duplicate"),
        ("\n".join([f"w{i}" for i in range(7775)] + [" pad"]), "empty or padded"),
        ("\n".join([f"w{i}" for i in range(7775)] + ["two words"]), "empty or padded"),
    ],
)
def test_damaged_wordlist_rejected(text: str, match: str) -> None:
    with pytest.raises(WordlistError, match=match) as info:
        sas_module._parse_wordlist(text)
    # A broken installation, not a forged message: no wire code, not a CryptoError.
    assert isinstance(info.value, M42Error)
    assert not isinstance(info.value, CryptoError)


def test_unreadable_wordlist_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sas_module, "_WORDLIST_RESOURCE", "data/no-such-file.txt")
    sas_module.wordlist.cache_clear()
    try:
        with pytest.raises(WordlistError, match="cannot read"):
            sas_module.wordlist()
    finally:
        monkeypatch.undo()
        sas_module.wordlist.cache_clear()
    assert len(wordlist()) == 7776


# -- safety words (protocol 2) ----------------------------------------------------------

SAFETY_ROOM = bytes(range(16))
SAFETY_A = bytes(32)
SAFETY_B = bytes(range(32))


def test_safety_words_known_answer() -> None:
    """The values published in docs/protocol.md, "Safety words"."""
    assert " ".join(safety_words(SAFETY_ROOM, SAFETY_A, SAFETY_B)) == (
        "crane siren dodge jailhouse radial cable customary disbelief"
    )


def test_safety_words_halves_each_depend_on_one_key_only() -> None:
    words = safety_words(SAFETY_ROOM, SAFETY_A, SAFETY_B)
    other_b = safety_words(SAFETY_ROOM, SAFETY_A, bytes(range(1, 33)))
    other_a = safety_words(SAFETY_ROOM, bytes(range(1, 33)), SAFETY_B)
    assert other_b[:4] == words[:4]
    assert other_b[4:] != words[4:]
    assert other_a[4:] == words[4:]
    assert other_a[:4] != words[:4]
    # Seat and room are bound in: swapping the keys or the room changes the words.
    assert safety_words(SAFETY_ROOM, SAFETY_B, SAFETY_A) != words
    assert safety_words(bytes(16), SAFETY_A, SAFETY_B) != words


@pytest.mark.parametrize(
    ("room", "a", "b"),
    [
        (bytes(15), SAFETY_A, SAFETY_B),
        (SAFETY_ROOM, bytes(31), SAFETY_B),
        (SAFETY_ROOM, SAFETY_A, bytes(33)),
    ],
)
def test_safety_words_lengths_checked(room: bytes, a: bytes, b: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        safety_words(room, a, b)
