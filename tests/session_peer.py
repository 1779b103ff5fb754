"""A peer the test scripts record by record, for the peers a real Session will not be.

A real :class:`~m42d.session.Session` keeps the protocol's rules: it will not
send a text over the cap or one that is not UTF-8, a malformed record, a
text sequence gap, or a file that runs past its offer.  To test how a
session answers a peer that does, :class:`ScriptedPeer` plays seat A toward
a real seat B.  It runs an honest handshake (docs/protocol.md,
"Handshake") from public parts only -- the Noise engine, the psk and
prologue of :mod:`m42d.session.keys`, the encoders of
:mod:`m42d.session.records` -- so it holds its own session keys, and then
seals whatever record the test hands it.  Like an honest A, it starts a
fresh handshake when B's RESET names its session or handshake, so a test
sees B recover.

:class:`RandomTap` is the other way for a test to be a rule-breaking seat:
a real session's ``random`` source that remembers its draws, so the seat
knows its own file keys (an offer draws id, key and salt in that order,
docs/protocol.md, "Known-answer transcript").
"""

from __future__ import annotations

import os

import attrs

from m42d.crypto.noise import PROTOCOL_NAME, CipherState, HandshakeState, KeyPair, TransportPair
from m42d.crypto.stream import FileKey
from m42d.session import Event, MemoryKeyStore, Session
from m42d.session.keys import derive_psk, prologue
from m42d.session.records import (
    HS_ID,
    RESET_BODY,
    Envelope,
    Hello,
    RecordType,
    decode_record,
    encode_record,
    handshake_message,
    hs_payload,
    text_bodies,
)
from m42d.ticket import Seat


def initiator_handshake(
    room_id: bytes, secret: bytes, static: KeyPair | None = None
) -> HandshakeState:
    """Seat A's side of a new Noise handshake for the room (any static key)."""
    return HandshakeState(
        PROTOCOL_NAME,
        initiator=True,
        prologue=prologue(room_id),
        s=static or KeyPair.from_private(os.urandom(32)),
        e=KeyPair.from_private(os.urandom(32)),
        psks=[derive_psk(secret, room_id)],
    )


@attrs.define(eq=False)
class ScriptedPeer:
    """Seat A, scripted by the test, toward ``session`` (a real seat B)."""

    session: Session
    secret: bytes = attrs.field(repr=False)
    static: KeyPair = attrs.field(factory=lambda: KeyPair.from_private(os.urandom(32)))
    instance: int = attrs.field(factory=lambda: int.from_bytes(os.urandom(8), "big"))
    first_unacked: int = 1
    """What our HELLO promises: every text of ours before it was acknowledged."""
    events: list[Event] = attrs.field(factory=list)
    """The session's events, oldest first."""
    received: list[tuple[int, bytes]] = attrs.field(factory=list)
    """Records the session sent us after its HELLO: (type, body)."""
    resets: list[bytes] = attrs.field(factory=list)
    handshakes: int = 0
    """Handshakes completed (B's HELLO decrypted with the new keys)."""
    _hs: HandshakeState | None = None
    _hs_id: int = 0
    _pending: TransportPair | None = None
    _send: CipherState | None = None
    _recv: CipherState | None = None

    @classmethod
    def against(cls, **options: object) -> ScriptedPeer:
        """A fresh room and a real seat B in it (``options`` go to its Session)."""
        secret = os.urandom(32)
        keys = MemoryKeyStore()
        session = Session(Seat.B, os.urandom(16), secret, keys, **options)  # type: ignore[arg-type]
        return cls(session, secret)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]

    def records(self, rtype: RecordType) -> list[bytes]:
        """Bodies of the records of one type the session sent us, oldest first."""
        return [body for t, body in self.received if t == rtype]

    @property
    def established(self) -> bool:
        return self._send is not None

    def connect(self) -> None:
        """Both seats online (as after JOINED / PEER_UP), and a fresh handshake run through."""
        self.session.peer_online(0.0)
        self.handshake()

    def handshake(self, hs1_payload: bytes | None = None) -> None:
        """Run a fresh handshake (HS1 with ``hs1_payload``, else an honest one)."""
        self.deliver(self._hs1(hs_payload(False) if hs1_payload is None else hs1_payload))

    def _hs1(self, payload: bytes) -> bytes:
        self._hs = initiator_handshake(self.session.room_id, self.secret, self.static)
        self._hs_id = int.from_bytes(os.urandom(4), "big") or 1
        self._pending = self._send = self._recv = None
        return handshake_message(Envelope.HS1, self._hs_id, self._hs.write_message(payload))

    def seal(self, rtype: int, body: bytes) -> bytes:
        """The DATA payload of one record on our keys (the test decides when it arrives)."""
        assert self._send is not None, "no session keys yet"
        record = encode_record(rtype, body)  # type: ignore[arg-type]  # any type, on purpose
        sealed = self._send.encrypt_with_ad(b"", record)
        self._send.rekey()
        return bytes([Envelope.DATA]) + sealed

    def send(self, rtype: int, body: bytes) -> None:
        """Seal one record, whatever its type and body, and deliver it."""
        self.deliver(self.seal(rtype, body))

    def send_text(self, seq: int, data: bytes) -> None:
        """A text as a sender splits it, but of any bytes and any size."""
        for body in text_bodies(seq, data):
            self.send(RecordType.TEXT, body)

    def send_bulk(self, payload: bytes) -> None:
        self.session.receive_bulk(payload)
        self.take()

    def deliver(self, *payloads: bytes) -> None:
        """CONTROL payloads to the session, then everything it answers, until it is quiet."""
        for payload in payloads:
            self.session.receive_control(payload)
        self.take()

    def take(self, rounds: int = 100) -> None:
        """Read the session's events and payloads, answering handshake messages and RESETs."""
        for _ in range(rounds):
            self.events.extend(self.session.events())
            replies = [r for p in self.session.data_to_send() for r in self._on_control(p)]
            if not replies:
                self.events.extend(self.session.events())
                return
            for reply in replies:
                self.session.receive_control(reply)
        raise AssertionError("the session did not go quiet")

    def _on_control(self, payload: bytes) -> list[bytes]:
        kind, body = payload[0], payload[1:]
        if kind == Envelope.HS2:
            return self._on_hs2(body)
        if kind == Envelope.RESET:
            self.resets.append(body)
            named, _why = RESET_BODY.unpack(body)
            if named == self._hs_id:  # our session's id is its handshake's
                return [self._hs1(hs_payload(False))]
            return []
        assert kind == Envelope.DATA, f"unexpected envelope {kind} from seat B"
        self._on_data(body)
        return []

    def _on_hs2(self, body: bytes) -> list[bytes]:
        hs = self._hs
        if hs is None or HS_ID.unpack_from(body)[0] != self._hs_id:
            return []
        hs.read_message(body[HS_ID.size :])
        hello = Hello(self.instance, 0, self.first_unacked).encode()
        message = hs.write_message(hello)
        self._pending = hs.split()
        return [handshake_message(Envelope.HS3, self._hs_id, message)]

    def _on_data(self, body: bytes) -> None:
        if self._pending is not None:
            recv = self._pending.recv
            rtype, _hello = decode_record(recv.decrypt_with_ad(b"", body))
            recv.rekey()
            assert rtype == RecordType.HELLO, "B's first record on new keys must be its HELLO"
            self._send, self._recv = self._pending.send, recv
            self._pending = None
            self.handshakes += 1
            return
        assert self._recv is not None, "DATA before any keys"
        record = decode_record(self._recv.decrypt_with_ad(b"", body))
        self._recv.rekey()
        self.received.append(record)


@attrs.define
class RandomTap:
    """``os.urandom`` for a session that remembers its draws: the seat knows its own file keys."""

    draws: list[bytes] = attrs.field(factory=list, repr=False)

    def __call__(self, n: int) -> bytes:
        drawn = os.urandom(n)
        self.draws.append(drawn)
        return drawn

    def file_key(self, file_id: int) -> FileKey:
        """The STREAM key of one of our offers: the two draws after its id."""
        i = self.draws.index(file_id.to_bytes(8, "big"))
        return FileKey(key=self.draws[i + 1], salt=self.draws[i + 2])
