"""Words both people read to each other: the safety words (and the older per-handshake SAS).

The room secret R authenticates the handshake only as well as the link was
kept secret.  Someone who saw a link (the relay operator, say) could sit in
the middle at the first contact with a static key of its own towards each
side; the two people expose that by comparing words derived from the static
keys each of them sees.

**Safety words** (protocol 2) depend only on the room and the two static
keys, so they stay the same for as long as neither key changes, and any
change of them comes with the key-change stop.  Each seat's half is derived
from that seat's key alone (as Signal's safety numbers are): an attacker
must then find a key whose half matches the real one, a second preimage of
51.7 bits, each try costing :data:`SAFETY_ITERATIONS` rounds of PBKDF2,
instead of a birthday search over the pair.

:func:`sas_words` is the mapping from 32 bytes to words that both use.
Normative text: docs/protocol.md, "Safety words".
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Iterable
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from m42d.errors import LocalProtocolError, M42Error

__all__ = [
    "HANDSHAKE_HASH_SIZE",
    "SAFETY_INFO",
    "SAFETY_ITERATIONS",
    "SAFETY_WORDS_PER_SEAT",
    "SAS_INFO",
    "SAS_WORDS",
    "WORDLIST_SIZE",
    "WordlistError",
    "format_sas",
    "safety_words",
    "sas_words",
    "wordlist",
]

SAS_WORDS: Final = 5
"""Words in the SAS: 5 x log2(7776) ~ 64.6 bits, short enough to read aloud."""

WORDLIST_SIZE: Final = 7776
SAS_INFO: Final = b"m42 sas v1"
"""HKDF info label; a change of derivation gets a new label."""

HANDSHAKE_HASH_SIZE: Final = 32
"""Noise handshake hash length for SHA-256."""

SAFETY_INFO: Final = b"m42 safety words v1"
"""PBKDF2 salt prefix of the safety words; a change of derivation gets a new label."""
SAFETY_ITERATIONS: Final = 65536
"""PBKDF2-HMAC-SHA256 rounds per seat's half: ~30 ms once per key pair here,
and every attacker's guess costs the same."""
SAFETY_WORDS_PER_SEAT: Final = 4
KEY_SIZE: Final = 32

_BYTES_PER_WORD: Final = 8
_WORDLIST_RESOURCE: Final = "data/eff_large_wordlist.txt"


class WordlistError(M42Error):
    """The shipped word list is damaged: the SAS cannot be computed the way the peer does.

    Neither side is at fault (nothing arrived): the installation is broken.
    """


@functools.cache
def wordlist() -> tuple[str, ...]:
    """The EFF large word list, read and checked once per process.

    A damaged list would not fail loudly on its own: it would just show
    different words than the peer's, which a user would read as an attack.
    So it is checked here, where the cause can still be named.

    Raises:
        WordlistError: the file is missing or does not hold exactly 7,776
            distinct, non-empty words without spaces.
    """
    resource = importlib.resources.files("m42d.crypto").joinpath(_WORDLIST_RESOURCE)
    try:
        text = resource.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WordlistError(f"cannot read the SAS word list {_WORDLIST_RESOURCE}") from exc
    return _parse_wordlist(text)


def _parse_wordlist(text: str) -> tuple[str, ...]:
    words = tuple(text.splitlines())
    if len(words) != WORDLIST_SIZE:
        raise WordlistError(
            f"SAS word list has {len(words)} lines, expected {WORDLIST_SIZE}: reinstall m42d"
        )
    if len(set(words)) != WORDLIST_SIZE:
        raise WordlistError("SAS word list has duplicate words: reinstall m42d")
    if any(not w or w != w.strip() or " " in w for w in words):
        raise WordlistError("SAS word list has empty or padded lines: reinstall m42d")
    return words


def sas_words(handshake_hash: bytes) -> tuple[str, ...]:
    """The five SAS words for a completed handshake, in reading order.

    Each word takes 8 bytes of HKDF output reduced mod 7,776; the modulo bias
    (7,776 / 2**64 ~ 4e-16) is far below anything a person could notice.

    Raises:
        LocalProtocolError: ``handshake_hash`` is not 32 bytes (it must be
            the Noise handshake hash ``h`` once the handshake is complete).
    """
    if len(handshake_hash) != HANDSHAKE_HASH_SIZE:
        raise LocalProtocolError(
            f"handshake hash must be {HANDSHAKE_HASH_SIZE} bytes, got {len(handshake_hash)}"
        )
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=SAS_WORDS * _BYTES_PER_WORD,
        salt=b"",
        info=SAS_INFO,
    ).derive(handshake_hash)
    words = wordlist()
    return tuple(
        words[int.from_bytes(okm[i : i + _BYTES_PER_WORD], "big") % WORDLIST_SIZE]
        for i in range(0, len(okm), _BYTES_PER_WORD)
    )


def safety_words(room_id: bytes, static_a: bytes, static_b: bytes) -> tuple[str, ...]:
    """The eight safety words of a room: seat A's four, then seat B's four.

    Both sides compute the same list from the two static public keys they
    see.  Each half is
    ``PBKDF2-HMAC-SHA256(P = key, S = SAFETY_INFO || room_id || seat, c, 32)``
    mapped to words as in :func:`sas_words` (the first four 8-byte groups).

    Raises:
        LocalProtocolError: a key is not 32 bytes or the room id not 16.
    """
    if len(room_id) != 16:
        raise LocalProtocolError(f"room id must be 16 bytes, got {len(room_id)}")
    words = wordlist()
    out: list[str] = []
    for seat, key in ((b"A", static_a), (b"B", static_b)):
        if len(key) != KEY_SIZE:
            raise LocalProtocolError(f"static key must be {KEY_SIZE} bytes, got {len(key)}")
        half = hashlib.pbkdf2_hmac("sha256", key, SAFETY_INFO + room_id + seat, SAFETY_ITERATIONS)
        out.extend(
            words[int.from_bytes(half[i : i + _BYTES_PER_WORD], "big") % WORDLIST_SIZE]
            for i in range(0, SAFETY_WORDS_PER_SEAT * _BYTES_PER_WORD, _BYTES_PER_WORD)
        )
    return tuple(out)


def format_sas(words: Iterable[str]) -> str:
    """The SAS as one line to show or read aloud: words separated by single spaces."""
    return " ".join(words)
