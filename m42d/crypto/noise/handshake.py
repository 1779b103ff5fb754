"""HandshakeState (spec section 5.3): one side of one handshake, as a state machine.

It is the only part of the engine with rules about order and failure (turns,
a spent or failed handshake, what is forgotten after Split); the rules are
listed at the top of :mod:`m42d.crypto.noise`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final, final

import attrs

from m42d.crypto.noise.errors import HandshakeAuthError
from m42d.crypto.noise.patterns import NoiseProtocol, Token
from m42d.crypto.noise.primitives import _TAG_LEN, MAX_MESSAGE, KeyPair
from m42d.crypto.noise.symmetric import SymmetricState, TransportPair
from m42d.errors import (
    DecryptError,
    HandshakeError,
    LocalProtocolError,
)

PSK_LEN: Final = 32


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
