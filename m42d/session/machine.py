"""The end-to-end session machine that both m42 clients run (sans-IO).

The relay only ever sees the bytes this machine produces.  :class:`Session`
takes what the glue reports (the peer came or went, a CONTROL or BULK
payload arrived, the user wants to send a text or a file, time passed) and
answers with CONTROL payloads to send and events for the user interface.
It ties the parts of the package together (see :mod:`m42d.session`); each
part states and keeps its own rules, and these are the machine's:

* Records are sealed the moment they are made while ESTABLISHED, and held
  in order otherwise; they go out after the next handshake completes (B's
  HELLO first, for key confirmation).  After a *fresh* handshake every
  unacknowledged text and unfinished offer is made again from the outbox
  and the transfers, and their held copies are dropped.
* A DATA record that fails to decrypt means the lane was tampered with,
  reordered, dropped from or replayed into: the session is torn down and
  re-handshaken, never continued.  Nothing the peer or the relay sends is
  raised to the glue: a remote fault is a :class:`SessionFailed` event.
* While anything is outstanding and nothing decrypted from the peer for
  ``probe_after`` seconds, a PING exposes a lost *last* record; no answer
  within as long again is a failure.
* An unsent handshake message or RESET that a newer one makes pointless is
  dropped (:data:`~m42d.session.handshake.SUPERSEDES`), so a relay that
  stops reading us while replaying HS1 cannot grow our output.

Why this module is a little over 500 lines: it is the package's one public
class, and most of it is documented entry points that hand off to a part in
a line or two; what stays here needs the phase and several parts at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import final

import attrs

from m42d.errors import DecryptError, HandshakeError, LocalProtocolError, RemoteProtocolError
from m42d.session.events import Event, HandshakeComplete, PeerKeyChanged, SessionFailed
from m42d.session.files import IncomingFiles, OutgoingFiles
from m42d.session.handshake import SUPERSEDES, Handshake, Outcome
from m42d.session.keys import KeyStore
from m42d.session.phases import Phase, Phases, Trigger
from m42d.session.records import (
    DEFAULT_MAX_TEXT,
    MAX_TEXT,
    Envelope,
    FileCode,
    Hello,
    RecordType,
    ResetReason,
    SessionError,
    VersionMismatch,
    decode_record,
    encode_record,
)
from m42d.session.texts import Inbox, Outbox
from m42d.ticket import Seat

_REGENERATED = frozenset({RecordType.TEXT, RecordType.FILE_OFFER})


@final
@attrs.define
class Session:
    """One seat's end of the end-to-end session.

    Args:
        seat: which seat this client holds; A initiates handshakes.
        room_id: the 16-byte room id from the ticket.
        secret: the room secret R from the link.
        keys: where static keys and the pinned peer key live.
        max_text: largest text accepted from the peer (and sent), in bytes;
            at most the protocol's :data:`MAX_TEXT`.
        handshake_timeout: seconds a handshake may take before it is retried.
        rehandshake_records: records sent under one set of keys before A
            renews them (B asks A to).
        rehandshake_seconds: age of a session after which its keys are renewed.
        probe_after: seconds of silence from the peer, while something is
            still unacknowledged, before a PING checks the session is alive.
        stall_after: seconds without progress on an incoming file before the
            receiver asks again from its first missing chunk.
        random: source of every random value (keys, ids); replaceable only
            to make known-answer transcripts reproducible.
    """

    seat: Seat
    room_id: bytes
    secret: bytes = attrs.field(repr=False)
    keys: KeyStore = attrs.field(repr=False)
    max_text: int = DEFAULT_MAX_TEXT
    handshake_timeout: float = 30.0
    rehandshake_records: int = 10_000
    rehandshake_seconds: float = 3600.0
    probe_after: float = 15.0
    stall_after: float = 30.0
    random: Callable[[int], bytes] = attrs.field(default=os.urandom, repr=False)

    _phases: Phases = attrs.field(init=False, factory=Phases)
    _now: float = attrs.field(init=False, default=0.0)
    _peer_online: bool = attrs.field(init=False, default=False)
    _last_heard: float = attrs.field(init=False, default=0.0)
    _probe_sent: float | None = attrs.field(init=False, default=None)

    _handshake: Handshake = attrs.field(init=False, repr=False)
    _outbox: Outbox = attrs.field(init=False, repr=False)
    _inbox: Inbox = attrs.field(init=False, repr=False)
    _out_files: OutgoingFiles = attrs.field(init=False, repr=False)
    _in_files: IncomingFiles = attrs.field(init=False, repr=False)

    _queue: list[bytes] = attrs.field(init=False, factory=list, repr=False)  # sealed later
    _outgoing: list[bytes] = attrs.field(init=False, factory=list, repr=False)
    _events: list[Event] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        if len(self.secret) != 32:
            raise LocalProtocolError("room secret must be 32 bytes")
        if len(self.room_id) != 16:
            raise LocalProtocolError("room id must be 16 bytes")
        if not 0 < self.max_text <= MAX_TEXT:
            # Above the protocol's cap a peer would refuse what this side sends.
            raise LocalProtocolError(f"max_text must be 1 to {MAX_TEXT} bytes")
        # The order of the random draws (static key, then instance) is part
        # of the known-answer transcript.
        self._handshake = Handshake(
            self.seat, self.room_id, self.secret, self.keys, self.random, self._hello
        )
        instance = int.from_bytes(self.random(8), "big")
        record, event = self._emit_record, self._event
        self._outbox = Outbox(record, event, self.max_text, instance)
        self._inbox = Inbox(record, event, self.max_text)
        self._out_files = OutgoingFiles(record, event, self.random)
        self._in_files = IncomingFiles(record, event)

    # -- what the glue reads --------------------------------------------------------

    @property
    def established(self) -> bool:
        """True while texts and files can flow."""
        return self._phases.phase is Phase.ESTABLISHED

    @property
    def blocked(self) -> bool:
        """True while a changed peer key waits for :meth:`trust_peer_key`."""
        return self._phases.phase is Phase.BLOCKED

    @property
    def static_public(self) -> bytes:
        return self._handshake.static_public

    @property
    def instance(self) -> int:
        """The random number naming this session's text numbering (HELLO's instance)."""
        return self._outbox.instance

    @property
    def safety_words(self) -> tuple[str, ...]:
        """The safety words with the pinned peer key (empty before first contact)."""
        return self._handshake.pinned_words()

    @property
    def unacked_texts(self) -> int:
        return self._outbox.count

    @property
    def queued_payloads(self) -> int:
        """Payloads made but not yet taken by :meth:`data_to_send`."""
        return len(self._outgoing)

    def data_to_send(self) -> list[bytes]:
        """CONTROL payloads to send, in order (each one CONTROL frame).

        Everything the session itself makes goes on the control lane; file
        chunks come from :meth:`encrypt_chunk`, which the glue calls for the
        bulk lane.
        """
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    # -- connection events ----------------------------------------------------------

    def peer_online(self, now: float) -> None:
        """The relay says the peer is present (JOINED with the peer, or PEER_UP).

        Every new presence is a new connection on some side: whatever keys we
        had may be stale, so a fresh handshake starts and unacked items are
        re-sent once it completes.
        """
        self._now = now
        self._peer_online = True
        self._drop_keys()
        self._handshake.forget_reset()
        if self._phases.fire(Trigger.PEER_ONLINE) is Phase.HANDSHAKE and self.seat is Seat.A:
            self._start_handshake()

    def peer_offline(self) -> None:
        """The peer left (PEER_DOWN) or our own connection dropped.

        A changed key waiting to be trusted is forgotten: whoever comes next
        shows their key in a fresh handshake (see ``phases``, BLOCKED).
        """
        self._peer_online = False
        self._drop_keys()
        if self.blocked:
            self._handshake.forget_changed_key()
        self._phases.fire(Trigger.PEER_OFFLINE)

    connection_lost = peer_offline

    def tick(self, now: float) -> None:
        """Let time pass: retries, timeouts, liveness probes, renewals.

        The glue calls this about once a second; nothing here needs more
        precision than that.
        """
        self._now = now
        phase = self._phases.phase
        hs = self._handshake
        if phase is Phase.BLOCKED or not self._peer_online:
            return
        if hs.timed_out(now, self.handshake_timeout):
            if self.seat is Seat.B and phase is Phase.ESTABLISHED:
                hs.abandon()  # an unfinished (perhaps forged) HS1: our session stands
            else:
                self._fail("handshake timed out (wrong room secret, or someone in the middle?)")
            return
        if phase is Phase.HANDSHAKE and not hs.in_progress:
            if self.seat is Seat.A and hs.retry_due(now):
                self._start_handshake()
            elif self.seat is Seat.B and hs.reset_due(now):
                self._push(hs.reset(now))
            return
        if phase is Phase.ESTABLISHED:
            self._tick_established(now)

    def _tick_established(self, now: float) -> None:
        if self._probe_sent is not None:
            if now - self._probe_sent >= self.probe_after:
                self._fail("the peer stopped answering")
                return
        elif self._outstanding() and now - self._last_heard >= self.probe_after:
            # Loss of the *last* record on a lane shows in no later record:
            # a PING makes one, and its PONG proves the other direction.
            self._probe_sent = now
            self._emit_record(RecordType.PING, b"")
        self._in_files.tick(now, self.stall_after)
        if self._handshake.renewal_due(now, self.rehandshake_records, self.rehandshake_seconds):
            self._renew()

    def _outstanding(self) -> bool:
        return bool(self._outbox.count or self._out_files.active or self._in_files.receiving)

    # -- user actions ---------------------------------------------------------------

    def send_text(self, text: str) -> int:
        """Queue a text; returns its seq, which :class:`TextDelivered` reports later.

        Raises:
            LocalProtocolError: the text is over ``max_text`` bytes or not
                UTF-8; nothing was queued.
        """
        return self._outbox.send(text)  # held in the queue until established

    def offer_file(self, name: str, size: int) -> int:
        """Offer a file; returns its id.  Chunks flow after the peer accepts.

        No hash of the file is needed: its STREAM key is fresh and reaches
        only the peer, so the final chunk's authentication covers every byte
        (and the sender need not read the file twice).
        """
        return self._out_files.offer(name, size)

    def encrypt_chunk(self, file_id: int, index: int, data: bytes) -> bytes:
        """The BULK payload for chunk ``index`` of an outgoing file (random access)."""
        return self._out_files.encrypt_chunk(file_id, index, data)

    def file_chunks(self, file_id: int) -> int:
        """How many chunks an outgoing file has."""
        return self._out_files.chunks(file_id)

    def accept_file(self, file_id: int) -> None:
        """Accept an offered file; chunks start arriving as :class:`FileChunk` events."""
        self._in_files.accept(file_id, self._now)

    def confirm_saved(self, file_id: int) -> None:
        """The glue stored a completed file: now the sender may hear "delivered"."""
        self._in_files.confirm_saved(file_id)

    def reject_file(self, file_id: int, code: FileCode, reason: str = "") -> None:
        """Refuse an offered file, abort one being received, or report that a
        completed one could not be saved; the sender is told why."""
        self._in_files.reject(file_id, code, reason)

    def cancel_file(self, file_id: int, reason: str = "cancelled by sender") -> None:
        """Stop sending one of our files."""
        self._out_files.cancel(file_id, reason)

    def trust_peer_key(self) -> None:
        """Accept the changed peer key after the users compared the safety words."""
        blocked_hs = self._handshake.trust()
        self._phases.fire(Trigger.TRUST)
        if self._peer_online:
            self.peer_online(self._now)
            if self.seat is Seat.B and blocked_hs:
                # A still waits for the HELLO we withheld: let it retry now
                # instead of after its handshake timeout.
                self._handshake.owe_reset(blocked_hs)
                self._push(self._handshake.reset(self._now))

    # -- incoming payloads ----------------------------------------------------------

    def receive_control(self, payload: bytes) -> None:
        """Feed one CONTROL payload from the relay.

        Tampering, replays and anything out of order end the current session
        with a :class:`SessionFailed` event (and a fresh handshake where this
        seat can start one); nothing is raised for remote misbehaviour, so a
        hostile relay cannot crash the client.
        """
        if not payload:
            self._fail("empty control payload")
            return
        kind, body = payload[0], payload[1:]
        try:
            self._receive_envelope(kind, body)
        except VersionMismatch as exc:
            self._fail(str(exc), why=ResetReason.VERSION)
        except (HandshakeError, DecryptError) as exc:
            why = ResetReason.AUTHENTICATION if kind == Envelope.HS3 else ResetReason.UNSPECIFIED
            self._fail(str(exc), why=why)
        except RemoteProtocolError as exc:
            self._fail(str(exc))

    def receive_bulk(self, payload: bytes) -> None:
        """Feed one BULK payload (a file chunk) from the relay.

        Chunks are authenticated by their file key, not by the session, so a
        bad one costs at most a re-request of that file; it never tears down
        the session.
        """
        self._in_files.receive_chunk(payload, self._now)

    def _receive_envelope(self, kind: int, body: bytes) -> None:
        hs = self._handshake
        match kind:
            case Envelope.DATA:
                self._receive_data(body)
            case Envelope.HS1:
                if self.seat is not Seat.B:
                    raise SessionError("handshake message 1 sent to the initiator")
                if self._phases.phase is Phase.BLOCKED:
                    return
                reply = hs.respond(body, self._now, established=self.established)
                if reply is not None:
                    self._phases.fire(Trigger.HS1)
                    self._push(reply)
            case Envelope.HS2:
                if self.seat is not Seat.A:
                    raise SessionError("handshake message 2 sent to the responder")
                reply = hs.receive_hs2(body)
                if reply is not None:
                    self._push(reply)
            case Envelope.HS3:
                if self.seat is not Seat.B:
                    raise SessionError("handshake message 3 sent to the initiator")
                self._complete(hs.receive_hs3(body, self._now))
            case Envelope.RESET:
                if self.seat is not Seat.A:
                    raise SessionError("RESET sent to the responder")
                why = hs.reset_reason(body)
                if why is not None:
                    self._fail(hs.reset_sentence(body) or "", tell_peer=False, why=why)
            case _:
                raise SessionError(f"unknown control envelope {kind}")

    def _receive_data(self, body: bytes) -> None:
        hs = self._handshake
        if hs.confirming:
            # A, after HS3: old-key records first (renewal), then B's HELLO.
            plaintext = hs.open_old(body)
            if plaintext is None:
                self._complete(hs.confirm(body, self._now))
                return
        elif not hs.keyed:
            # A record of a session already torn down, still in flight; if
            # the peer still believes in it, tell it (B) -- A retries anyway.
            if self.seat is Seat.B and hs.reset_due(self._now):
                self._push(hs.reset(self._now))
            return
        else:
            plaintext = hs.open(body)
        self._last_heard = self._now
        self._probe_sent = None
        self._handle_record(*decode_record(plaintext))

    def _handle_record(self, rtype: int, body: bytes) -> None:
        match rtype:
            case RecordType.TEXT:
                self._inbox.on_text(body)
            case RecordType.ACK:
                self._outbox.on_ack(body)
            case RecordType.TEXT_REFUSED:
                self._outbox.on_refused(body)
            case RecordType.PING:
                self._emit_record(RecordType.PONG, b"")
            case RecordType.PONG:
                pass  # hearing it was the point
            case RecordType.FILE_OFFER:
                self._in_files.on_offer(body, self._now)
            case RecordType.FILE_ACCEPT:
                self._out_files.on_accept(body)
            case RecordType.FILE_ACK:
                self._out_files.on_ack(body)
            case RecordType.FILE_DONE:
                self._out_files.on_done(body)
            case RecordType.FILE_REJECT:
                self._out_files.on_reject(body)
            case RecordType.FILE_CANCEL:
                self._in_files.on_cancel(body)
            case RecordType.REHANDSHAKE:
                if self.seat is Seat.A and self.established:
                    self._renew()
            case RecordType.HELLO:
                raise SessionError("unexpected HELLO")
            case _:
                raise SessionError(f"unknown control record type {rtype}")

    # -- handshakes -----------------------------------------------------------------

    def _start_handshake(self) -> None:
        """A: a fresh session (nothing assumed about the old one)."""
        self._drop_keys()
        self._phases.fire(Trigger.START)
        self._push(self._handshake.start(self._now, renew=False))

    def _renew(self) -> None:
        """Fresh keys on a live session (A starts; B asks A to)."""
        if self.seat is Seat.B:
            self._emit_record(RecordType.REHANDSHAKE, b"")
            self._handshake.restart_period(self._now)
            return
        # From here A holds back its records until the new keys are confirmed.
        self._phases.fire(Trigger.RENEW)
        self._push(self._handshake.start(self._now, renew=True))

    def _hello(self, old_count: int) -> bytes:
        """The padded HELLO record: our instance, records sent on the old
        keys, and the first seq we still hold (everything before was acked)."""
        return Hello(self.instance, old_count, self._outbox.first_unacked).encode()

    def _complete(self, outcome: Outcome) -> None:
        """Act on a HS3 (B) or on B's HELLO (A): new keys, or a changed peer key."""
        if outcome is None:
            return
        if isinstance(outcome, PeerKeyChanged):
            self._drop_keys()
            self._phases.fire(Trigger.KEY_CHANGED)
            self._event(outcome)
            return
        if self.seat is Seat.B and outcome.fresh:
            # B drops what it held back: its texts and offers are made again
            # below, and A's re-offers and the stall timer make up the rest.
            self._queue.clear()
        self._inbox.on_hello(outcome.peer_hello)
        self._phases.fire(Trigger.ESTABLISH)
        self._last_heard = self._now
        self._probe_sent = None
        self._event(HandshakeComplete(outcome.words, outcome.peer_key, outcome.first_contact))
        if self.seat is Seat.B:
            # Key confirmation for A: must be the first record on the new keys.
            self._emit_raw(self._hello(outcome.old_sent))
        queued, self._queue = self._queue, []
        if outcome.fresh:
            # Texts and offers are regenerated from the outbox, in order;
            # drop their queued copies so the peer does not get them twice.
            queued = [r for r in queued if r[0] not in _REGENERATED]
            self._outbox.resend()
            self._out_files.reoffer_all()
        for record in queued:
            self._emit_raw(record)

    # -- output ---------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        self._events.append(event)

    def _emit_record(self, rtype: RecordType, body: bytes) -> None:
        """Send now if established, else hold until the next handshake completes."""
        self._emit_raw(encode_record(rtype, body))

    def _emit_raw(self, record: bytes) -> None:
        if not self._handshake.keyed or not self.established:
            self._queue.append(record)
            return
        self._outgoing.append(self._handshake.seal(record))

    def _push(self, payload: bytes) -> None:
        """Queue a handshake message or RESET, dropping unsent ones it makes pointless.

        Each side holds one handshake at a time, so an older message still
        waiting to be written can only fail on arrival.
        """
        moot = SUPERSEDES[payload[0]]
        if self._outgoing:
            self._outgoing = [item for item in self._outgoing if item[0] not in moot]
        self._outgoing.append(payload)

    # -- failure --------------------------------------------------------------------

    def _drop_keys(self) -> None:
        """Forget the session and any handshake; unacked items go again later."""
        self._handshake.drop()
        self._queue.clear()
        self._inbox.drop_partial()
        self._probe_sent = None

    def _fail(
        self, reason: str, *, tell_peer: bool = True, why: ResetReason = ResetReason.UNSPECIFIED
    ) -> None:
        self._event(SessionFailed(reason, why))
        blocked = self.blocked
        self._handshake.failed(why, blocked=blocked)
        self._drop_keys()
        self._phases.fire(Trigger.FAIL if self._peer_online else Trigger.FAIL_OFFLINE)
        if blocked or not self._peer_online:
            return
        if self.seat is Seat.B:
            # Only A can start a handshake; tell it at once (and again later,
            # in case this is lost).  RESET is unauthenticated on purpose: all
            # it can do is cause a handshake, which a relay can cause anyway
            # by dropping frames.
            if tell_peer and self._handshake.owes_reset:
                self._push(self._handshake.reset(self._now))
        elif self._handshake.retry_at_once(self._now):
            self._start_handshake()
