"""The handshakes of one seat and the keys they make (docs/protocol.md, "Handshake").

Rules and invariants
--------------------
* Seat A is the Noise initiator, seat B the responder, always.  The pattern
  is Noise_XXpsk3_25519_AESGCM_SHA256 with ``psk = HKDF(R, salt=room_id,
  info="m42 psk v1")`` and ``prologue = "m42d/2" || room_id``.  HS1 and HS2
  carry ``mode | version``; HS3 carries A's padded HELLO.
* One handshake at a time, named by the ``hs_id`` A draws (never 0).  A
  handshake message with another id is stale and ignored, not fatal.
* Message 1 needs no secret, so it proves nothing: an established B keeps
  its session (and ignores a HS1 it cannot parse) until HS3 authenticates A.
* The psk enters only in message 3, so A trusts the new keys only once B's
  HELLO decrypts with them (key confirmation); someone in the middle
  without R fails on both sides.
* A renewal keeps the old keys for receiving until the new ones are
  confirmed, and each side checks that it received exactly the peer's
  ``old_count`` records on the old keys: nothing vanishes across a switch.
* The peer's static key is pinned on first contact; a different one is
  reported (:class:`PeerKeyChanged`) and no keys are installed.
* RESET is B's unauthenticated "my session broke" (with a reason that is
  only ever a hint).  A acts on one that names its session or its
  handshake; B repeats it with back-off, as A backs off its retries.

:class:`Handshake` keeps the keys and the bookkeeping; it makes and reads
handshake payloads and seals and opens DATA, and leaves the session's phase
and everything else to the machine, which tells it what it needs (the time,
whether the session is established) and acts on what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, final

import attrs

from m42d.crypto.noise import PROTOCOL_NAME, CipherState, HandshakeState, KeyPair, TransportPair
from m42d.crypto.sas import safety_words
from m42d.errors import DecryptError, HandshakeError, LocalProtocolError
from m42d.session.events import PeerKeyChanged
from m42d.session.keys import KeyStore, derive_psk, prologue
from m42d.session.records import (
    HS_ID,
    RESET_BODY,
    Envelope,
    Hello,
    RecordType,
    ResetReason,
    SessionError,
    decode_hello,
    decode_hs3_payload,
    decode_hs_payload,
    decode_record,
    handshake_message,
    hs_payload,
    reset_message,
)
from m42d.ticket import Seat

RETRY_MAX: Final = 30.0  # seconds: the longest back-off between failed handshakes

SUPERSEDES: Final[Mapping[int, frozenset[int]]] = MappingProxyType(
    {
        # A new HS1 starts over: the old handshake's HS1 and HS3 are moot.
        Envelope.HS1: frozenset({Envelope.HS1, Envelope.HS3}),
        # B answers only its latest HS1; A accepts only its current hs_id.
        Envelope.HS2: frozenset({Envelope.HS2}),
        Envelope.HS3: frozenset({Envelope.HS3}),
        Envelope.RESET: frozenset({Envelope.RESET}),
    }
)
"""Unsent payloads (by envelope) that a new one of the key's envelope makes pointless."""

RESET_SENTENCES: Final[Mapping[int, str]] = MappingProxyType(
    {
        ResetReason.UNSPECIFIED: "the peer could not continue the session",
        ResetReason.AUTHENTICATION: (
            "the other side could not authenticate this one: the two links' room secrets "
            "differ (was a link changed?), or someone is in the middle"
        ),
        ResetReason.VERSION: "the other side runs another version of the m42 session protocol",
    }
)


@attrs.frozen
class Established:
    """A handshake completed and its keys are installed."""

    peer_hello: Hello
    peer_key: bytes = attrs.field(repr=False)
    first_contact: bool
    fresh: bool
    """Not a renewal: everything unacknowledged goes again."""
    old_sent: int
    """B, renewing: records it sent on the old keys (its HELLO's old_count); else 0."""
    words: tuple[str, ...]


Outcome = Established | PeerKeyChanged | None
"""What a HS3 (B) or B's HELLO (A) did: keys installed, a changed key, or nothing."""


@final
@attrs.define
class Handshake:
    """One seat's handshakes, the keys they made, the pin and the back-off.

    Args:
        seat: A initiates, B responds.
        room_id, secret: the room and its secret R (for the psk and prologue).
        keys: where the static key and the pinned peer key live.
        random: source of ephemeral keys and handshake ids.
        hello: makes our padded HELLO record for a given ``old_count``.
    """

    seat: Seat
    room_id: bytes
    secret: bytes = attrs.field(repr=False)
    keys: KeyStore = attrs.field(repr=False)
    random: Callable[[int], bytes] = attrs.field(repr=False)
    hello: Callable[[int], bytes] = attrs.field(repr=False)

    _static: KeyPair = attrs.field(init=False, repr=False)
    _psk: bytes = attrs.field(init=False, repr=False)
    _words: tuple[bytes, tuple[str, ...]] | None = attrs.field(init=False, default=None)
    """(peer key, safety words): PBKDF2 runs once per key, not per handshake."""
    _changed_key: bytes | None = attrs.field(init=False, default=None, repr=False)

    # The handshake in progress, and what it was started for.
    _hs: HandshakeState | None = attrs.field(init=False, default=None, repr=False)
    _started: float = attrs.field(init=False, default=0.0)
    _hs_id: int = attrs.field(init=False, default=0)
    _renew: bool = attrs.field(init=False, default=False)
    _old_sent: int = attrs.field(init=False, default=0)  # A: records sent on the old keys
    _pending: TransportPair | None = attrs.field(init=False, default=None, repr=False)

    # The keys in use.
    _session_id: int = attrs.field(init=False, default=0)
    _send: CipherState | None = attrs.field(init=False, default=None, repr=False)
    _recv: CipherState | None = attrs.field(init=False, default=None, repr=False)
    _keyed_at: float = attrs.field(init=False, default=0.0)
    _sealed: int = attrs.field(init=False, default=0)  # records sealed on these keys

    # Failures: A's retries, B's RESETs.
    _failures: int = attrs.field(init=False, default=0)
    _retry_at: float = attrs.field(init=False, default=0.0)
    _reset_id: int = attrs.field(init=False, default=0)  # B: what the RESET names
    _reset_at: float = attrs.field(init=False, default=0.0)  # B: the next RESET
    _reset_why: int = attrs.field(init=False, default=0)  # B: the ResetReason it carries

    def __attrs_post_init__(self) -> None:
        private = self.keys.load_static(self.room_id, self.seat)
        if private is None:
            self._static = KeyPair.from_private(self.random(32))
            self.keys.save_static(self.room_id, self.seat, self._static.private)
        else:
            self._static = KeyPair.from_private(private)
        self._psk = derive_psk(self.secret, self.room_id)

    # -- what the machine asks -------------------------------------------------------

    @property
    def static_public(self) -> bytes:
        return self._static.public

    @property
    def keyed(self) -> bool:
        """Session keys are installed (records can be sealed and opened)."""
        return self._send is not None

    @property
    def in_progress(self) -> bool:
        return self._hs is not None

    @property
    def confirming(self) -> bool:
        """A, after HS3: new keys made, waiting for B's HELLO to prove them."""
        return self._pending is not None

    def words(self, peer_key: bytes) -> tuple[str, ...]:
        """The safety words of the room with this peer key."""
        if self._words is None or self._words[0] != peer_key:
            ours = self._static.public
            a, b = (ours, peer_key) if self.seat is Seat.A else (peer_key, ours)
            self._words = (peer_key, safety_words(self.room_id, a, b))
        return self._words[1]

    def pinned_words(self) -> tuple[str, ...]:
        pinned = self.keys.load_peer(self.room_id, self.seat)
        return () if pinned is None else self.words(pinned)

    def timed_out(self, now: float, timeout: float) -> bool:
        return self._hs is not None and now - self._started > timeout

    def retry_due(self, now: float) -> bool:
        """A: the back-off after a failure is over."""
        return now >= self._retry_at

    @property
    def owes_reset(self) -> bool:
        """B: the peer should hear that a session or handshake of ours broke."""
        return bool(self._reset_id)

    def reset_due(self, now: float) -> bool:
        """B: a RESET is owed and its back-off is over."""
        return self.owes_reset and now >= self._reset_at

    def renewal_due(self, now: float, records: int, seconds: float) -> bool:
        return self._sealed >= records or now - self._keyed_at >= seconds

    # -- what the machine tells it --------------------------------------------------

    def drop(self) -> None:
        """Forget the keys and any handshake in progress."""
        self._hs = None
        self._pending = None
        self._send = self._recv = None

    def abandon(self) -> None:
        """B, established: drop an unfinished (perhaps forged) handshake; the session stands."""
        self._hs = None

    def forget_reset(self) -> None:
        """A new presence of the peer: no RESET is owed for what came before."""
        self._reset_id = 0

    def failed(self, why: ResetReason, *, blocked: bool) -> None:
        """The session or handshake broke: count it, and (B) note what RESET names.

        Call before dropping the keys: whether there were any decides the name.
        """
        self._reset_why = int(why)
        if not blocked:
            if self.seat is Seat.B:
                self._reset_id = self._session_id if self._send is not None else self._hs_id
            self._failures += 1

    def retry_at_once(self, now: float) -> bool:
        """A, after a failure: True the first time; later ones back off (2 s, 4 s, ... 30 s)."""
        if self._failures == 1:
            return True
        self._retry_at = now + min(RETRY_MAX, 2.0 ** (self._failures - 1))
        return False

    def restart_period(self, now: float) -> None:
        """B asked A to renew: count the next period from now."""
        self._keyed_at, self._sealed = now, 0

    def trust(self) -> int:
        """Pin the changed key the user accepted; returns the id of the handshake it stopped."""
        if self._changed_key is None:
            raise LocalProtocolError(
                "no changed key waits to be trusted (if the other person left, "
                "it is asked again when they are back with it)"
            )
        self.keys.save_peer(self.room_id, self.seat, self._changed_key)
        self._changed_key = None
        return self._hs_id

    def forget_changed_key(self) -> None:
        """The peer that offered it left: it is not this one's to trust any more."""
        self._changed_key = None

    def owe_reset(self, named: int) -> None:
        """B: the next RESET names ``named`` (the handshake a trust unblocked)."""
        self._reset_id = named

    # -- payloads ---------------------------------------------------------------------

    def start(self, now: float, *, renew: bool) -> bytes:
        """A: HS1 of a fresh handshake, or of a renewal of the live session."""
        if renew:
            assert self._send is not None
            # The count of records already sent on the old keys goes into HS3
            # so B can check none went missing.
            self._old_sent = self._send.nonce
        # The renew flag rides in message 1's payload, which Noise hashes into
        # the transcript: a relay that flips it breaks the handshake.
        hs = self._new(initiator=True)
        self._hs, self._started, self._renew = hs, now, renew
        self._hs_id = HS_ID.unpack(self.random(4))[0] or 1  # never 0, which means "none"
        self._pending = None
        return handshake_message(Envelope.HS1, self._hs_id, hs.write_message(hs_payload(renew)))

    def respond(self, body: bytes, now: float, *, established: bool) -> bytes | None:
        """B: answer a HS1 with HS2, or None to ignore it (it cannot end a live session)."""
        if len(body) < HS_ID.size:
            raise SessionError("handshake message too short")
        (hs_id,) = HS_ID.unpack_from(body)
        hs = self._new(initiator=False)
        try:
            flag = hs.read_message(body[HS_ID.size :])
        except HandshakeError:
            if established:
                return None  # garbage cannot end a session that still works
            raise
        try:
            asked_renew = decode_hs_payload(flag, "1")
        except SessionError:
            if established:
                return None
            self._hs_id = hs_id  # the RESET that follows names it, so A hears why
            raise
        # HS1 proves nothing (message 1 needs no secret), so an established
        # session is kept, and used, until HS3 authenticates A.  B's answer
        # (in the transcript, so authenticated by the end) tells A whether
        # its unacked items must go again.
        renew = asked_renew and established
        self._hs, self._started, self._renew, self._hs_id = hs, now, renew, hs_id
        return handshake_message(Envelope.HS2, hs_id, hs.write_message(hs_payload(renew)))

    def receive_hs2(self, body: bytes) -> bytes | None:
        """A: answer HS2 with HS3 (our HELLO) and hold the new keys as pending."""
        hs, message = self._current(body)
        if hs is None or hs.complete or hs.is_my_turn():
            return None  # stale, or a duplicate of the HS2 we already answered
        answered_renew = decode_hs_payload(hs.read_message(message), "2")
        if self._renew and not answered_renew:
            self._renew = False  # B has no session to renew: this becomes a fresh one
        old = self._old_sent if self._renew else 0
        reply = handshake_message(Envelope.HS3, self._hs_id, hs.write_message(self.hello(old)))
        # Not yet trusted: the peer has not proven it knows the psk.  Old
        # keys (if renewing) stay in use for receiving until HELLO arrives.
        self._pending = hs.split()
        return reply

    def receive_hs3(self, body: bytes, now: float) -> Outcome:
        """B: A's HS3 authenticates A; install the keys (or report a changed key)."""
        hs, message = self._current(body)
        if hs is None or hs.complete or hs.is_my_turn():
            return None
        hello = decode_hs3_payload(hs.read_message(message))
        pair = hs.split()
        changed = self._check_pin(hs)
        if changed is not None:
            return changed
        old_sent = 0
        if self._renew:
            assert self._recv is not None
            assert self._send is not None
            if self._recv.nonce != hello.old_count:
                raise SessionError("records were lost while renewing the keys")
            old_sent = self._send.nonce
        return self._install(hs, pair, hello, old_sent, now)

    def confirm(self, body: bytes, now: float) -> Outcome:
        """A, holding pending keys: B's first record on them must be its HELLO."""
        pair = self._pending
        hs = self._hs
        assert pair is not None
        assert hs is not None
        try:
            plaintext = pair.recv.decrypt_with_ad(b"", body)
        except DecryptError:
            if self._renew:
                raise SessionError(
                    "control record failed to decrypt while renewing the keys"
                ) from None
            return None  # a record of the session before this fresh one: ignore
        pair.recv.rekey()
        rtype, body = decode_record(plaintext)
        if rtype != RecordType.HELLO:
            raise SessionError("first record after the handshake is not HELLO")
        hello = decode_hello(body)
        if self._renew:
            assert self._recv is not None
            if self._recv.nonce != hello.old_count:
                raise SessionError("records were lost while renewing the keys")
        changed = self._check_pin(hs)
        if changed is not None:
            return changed
        return self._install(hs, pair, hello, 0, now)

    def open_old(self, body: bytes) -> bytes | None:
        """A, renewing: a record B sealed on the old keys before it saw HS3, or None."""
        if self._recv is None or not self._renew:
            return None
        try:
            plaintext = self._recv.decrypt_with_ad(b"", body)
        except DecryptError:
            return None
        self._recv.rekey()
        return plaintext

    def open(self, body: bytes) -> bytes:
        """One DATA payload on the keys in use (Rekey after each)."""
        assert self._recv is not None
        try:
            plaintext = self._recv.decrypt_with_ad(b"", body)
        except DecryptError:
            raise SessionError(
                "control record failed to decrypt: tampered, dropped, reordered or replayed"
            ) from None
        self._recv.rekey()
        return plaintext

    def seal(self, record: bytes) -> bytes:
        """The DATA payload of one padded record on the keys in use (Rekey after each)."""
        assert self._send is not None
        ciphertext = self._send.encrypt_with_ad(b"", record)
        self._send.rekey()
        self._sealed += 1
        return bytes([Envelope.DATA]) + ciphertext

    def reset_sentence(self, body: bytes) -> str | None:
        """A: what a RESET says, if it names the session we hold or the handshake we run.

        One about an older attempt crossed our retry in flight and is ignored.
        """
        why = self.reset_reason(body)
        return None if why is None else RESET_SENTENCES[why]

    def reset_reason(self, body: bytes) -> ResetReason | None:
        """A: why a RESET says B broke off (an unknown number is UNSPECIFIED), if it
        names the session we hold or the handshake we run; else None."""
        if len(body) != RESET_BODY.size:
            raise SessionError("RESET has a bad length")
        named, why = RESET_BODY.unpack(body)
        about_session = self._send is not None and named == self._session_id
        about_handshake = self._hs is not None and named == self._hs_id
        if not (about_session or about_handshake):
            return None
        try:
            return ResetReason(why)
        except ValueError:
            return ResetReason.UNSPECIFIED

    def reset(self, now: float) -> bytes:
        """B: the RESET owed, and when the next one is due (2 s, 4 s, ... 30 s)."""
        self._reset_at = now + min(RETRY_MAX, 2.0 ** max(0, self._failures - 1))
        return reset_message(self._reset_id, self._reset_why)

    # -- inside ------------------------------------------------------------------------

    def _new(self, *, initiator: bool) -> HandshakeState:
        return HandshakeState(
            PROTOCOL_NAME,
            initiator=initiator,
            prologue=prologue(self.room_id),
            s=self._static,
            e=KeyPair.from_private(self.random(32)),
            psks=[self._psk],
        )

    def _current(self, body: bytes) -> tuple[HandshakeState | None, bytes]:
        """The live handshake and the Noise message; no handshake for a stale message.

        A handshake message whose id is not the one in progress belongs to a
        handshake this side already abandoned (a retry crossed it in flight,
        or the relay replays it): it is ignored, not fatal.
        """
        if len(body) < HS_ID.size:
            raise SessionError("handshake message too short")
        if self._hs is None or HS_ID.unpack_from(body)[0] != self._hs_id:
            return None, b""
        return self._hs, body[HS_ID.size :]

    def _check_pin(self, hs: HandshakeState) -> PeerKeyChanged | None:
        """Nothing on first contact or the pinned key; the change, with its words, else."""
        rs = hs.remote_static
        assert rs is not None
        pinned = self.keys.load_peer(self.room_id, self.seat)
        if pinned is None or pinned == rs:
            return None
        self._changed_key = rs
        return PeerKeyChanged(pinned, rs, self.words(rs))

    def _install(
        self, hs: HandshakeState, pair: TransportPair, hello: Hello, old_sent: int, now: float
    ) -> Established:
        rs = hs.remote_static
        assert rs is not None
        first = self.keys.load_peer(self.room_id, self.seat) is None
        if first:
            self.keys.save_peer(self.room_id, self.seat, rs)
        self._send, self._recv = pair.send, pair.recv
        fresh = not self._renew
        self._hs = None
        self._pending = None
        self._session_id = self._hs_id
        self._failures = 0
        self._reset_id = 0
        self._keyed_at = now
        self._sealed = 0
        return Established(hello, rs, first, fresh, old_sent, self.words(rs))
