"""Short authentication string: five words both people read to each other.

The room secret R authenticates the handshake only as well as the link was
kept secret.  If the relay operator (or anyone who saw a link) ran a
man-in-the-middle, the two sides would end up with different Noise handshake
hashes; five words derived from that hash, compared by voice, expose it.  An
attacker who wants both sides to show the same words must hit a 64.6-bit
value per attempt, with one attempt per handshake the people check.

Normative text: docs/protocol.d/45-sas.md.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from m42d.errors import CryptoError, LocalProtocolError

__all__ = [
    "HANDSHAKE_HASH_SIZE",
    "SAS_INFO",
    "SAS_WORDS",
    "WORDLIST_SIZE",
    "WordlistError",
    "format_sas",
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

_BYTES_PER_WORD: Final = 8
_WORDLIST_RESOURCE: Final = "data/eff_large_wordlist.txt"


class WordlistError(CryptoError):
    """The shipped word list is damaged: the SAS cannot be computed the way the peer does."""


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


def format_sas(words: Iterable[str]) -> str:
    """The SAS as one line to show or read aloud: words separated by single spaces."""
    return " ".join(words)
