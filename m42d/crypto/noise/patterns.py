"""Handshake patterns as data, and the parse of a Noise protocol name (spec sections 7 to 10).

The table is the specification's own notation, parsed once, and ``pskN``
modifiers edit the parsed token lists; keeping the patterns out of the
state machine is what lets one HandshakeState run every pattern of the
spec, and the third-party vectors check it against all of them.
"""

from __future__ import annotations

import enum
import re
from typing import Final, TypeVar, final

import attrs

from m42d.crypto.noise.errors import UnsupportedProtocolError
from m42d.crypto.noise.primitives import (
    _CIPHER_FUNCTIONS,
    _DH_FUNCTIONS,
    _HASH_FUNCTIONS,
    X25519DH,
    AESGCMCipher,
    SHA256Hash,
)

PROTOCOL_NAME: Final = "Noise_XXpsk3_25519_AESGCM_SHA256"
"""The protocol m42d clients speak (see the session section of docs/protocol.md)."""


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
