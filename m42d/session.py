"""The end-to-end session machine that both m42 clients run (sans-IO).

The relay only ever sees the bytes this module produces.  The session takes
events from the glue (connection up, peer up/down, a CONTROL or BULK payload
received, the user wants to send a text or a file, time passed) and answers
with payloads to send on each lane and events for the user interface.

Rules and invariants
--------------------
* Seat A is the Noise initiator, seat B the responder.  A starts a *fresh*
  handshake whenever it learns the peer is online, after any failure (with
  back-off), and a *renew* handshake periodically.  B answers every HS1 but
  keeps an established session until HS3 authenticates A: message 1 needs
  no secret, so anyone can send one.
* The handshake is Noise_XXpsk3_25519_AESGCM_SHA256 with
  ``psk = HKDF(R, salt=room_id, info="m42 psk v1")`` and
  ``prologue = "m42d/1" || room_id``.  The psk enters only in message 3, so
  the responder sends a HELLO record first on the new keys and the initiator
  trusts them only once that HELLO decrypts (key confirmation).  Someone in
  the middle without R therefore fails on *both* sides.
* The peer's static key is pinned on first contact through a caller-supplied
  :class:`KeyStore`.  A different key stops the session
  (:class:`PeerKeyChanged`) until the user calls :meth:`Session.trust_peer_key`.
* Control records are sealed with the Noise transport ciphers, strictly in
  order, and both ciphers Rekey after every record.  A record that fails to
  decrypt means the lane was tampered with, reordered, dropped from or
  replayed into: the session is torn down and re-handshaken, never
  continued.  A renewal carries the count of records sent on the old keys
  both ways, so nothing can vanish across a key switch either; and a PING
  after 15 s of silence (while anything is outstanding) exposes a lost
  *last* record.
* Every record is padded to a multiple of 256 bytes.
* Texts carry ``seq`` numbers in the sender's ``instance``.  The receiver
  shows only ``seq == last + 1``, acks only what it has shown, and treats a
  gap as a failure: "delivered" is never reported for a lost text, and a
  re-sent text is shown once.  Unacked texts are re-sent, in order, after
  every *fresh* handshake.
* Files: the offer carries a fresh random file key, salt, size and SHA-256.
  Chunks travel on the bulk lane under that key (see
  :mod:`m42d.crypto.stream`), so the relay may reorder the two lanes relative
  to each other, and bulk trouble never ends the session.  The receiver
  asks again from its first missing chunk on a gap, a bad chunk, a re-offer
  or 30 s without progress.  A file is complete only when its last chunk
  decrypted and the whole-file hash matched (FILE_DONE).
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import Protocol, final

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from m42d.crypto.noise import (
    PROTOCOL_NAME,
    CipherState,
    HandshakeState,
    KeyPair,
    TransportPair,
)
from m42d.crypto.sas import safety_words
from m42d.crypto.stream import CHUNK_SIZE, FileKey, StreamDecryptor, StreamEncryptor, chunk_count
from m42d.errors import (
    DecryptError,
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamError,
)
from m42d.ticket import Seat
from m42d.wire import Lane

SESSION_VERSION = 2
"""Version of the end-to-end session (docs/protocol.md); the relay's wire version is separate."""
PROLOGUE_PREFIX = b"m42d/2"
PSK_INFO = b"m42 psk v1"

PAD_BUCKET = 256
MAX_NOISE_PLAINTEXT = 65535 - 16
MAX_RECORD = (MAX_NOISE_PLAINTEXT // PAD_BUCKET) * PAD_BUCKET  # 65280
RECORD_HEADER = struct.Struct(">BH")  # type, body length
MAX_RECORD_BODY = MAX_RECORD - RECORD_HEADER.size  # 65277

MAX_TEXT = 1024 * 1024  # the protocol's cap on one text, in UTF-8 bytes
DEFAULT_MAX_TEXT = MAX_TEXT
TEXT_HEADER = struct.Struct(">QB")  # seq, flags
TEXT_FINAL = 0x01
TEXT_PART = MAX_RECORD_BODY - TEXT_HEADER.size

BULK_HEADER = struct.Struct(">QQ")  # file id, chunk index
MAX_FILE_NAME = 1024
FILE_ACK_EVERY = 16  # chunks (1 MiB) between progress acks
RETRY_MAX = 30.0  # seconds: the longest back-off between failed handshakes

_U64 = struct.Struct(">Q")
HS_ID = struct.Struct(">I")  # handshake id chosen by A in HS1, echoed in HS2/HS3
HS_FRESH = 0  # HS1/HS2 payload: a new session (unacked items are re-sent)
HS_RENEW = 1  # HS1/HS2 payload: new keys for a live session (nothing was lost)
HS_PAYLOAD = struct.Struct(">BB")  # HS1/HS2 payload: fresh/renew, session version
RESET_BODY = struct.Struct(">IB")  # RESET: the id it names, why


class ResetReason(enum.IntEnum):
    """Why B's session broke, sent in RESET so that A can say it too (unauthenticated)."""

    UNSPECIFIED = 0
    AUTHENTICATION = 1  # HS3 failed: the room secrets differ, or someone is in the middle
    VERSION = 2  # the initiator speaks another session version


_HELLO = struct.Struct(">QQQ")  # instance, records sent on the old keys, first unacked seq
MAX_BAD_CHUNKS = 3  # chunks failing authentication before a transfer is given up
MAX_OPEN_INCOMING = 64  # offers pending or being received at once
MAX_FINISHED_INCOMING = 1024  # finished transfers remembered (to answer re-offers)
MAX_REFUSED_REMEMBERED = 64  # refused texts remembered (to refuse their re-sent copies)
_OFFER = struct.Struct(">QQ32s32sH")  # file id, size, file key, salt, name length
_ID_INDEX = struct.Struct(">QQ")
_ID_CODE = struct.Struct(">QH")


class Envelope(enum.IntEnum):
    """First byte of every CONTROL payload: which Noise message follows."""

    HS1 = 1
    HS2 = 2
    HS3 = 3
    DATA = 4
    RESET = 5  # B -> A: "my session broke, start a fresh handshake" (RESET_BODY)


class RecordType(enum.IntEnum):
    """Type of a decrypted control record."""

    HELLO = 0x01
    TEXT = 0x02
    ACK = 0x03
    REHANDSHAKE = 0x04
    PING = 0x05
    PONG = 0x06
    TEXT_REFUSED = 0x07  # protocol 2: "this text cannot be shown", instead of its ACK
    FILE_OFFER = 0x10
    FILE_ACCEPT = 0x11
    FILE_REJECT = 0x12
    FILE_ACK = 0x13
    FILE_DONE = 0x14
    FILE_CANCEL = 0x15


class FileCode(enum.IntEnum):
    """Why a file was rejected or cancelled; stable numbers on the wire."""

    DECLINED = 1
    TOO_LARGE = 2
    NO_SPACE = 3
    MISMATCH = 4  # the data did not match the offer (protocol 1 called it "hash mismatch")
    CANCELLED = 5
    WRITE_FAILED = 6
    BAD_NAME = 7


class SessionError(RemoteProtocolError):
    """The peer (or the relay between us) broke the end-to-end protocol."""


# ---------------------------------------------------------------------------
# Key store


class KeyStore(Protocol):
    """Where a client keeps, per room, its own static key and the peer's pinned key."""

    def load_static(self, room_id: bytes, seat: Seat) -> bytes | None:
        """This seat's private static key for the room, or None on first use."""
        ...

    def save_static(self, room_id: bytes, seat: Seat, private: bytes) -> None:
        """Persist this seat's private static key."""
        ...

    def load_peer(self, room_id: bytes, seat: Seat) -> bytes | None:
        """The pinned public key of the *other* seat, or None before first contact."""
        ...

    def save_peer(self, room_id: bytes, seat: Seat, public: bytes) -> None:
        """Pin (or re-pin after the user trusted it) the other seat's public key."""
        ...


@final
@attrs.define
class MemoryKeyStore:
    """A key store that forgets everything at exit: for tests and ``--ephemeral`` use."""

    statics: dict[tuple[bytes, Seat], bytes] = attrs.field(factory=dict, repr=False)
    peers: dict[tuple[bytes, Seat], bytes] = attrs.field(factory=dict)

    def load_static(self, room_id: bytes, seat: Seat) -> bytes | None:
        return self.statics.get((room_id, seat))

    def save_static(self, room_id: bytes, seat: Seat, private: bytes) -> None:
        self.statics[(room_id, seat)] = private

    def load_peer(self, room_id: bytes, seat: Seat) -> bytes | None:
        return self.peers.get((room_id, seat))

    def save_peer(self, room_id: bytes, seat: Seat, public: bytes) -> None:
        self.peers[(room_id, seat)] = public


# ---------------------------------------------------------------------------
# Events for the user interface


@attrs.frozen
class HandshakeComplete:
    """A session is established; the safety words stay the same while neither key changes."""

    words: tuple[str, ...]
    peer_key: bytes
    first_contact: bool


@attrs.frozen
class PeerKeyChanged:
    """The peer's static key differs from the pinned one; nothing flows until trusted."""

    pinned: bytes
    offered: bytes
    words: tuple[str, ...]
    """The safety words with the offered key: compare them before trusting it."""


@attrs.frozen
class TextReceived:
    seq: int
    text: str


@attrs.frozen
class TextRefused:
    """The peer sent a text this side must not show (over the cap, not UTF-8).

    Answered with TEXT_REFUSED instead of ACK, so that the peer stops
    re-sending it and does not count it as delivered; only a sender that
    broke the protocol's rules can cause this.
    """

    seq: int
    size: int
    reason: str


@attrs.frozen
class TextRejected:
    """The peer refused our text ``seq`` (TEXT_REFUSED): it will not be shown or sent again."""

    seq: int
    reason: str


@attrs.frozen
class TextDelivered:
    """The peer acknowledged our text end to end."""

    seq: int


@attrs.frozen
class FileOffered:
    """The peer offers a file: answer with accept_file() or reject_file()."""

    file_id: int
    name: str
    size: int


@attrs.frozen
class SendChunks:
    """Start (or restart) sending the file's chunks from ``start`` on the bulk lane."""

    file_id: int
    start: int


@attrs.frozen
class FileChunk:
    """Decrypted, authenticated data to write at ``offset`` of the incoming file."""

    file_id: int
    index: int
    offset: int
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class FileProgress:
    """Bytes confirmed so far: received (incoming) or acked by the peer (outgoing)."""

    file_id: int
    outgoing: bool
    done: int
    size: int


@attrs.frozen
class FileCompleted:
    """Incoming file fully received and authenticated (its final chunk): move it into place."""

    file_id: int


@attrs.frozen
class FileDelivered:
    """The peer received, authenticated and saved our file."""

    file_id: int


@attrs.frozen
class FileFailed:
    """A transfer ended without success (rejected, cancelled, hash mismatch)."""

    file_id: int
    outgoing: bool
    code: int
    reason: str


@attrs.frozen
class SessionFailed:
    """The secure session broke; the machine starts over by itself where it can."""

    reason: str


Event = (
    HandshakeComplete
    | PeerKeyChanged
    | TextReceived
    | TextRefused
    | TextRejected
    | TextDelivered
    | FileOffered
    | SendChunks
    | FileChunk
    | FileProgress
    | FileCompleted
    | FileDelivered
    | FileFailed
    | SessionFailed
)


# ---------------------------------------------------------------------------
# Derivations


def derive_psk(secret: bytes, room_id: bytes) -> bytes:
    """The Noise psk: the room secret bound to the room it was made for."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=room_id, info=PSK_INFO).derive(secret)


def prologue(room_id: bytes) -> bytes:
    """Binds protocol version and room into the handshake transcript."""
    return PROLOGUE_PREFIX + room_id


def encode_record(rtype: RecordType, body: bytes) -> bytes:
    """Frame and pad one control record (before Noise encryption)."""
    if len(body) > MAX_RECORD_BODY:
        raise LocalProtocolError(f"control record body of {len(body)} bytes exceeds the cap")
    raw = RECORD_HEADER.pack(rtype, len(body)) + body
    padded = -(-len(raw) // PAD_BUCKET) * PAD_BUCKET
    return raw + bytes(padded - len(raw))


def decode_record(plaintext: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_record`; the padding must be zeros."""
    if len(plaintext) < RECORD_HEADER.size or len(plaintext) % PAD_BUCKET:
        raise SessionError("control record has a bad length")
    rtype, length = RECORD_HEADER.unpack_from(plaintext)
    end = RECORD_HEADER.size + length
    if end > len(plaintext) or any(plaintext[end:]):
        raise SessionError("control record has a bad length or padding")
    return rtype, plaintext[RECORD_HEADER.size : end]


# ---------------------------------------------------------------------------
# Transfer bookkeeping


class _OutState(enum.Enum):
    OFFERED = "offered"
    SENDING = "sending"


@attrs.define
class _Outgoing:
    file_id: int
    name: str
    size: int
    key: FileKey
    encryptor: StreamEncryptor
    chunks: int
    state: _OutState = _OutState.OFFERED
    acked: int = 0  # chunks the receiver confirmed


class _InState(enum.Enum):
    PENDING = "pending"  # waiting for the user's decision
    RECEIVING = "receiving"
    SAVING = "saving"  # final chunk authenticated; the glue is storing it (FILE_DONE waits)
    DONE = "done"
    REJECTED = "rejected"


@attrs.define
class _Incoming:
    file_id: int
    name: str
    size: int
    key: FileKey
    chunks: int
    state: _InState = _InState.PENDING
    decryptor: StreamDecryptor | None = None
    reject_code: int = 0
    gap_requested_at: int = -1
    bad_chunks: int = 0
    last_progress: float = 0.0


class _Phase(enum.Enum):
    OFFLINE = "offline"  # peer not known to be online
    HANDSHAKE = "handshake"  # a handshake is in flight
    ESTABLISHED = "established"
    BLOCKED = "blocked"  # peer key changed; waiting for trust


# ---------------------------------------------------------------------------
# The machine


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

    _static: KeyPair = attrs.field(init=False, repr=False)
    _psk: bytes = attrs.field(init=False, repr=False)
    _phase: _Phase = attrs.field(init=False, default=_Phase.OFFLINE)
    _now: float = attrs.field(init=False, default=0.0)
    _peer_online: bool = attrs.field(init=False, default=False)

    # The handshake in progress (either seat), and what it was started for.
    _hs: HandshakeState | None = attrs.field(init=False, default=None, repr=False)
    _hs_started: float = attrs.field(init=False, default=0.0)
    _hs_id: int = attrs.field(init=False, default=0)
    _hs_renew: bool = attrs.field(init=False, default=False)
    _old_sent: int = attrs.field(init=False, default=0)  # A: records sent on the old keys
    _pending: TransportPair | None = attrs.field(init=False, default=None, repr=False)

    # The established session.
    _session_id: int = attrs.field(init=False, default=0)
    _send: CipherState | None = attrs.field(init=False, default=None, repr=False)
    _recv: CipherState | None = attrs.field(init=False, default=None, repr=False)
    _established_at: float = attrs.field(init=False, default=0.0)
    _records: int = attrs.field(init=False, default=0)
    _last_heard: float = attrs.field(init=False, default=0.0)
    _probe_sent: float | None = attrs.field(init=False, default=None)
    _resend: bool = attrs.field(init=False, default=True)
    _changed_key: bytes | None = attrs.field(init=False, default=None, repr=False)
    _words: tuple[bytes, tuple[str, ...]] | None = attrs.field(init=False, default=None)
    """(peer key, safety words): PBKDF2 runs once per key, not per handshake."""

    # Failure handling.
    _failures: int = attrs.field(init=False, default=0)
    _retry_at: float = attrs.field(init=False, default=0.0)  # A: next handshake attempt
    _reset_id: int = attrs.field(init=False, default=0)  # B: what the RESET names
    _reset_at: float = attrs.field(init=False, default=0.0)  # B: next RESET
    _reset_why: int = attrs.field(init=False, default=0)  # B: the ResetReason it carries

    # Texts.
    instance: int = attrs.field(init=False, default=0)
    _next_seq: int = attrs.field(init=False, default=1)
    _unacked: dict[int, str] = attrs.field(init=False, factory=dict, repr=False)
    _peer_instance: int | None = attrs.field(init=False, default=None)
    _peer_last_seq: int = attrs.field(init=False, default=0)
    _partial_seq: int | None = attrs.field(init=False, default=None)
    _partial_text: bytearray = attrs.field(init=False, factory=bytearray, repr=False)
    _partial_size: int = attrs.field(init=False, default=0)  # bytes of the text so far
    _refused: dict[int, str] = attrs.field(init=False, factory=dict, repr=False)
    """Seqs of the peer's current instance refused, oldest first (bounded)."""

    # Files.
    _out_files: dict[int, _Outgoing] = attrs.field(init=False, factory=dict, repr=False)
    _in_files: dict[int, _Incoming] = attrs.field(init=False, factory=dict, repr=False)

    _queue: list[bytes] = attrs.field(init=False, factory=list, repr=False)  # sealed later
    _outgoing: list[tuple[Lane, bytes]] = attrs.field(init=False, factory=list, repr=False)
    _events: list[Event] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        if len(self.secret) != 32:
            raise LocalProtocolError("room secret must be 32 bytes")
        if len(self.room_id) != 16:
            raise LocalProtocolError("room id must be 16 bytes")
        if not 0 < self.max_text <= MAX_TEXT:
            # Above the protocol's cap a peer would refuse what this side sends.
            raise LocalProtocolError(f"max_text must be 1 to {MAX_TEXT} bytes")
        private = self.keys.load_static(self.room_id, self.seat)
        if private is None:
            self._static = KeyPair.from_private(self.random(32))
            self.keys.save_static(self.room_id, self.seat, self._static.private)
        else:
            self._static = KeyPair.from_private(private)
        self._psk = derive_psk(self.secret, self.room_id)
        self.instance = int.from_bytes(self.random(8), "big")

    # -- what the glue reads ------------------------------------------------

    @property
    def established(self) -> bool:
        """True while texts and files can flow."""
        return self._phase is _Phase.ESTABLISHED

    @property
    def blocked(self) -> bool:
        """True while a changed peer key waits for :meth:`trust_peer_key`."""
        return self._phase is _Phase.BLOCKED

    @property
    def static_public(self) -> bytes:
        return self._static.public

    @property
    def safety_words(self) -> tuple[str, ...]:
        """The safety words with the pinned peer key (empty before first contact)."""
        pinned = self.keys.load_peer(self.room_id, self.seat)
        return () if pinned is None else self._safety_words(pinned)

    def _safety_words(self, peer_key: bytes) -> tuple[str, ...]:
        if self._words is None or self._words[0] != peer_key:
            ours = self._static.public
            a, b = (ours, peer_key) if self.seat is Seat.A else (peer_key, ours)
            self._words = (peer_key, safety_words(self.room_id, a, b))
        return self._words[1]

    @property
    def unacked_texts(self) -> int:
        return len(self._unacked)

    @property
    def queued_payloads(self) -> int:
        """Payloads made but not yet taken by :meth:`data_to_send`."""
        return len(self._outgoing)

    def data_to_send(self) -> list[tuple[Lane, bytes]]:
        """Payloads for CONTROL / BULK frames, in the order they must be sent."""
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    # -- connection events --------------------------------------------------

    def peer_online(self, now: float) -> None:
        """The relay says the peer is present (JOINED with the peer, or PEER_UP).

        Every new presence is a new connection on some side: whatever keys we
        had may be stale, so a fresh handshake starts and unacked items are
        re-sent once it completes.
        """
        self._now = now
        self._peer_online = True
        self._drop_keys()
        self._reset_id = 0
        if self._phase is _Phase.BLOCKED:
            return
        self._phase = _Phase.HANDSHAKE
        if self.seat is Seat.A:
            self._start_handshake()

    def peer_offline(self) -> None:
        """The peer left (PEER_DOWN) or our own connection dropped."""
        self._peer_online = False
        self._drop_keys()
        if self._phase is not _Phase.BLOCKED:
            self._phase = _Phase.OFFLINE

    connection_lost = peer_offline

    def tick(self, now: float) -> None:
        """Let time pass: retries, timeouts, liveness probes, renewals.

        The glue calls this about once a second; nothing here needs more
        precision than that.
        """
        self._now = now
        if self._phase is _Phase.BLOCKED or not self._peer_online:
            return
        if self._hs is not None and now - self._hs_started > self.handshake_timeout:
            if self.seat is Seat.B and self._phase is _Phase.ESTABLISHED:
                self._hs = None  # an unfinished (perhaps forged) HS1: our session stands
            else:
                self._fail("handshake timed out (wrong room secret, or someone in the middle?)")
            return
        if self._phase is _Phase.HANDSHAKE and self._hs is None:
            if self.seat is Seat.A and now >= self._retry_at:
                self._start_handshake()
            elif self.seat is Seat.B and self._reset_id and now >= self._reset_at:
                self._send_reset()
            return
        if self._phase is _Phase.ESTABLISHED:
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
        for inc in self._in_files.values():
            if inc.state is _InState.RECEIVING and now - inc.last_progress >= self.stall_after:
                self._request_from(inc)
        if (
            self._records >= self.rehandshake_records
            or now - self._established_at >= self.rehandshake_seconds
        ):
            self._renew()

    def _outstanding(self) -> bool:
        return bool(self._unacked or self._out_files) or any(
            inc.state is _InState.RECEIVING for inc in self._in_files.values()
        )

    # -- user actions -------------------------------------------------------

    def send_text(self, text: str) -> int:
        """Queue a text; returns its seq, which :class:`TextDelivered` reports later."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalProtocolError("the text is not valid UTF-8") from None
        if len(data) > self.max_text:
            # Refused before anything is queued: a text over the cap would
            # be refused by the peer, and a file has no such cap.
            raise LocalProtocolError(
                f"text of {len(data)} bytes exceeds the {self.max_text}-byte cap; "
                "send it as a file instead"
            )
        seq = self._next_seq
        self._next_seq += 1
        self._unacked[seq] = text
        self._emit_text(seq, data)  # held in the queue until established
        return seq

    def offer_file(self, name: str, size: int) -> int:
        """Offer a file; returns its id.  Chunks flow after the peer accepts.

        No hash of the file is needed: its STREAM key is fresh and reaches
        only the peer, so the final chunk's authentication covers every byte
        (and the sender need not read the file twice).
        """
        if size < 0:
            raise LocalProtocolError("file size must not be negative")
        if not 0 < len(name.encode("utf-8")) <= MAX_FILE_NAME:
            raise LocalProtocolError("file name must be 1 to 1024 bytes of UTF-8")
        file_id = int.from_bytes(self.random(8), "big")
        key = FileKey(key=self.random(32), salt=self.random(32))
        out = _Outgoing(
            file_id=file_id,
            name=name,
            size=size,
            key=key,
            encryptor=StreamEncryptor(key),
            chunks=chunk_count(size),
        )
        self._out_files[file_id] = out
        self._send_offer(out)
        return file_id

    def encrypt_chunk(self, file_id: int, index: int, data: bytes) -> bytes:
        """The BULK payload for chunk ``index`` of an outgoing file (random access)."""
        out = self._out_files.get(file_id)
        if out is None or out.state is not _OutState.SENDING:
            raise LocalProtocolError("file is not being sent")
        if not 0 <= index < out.chunks:
            raise LocalProtocolError("chunk index out of range")
        last = index == out.chunks - 1
        expected = out.size - index * CHUNK_SIZE if last else CHUNK_SIZE
        if len(data) != expected:
            raise LocalProtocolError(f"chunk {index} must be {expected} bytes, got {len(data)}")
        sealed = out.encryptor.encrypt_chunk(index, data, last=last)
        return BULK_HEADER.pack(file_id, index) + sealed

    def file_chunks(self, file_id: int) -> int:
        """How many chunks an outgoing file has."""
        out = self._out_files.get(file_id)
        if out is None:
            raise LocalProtocolError("no outgoing file with that id")
        return out.chunks

    def accept_file(self, file_id: int) -> None:
        """Accept an offered file; chunks start arriving as :class:`FileChunk` events."""
        inc = self._in_files.get(file_id)
        if inc is None or inc.state is not _InState.PENDING:
            raise LocalProtocolError("no pending offer with that id")
        inc.state = _InState.RECEIVING
        inc.decryptor = StreamDecryptor(inc.key)
        inc.last_progress = self._now
        self._emit_record(RecordType.FILE_ACCEPT, _ID_INDEX.pack(file_id, 0))

    def confirm_saved(self, file_id: int) -> None:
        """The glue stored a completed file: now the sender may hear "delivered"."""
        inc = self._in_files.get(file_id)
        if inc is None or inc.state is not _InState.SAVING:
            raise LocalProtocolError("no completed file waiting to be saved with that id")
        inc.state = _InState.DONE
        self._emit_record(RecordType.FILE_DONE, _U64.pack(file_id))

    def reject_file(self, file_id: int, code: FileCode, reason: str = "") -> None:
        """Refuse an offered file, abort one being received, or report that a
        completed one could not be saved; the sender is told why."""
        inc = self._in_files.get(file_id)
        if inc is None or inc.state in (_InState.DONE, _InState.REJECTED):
            raise LocalProtocolError("no offer or transfer with that id")
        self._close_incoming(inc, int(code))
        self._emit_record(RecordType.FILE_REJECT, _reason_body(file_id, code, reason))

    def cancel_file(self, file_id: int, reason: str = "cancelled by sender") -> None:
        """Stop sending one of our files."""
        out = self._out_files.pop(file_id, None)
        if out is None:
            raise LocalProtocolError("no outgoing file with that id")
        self._emit_record(RecordType.FILE_CANCEL, _reason_body(file_id, FileCode.CANCELLED, reason))

    def trust_peer_key(self) -> None:
        """Accept the changed peer key after the users compared the safety words."""
        if self._changed_key is None:
            raise LocalProtocolError("no changed peer key to trust")
        self.keys.save_peer(self.room_id, self.seat, self._changed_key)
        self._changed_key = None
        self._phase = _Phase.OFFLINE
        if self._peer_online:
            blocked_hs = self._hs_id
            self.peer_online(self._now)
            if self.seat is Seat.B and blocked_hs:
                # A still waits for the HELLO we withheld: let it retry now
                # instead of after its handshake timeout.
                self._reset_id = blocked_hs
                self._send_reset()

    # -- incoming payloads --------------------------------------------------

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
            if kind == Envelope.DATA:
                self._receive_data(body)
            elif kind == Envelope.HS1:
                self._receive_hs1(body)
            elif kind == Envelope.HS2:
                self._receive_hs2(body)
            elif kind == Envelope.HS3:
                self._receive_hs3(body)
            elif kind == Envelope.RESET:
                self._receive_reset(body)
            else:
                raise SessionError(f"unknown control envelope {kind}")
        except _VersionMismatch as exc:
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
        if len(payload) < BULK_HEADER.size:
            return  # not from an honest peer; nothing to resume from it
        file_id, index = BULK_HEADER.unpack_from(payload)
        inc = self._in_files.get(file_id)
        if inc is None or inc.state is not _InState.RECEIVING or inc.decryptor is None:
            return  # stale chunk of a finished, rejected or unknown transfer
        dec = inc.decryptor
        if index < dec.next_index:
            return  # duplicate after a resume
        if index > dec.next_index:
            # A chunk went missing (dropped by the relay or lost in a
            # reconnect): ask for a restart from the gap, once per gap.
            if inc.gap_requested_at != dec.next_index:
                self._request_from(inc)
            return
        try:
            data = dec.decrypt_next(payload[BULK_HEADER.size :])
        except StreamError as exc:
            inc.bad_chunks += 1
            if inc.bad_chunks > MAX_BAD_CHUNKS:
                self._abort_incoming(inc, FileCode.CANCELLED, f"file chunk rejected: {exc}")
                return
            inc.decryptor = StreamDecryptor(inc.key, start=dec.next_index)
            self._request_from(inc)
            return
        done = dec.done
        end = index * CHUNK_SIZE + len(data)
        if end > inc.size or (not done and dec.next_index >= inc.chunks):
            # The offer's size is the receiver's only bound (--max-size and
            # the free-space check were made against it): the first byte past
            # it, or a chunk that says more follow when none may, ends the
            # transfer before anything of it is stored.
            self._abort_incoming(
                inc,
                FileCode.MISMATCH,
                f"file size does not match the offer: more than the {inc.size} bytes offered",
            )
            return
        if done and end != inc.size:
            self._abort_incoming(inc, FileCode.MISMATCH, "file size does not match the offer")
            return
        inc.last_progress = self._now
        self._events.append(FileChunk(file_id, index, index * CHUNK_SIZE, data))
        received = min(dec.next_index * CHUNK_SIZE, inc.size)
        if done or dec.next_index % FILE_ACK_EVERY == 0:
            self._events.append(FileProgress(file_id, False, received, inc.size))
            if not done:
                self._emit_record(RecordType.FILE_ACK, _ID_INDEX.pack(file_id, dec.next_index))
        if done:
            # FILE_DONE tells the sender "delivered": only once the glue has
            # the file safely stored (confirm_saved), never before.
            self._close_incoming(inc, 0, state=_InState.SAVING)
            self._events.append(FileCompleted(file_id))

    def _request_from(self, inc: _Incoming) -> None:
        assert inc.decryptor is not None
        inc.gap_requested_at = inc.decryptor.next_index
        inc.last_progress = self._now
        self._emit_record(
            RecordType.FILE_ACCEPT, _ID_INDEX.pack(inc.file_id, inc.decryptor.next_index)
        )

    # -- handshake ----------------------------------------------------------

    def _new_handshake(self, *, initiator: bool) -> HandshakeState:
        return HandshakeState(
            PROTOCOL_NAME,
            initiator=initiator,
            prologue=prologue(self.room_id),
            s=self._static,
            e=KeyPair.from_private(self.random(32)),
            psks=[self._psk],
        )

    def _start_handshake(self) -> None:
        """A: a fresh session (nothing assumed about the old one)."""
        self._drop_keys()
        self._phase = _Phase.HANDSHAKE
        self._send_hs1(renew=False)

    def _renew(self) -> None:
        """Fresh keys on a live session (A starts; B asks A to)."""
        if self.seat is Seat.B:
            self._emit_record(RecordType.REHANDSHAKE, b"")
            self._established_at, self._records = self._now, 0
            return
        assert self._send is not None
        # From here A queues its records; the count of those already sent on
        # the old keys goes into HS3 so B can check none went missing.
        self._phase = _Phase.HANDSHAKE
        self._old_sent = self._send.nonce
        self._send_hs1(renew=True)

    def _send_hs1(self, *, renew: bool) -> None:
        # The renew flag rides in message 1's payload, which Noise hashes into
        # the transcript: a relay that flips it breaks the handshake.
        hs = self._new_handshake(initiator=True)
        self._hs, self._hs_started, self._hs_renew = hs, self._now, renew
        self._hs_id = _draw_id(self.random)
        self._pending = None
        self._send_hs(Envelope.HS1, hs.write_message(_hs_payload(renew)))

    def _send_hs(self, envelope: Envelope, message: bytes) -> None:
        self._replace_unsent(_SUPERSEDES[envelope])
        self._outgoing.append((Lane.CONTROL, bytes([envelope]) + HS_ID.pack(self._hs_id) + message))

    def _replace_unsent(self, envelopes: frozenset[int]) -> None:
        """Drop unsent handshake messages or RESETs that a new one makes pointless.

        Each side holds one handshake at a time, so an older message still
        waiting to be written can only fail on arrival.  Dropping it keeps
        the output bounded when the relay stops reading us and replays HS1
        (which needs no secret) or provokes RESETs as fast as it can.
        """
        if self._outgoing:
            self._outgoing = [
                item for item in self._outgoing if not (item[1] and item[1][0] in envelopes)
            ]

    def _current_hs(self, body: bytes) -> tuple[HandshakeState, bytes] | None:
        """The live handshake and the Noise message, or None for a stale message.

        A handshake message whose id is not the one in progress belongs to a
        handshake this side already abandoned (a retry crossed it in flight,
        or the relay replays it): it is ignored, not fatal.
        """
        if len(body) < HS_ID.size:
            raise SessionError("handshake message too short")
        if self._hs is None or HS_ID.unpack_from(body)[0] != self._hs_id:
            return None
        return self._hs, body[HS_ID.size :]

    def _receive_hs1(self, body: bytes) -> None:
        if self.seat is not Seat.B:
            raise SessionError("handshake message 1 sent to the initiator")
        if self._phase is _Phase.BLOCKED:
            return
        if len(body) < HS_ID.size:
            raise SessionError("handshake message too short")
        hs = self._new_handshake(initiator=False)
        try:
            flag = hs.read_message(body[HS_ID.size :])
        except HandshakeError:
            if self._phase is _Phase.ESTABLISHED:
                return  # garbage cannot end a session that still works
            raise
        try:
            asked_renew = _parse_hs_payload(flag, "1")
        except SessionError:
            if self._phase is _Phase.ESTABLISHED:
                return
            # The RESET that follows names this handshake, so A hears why.
            self._hs_id = HS_ID.unpack_from(body)[0]
            raise
        # HS1 proves nothing (message 1 needs no secret), so an established
        # session is kept, and used, until HS3 authenticates A.
        renew = asked_renew and self._phase is _Phase.ESTABLISHED
        if self._phase is not _Phase.ESTABLISHED:
            self._phase = _Phase.HANDSHAKE
        self._hs, self._hs_started, self._hs_renew = hs, self._now, renew
        self._hs_id = HS_ID.unpack_from(body)[0]
        # B's answer (in the transcript, so authenticated by the end) tells A
        # whether its unacked items must go again.
        self._send_hs(Envelope.HS2, hs.write_message(_hs_payload(renew)))

    def _receive_hs2(self, body: bytes) -> None:
        if self.seat is not Seat.A:
            raise SessionError("handshake message 2 sent to the responder")
        current = self._current_hs(body)
        if current is None:
            return
        hs, message = current
        if hs.complete or hs.is_my_turn():
            return  # a duplicate of the HS2 we already answered
        answered_renew = _parse_hs_payload(hs.read_message(message), "2")
        if self._hs_renew and not answered_renew:
            # B has no session to renew: this becomes a fresh one.
            self._hs_renew = False
            self._resend = True
        old = self._old_sent if self._hs_renew else 0
        self._send_hs(Envelope.HS3, hs.write_message(self._hello(old)))
        # Not yet trusted: the peer has not proven it knows the psk.  Old
        # keys (if renewing) stay in use for receiving until HELLO arrives.
        self._pending = hs.split()

    def _receive_hs3(self, body: bytes) -> None:
        if self.seat is not Seat.B:
            raise SessionError("handshake message 3 sent to the initiator")
        current = self._current_hs(body)
        if current is None or current[0].complete or current[0].is_my_turn():
            return
        hs, message = current
        payload = hs.read_message(message)
        instance, old_count, next_unacked = _parse_hello(payload)
        pair = hs.split()
        if not self._check_peer(hs):
            return
        old_sent = 0
        if self._hs_renew:
            assert self._recv is not None
            assert self._send is not None
            if self._recv.nonce != old_count:
                raise SessionError("records were lost while renewing the keys")
            old_sent = self._send.nonce
        else:
            self._resend = True
            self._queue.clear()
        self._send, self._recv = pair.send, pair.recv
        self._note_peer(instance, next_unacked)
        self._establish(hs, old_sent)

    def _receive_reset(self, body: bytes) -> None:
        if self.seat is not Seat.A:
            raise SessionError("RESET sent to the responder")
        if len(body) != RESET_BODY.size:
            raise SessionError("RESET has a bad length")
        # Only a RESET about the session we hold, or the handshake we run,
        # counts; one about an older attempt crossed our retry in flight.
        named, why = RESET_BODY.unpack(body)
        about_session = self._send is not None and named == self._session_id
        about_handshake = self._hs is not None and named == self._hs_id
        if about_session or about_handshake:
            self._fail(_RESET_SENTENCES.get(why, _RESET_SENTENCES[0]), tell_peer=False)

    def _send_reset(self) -> None:
        backoff = min(RETRY_MAX, 2.0 ** max(0, self._failures - 1))
        self._reset_at = self._now + backoff
        self._replace_unsent(_SUPERSEDES[Envelope.RESET])
        body = RESET_BODY.pack(self._reset_id, self._reset_why)
        self._outgoing.append((Lane.CONTROL, bytes([Envelope.RESET]) + body))

    def _check_peer(self, hs: HandshakeState) -> bool:
        """Pin on first contact; stop on a changed key."""
        rs = hs.remote_static
        assert rs is not None
        pinned = self.keys.load_peer(self.room_id, self.seat)
        if pinned is not None and pinned != rs:
            self._drop_keys()
            self._phase = _Phase.BLOCKED
            self._changed_key = rs
            self._events.append(PeerKeyChanged(pinned, rs, self._safety_words(rs)))
            return False
        return True

    def _hello(self, old_count: int) -> bytes:
        """The padded HELLO record: our instance, records sent on the old
        keys, and the first seq we still hold (everything before was acked)."""
        first_unacked = min(self._unacked, default=self._next_seq)
        return encode_record(RecordType.HELLO, _HELLO.pack(self.instance, old_count, first_unacked))

    def _establish(self, hs: HandshakeState, old_sent: int) -> None:
        rs = hs.remote_static
        assert rs is not None
        first = self.keys.load_peer(self.room_id, self.seat) is None
        if first:
            self.keys.save_peer(self.room_id, self.seat, rs)
        self._hs = None
        self._pending = None
        self._session_id = self._hs_id
        self._phase = _Phase.ESTABLISHED
        self._failures = 0
        self._reset_id = 0
        self._established_at = self._last_heard = self._now
        self._probe_sent = None
        self._records = 0
        self._events.append(HandshakeComplete(self._safety_words(rs), rs, first))
        if self.seat is Seat.B:
            # Key confirmation for A: must be the first record on the new keys.
            self._emit_raw(self._hello(old_sent))
        queued, self._queue = self._queue, []
        if self._resend:
            # Texts and offers are regenerated from the outbox, in order;
            # drop their queued copies so the peer does not get them twice.
            self._resend = False
            queued = [r for r in queued if r[0] not in _REGENERATED]
            self._resend_all()
        for record in queued:
            self._emit_raw(record)

    def _resend_all(self) -> None:
        for seq, text in sorted(self._unacked.items()):
            self._emit_text(seq, text.encode("utf-8"))
        for out in self._out_files.values():
            self._send_offer(out)

    # -- transport records --------------------------------------------------

    def _receive_data(self, body: bytes) -> None:
        if self._pending is not None:
            self._receive_while_confirming(body)
            return
        if self._recv is None:
            # A record of a session already torn down, still in flight; if
            # the peer still believes in it, tell it (B) -- A retries anyway.
            if self.seat is Seat.B and self._reset_id and self._now >= self._reset_at:
                self._send_reset()
            return
        try:
            plaintext = self._recv.decrypt_with_ad(b"", body)
        except DecryptError:
            raise SessionError(
                "control record failed to decrypt: tampered, dropped, reordered or replayed"
            ) from None
        self._recv.rekey()
        self._heard()
        self._handle_record(*decode_record(plaintext))

    def _receive_while_confirming(self, body: bytes) -> None:
        """A, after HS3: old-key records first (renewal), then B's HELLO."""
        assert self._pending is not None
        if self._recv is not None and self._hs_renew:
            try:
                plaintext = self._recv.decrypt_with_ad(b"", body)
            except DecryptError:
                pass
            else:
                self._recv.rekey()
                self._heard()
                self._handle_record(*decode_record(plaintext))
                return
        pair = self._pending
        try:
            plaintext = pair.recv.decrypt_with_ad(b"", body)
        except DecryptError:
            if self._hs_renew:
                raise SessionError(
                    "control record failed to decrypt while renewing the keys"
                ) from None
            return  # a record of the session before this fresh one: ignore
        pair.recv.rekey()
        rtype, hello = decode_record(plaintext)
        if rtype != RecordType.HELLO:
            raise SessionError("first record after the handshake is not HELLO")
        instance, old_count, next_unacked = _parse_hello_body(hello)
        hs = self._hs
        assert hs is not None
        if self._hs_renew:
            assert self._recv is not None
            if self._recv.nonce != old_count:
                raise SessionError("records were lost while renewing the keys")
        if not self._check_peer(hs):
            return
        self._send, self._recv = pair.send, pair.recv
        self._note_peer(instance, next_unacked)
        self._establish(hs, 0)

    def _heard(self) -> None:
        self._last_heard = self._now
        self._probe_sent = None

    def _note_peer(self, instance: int, first_unacked: int) -> None:
        """Everything the peer sent before ``first_unacked`` was acked, so shown."""
        if instance != self._peer_instance:
            self._peer_instance = instance
            self._peer_last_seq = first_unacked - 1
            self._refused.clear()
        else:
            self._peer_last_seq = max(self._peer_last_seq, first_unacked - 1)
        self._reset_partial()

    def _handle_record(self, rtype: int, body: bytes) -> None:
        if rtype == RecordType.TEXT:
            self._on_text(body)
        elif rtype == RecordType.ACK:
            (seq,) = _unpack(_U64, body, "ACK")
            if self._unacked.pop(seq, None) is not None:
                self._events.append(TextDelivered(seq))
        elif rtype == RecordType.TEXT_REFUSED:
            if len(body) < _U64.size:
                raise SessionError("TEXT_REFUSED record too short")
            (seq,) = _U64.unpack_from(body)
            if self._unacked.pop(seq, None) is not None:
                reason = body[_U64.size :].decode("utf-8", errors="replace")
                self._events.append(TextRejected(seq, reason or "refused by the other side"))
        elif rtype == RecordType.PING:
            self._emit_record(RecordType.PONG, b"")
        elif rtype == RecordType.PONG:
            pass  # hearing it was the point
        elif rtype == RecordType.FILE_OFFER:
            self._on_offer(body)
        elif rtype == RecordType.FILE_ACCEPT:
            file_id, start = _unpack(_ID_INDEX, body, "FILE_ACCEPT")
            self._on_accept(file_id, start)
        elif rtype == RecordType.FILE_ACK:
            file_id, upto = _unpack(_ID_INDEX, body, "FILE_ACK")
            self._on_file_ack(file_id, upto)
        elif rtype == RecordType.FILE_DONE:
            (file_id,) = _unpack(_U64, body, "FILE_DONE")
            out = self._out_files.pop(file_id, None)
            if out is not None:
                self._events.append(FileProgress(file_id, True, out.size, out.size))
                self._events.append(FileDelivered(file_id))
        elif rtype in (RecordType.FILE_REJECT, RecordType.FILE_CANCEL):
            self._on_reject(rtype, body)
        elif rtype == RecordType.REHANDSHAKE:
            if self.seat is Seat.A and self._phase is _Phase.ESTABLISHED:
                self._renew()
        elif rtype == RecordType.HELLO:
            raise SessionError("unexpected HELLO")
        else:
            raise SessionError(f"unknown control record type {rtype}")

    def _on_text(self, body: bytes) -> None:
        if len(body) < TEXT_HEADER.size:
            raise SessionError("TEXT record too short")
        seq, flags = TEXT_HEADER.unpack_from(body)
        part = body[TEXT_HEADER.size :]
        if self._partial_seq is not None and self._partial_seq != seq:
            raise SessionError("TEXT parts of two messages interleaved")
        self._partial_seq = seq
        self._partial_size += len(part)
        if self._partial_size <= self.max_text:
            self._partial_text += part
        else:
            self._partial_text.clear()  # counted from here on, never held
        if not flags & TEXT_FINAL:
            return
        size = self._partial_size
        data = bytes(self._partial_text)
        self._reset_partial()
        if seq > self._peer_last_seq + 1:
            # Only seq == last + 1 is shown, and only shown texts are acked:
            # so "delivered" can never be reported for a text that was lost.
            raise SessionError("texts were lost in transit (sequence gap)")
        if seq == self._peer_last_seq + 1:
            self._peer_last_seq = seq
            refusal = _refuse_text(data, size, self.max_text)
            if refusal is None:
                self._events.append(TextReceived(seq, data.decode("utf-8")))
            else:
                # A sender that broke the rules: the item fails, not the
                # session (which would only bring the same text back after
                # every handshake, forever).  TEXT_REFUSED stops the resends.
                self._events.append(TextRefused(seq, size, refusal))
                self._refused[seq] = refusal
                while len(self._refused) > MAX_REFUSED_REMEMBERED:
                    del self._refused[next(iter(self._refused))]
        refused = self._refused.get(seq)
        if refused is None:
            self._emit_record(RecordType.ACK, _U64.pack(seq))
        else:  # also for a re-sent copy: it must never look delivered
            self._emit_record(RecordType.TEXT_REFUSED, _U64.pack(seq) + refused.encode()[:512])

    def _reset_partial(self) -> None:
        self._partial_seq = None
        self._partial_text.clear()
        self._partial_size = 0

    def _on_offer(self, body: bytes) -> None:
        if len(body) < _OFFER.size:
            raise SessionError("FILE_OFFER record too short")
        file_id, size, key, salt, name_len = _OFFER.unpack_from(body)
        raw_name = body[_OFFER.size :]
        if len(raw_name) != name_len or not 0 < name_len <= MAX_FILE_NAME:
            raise SessionError("FILE_OFFER has a bad name length")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise SessionError("FILE_OFFER name is not valid UTF-8") from None
        inc = self._in_files.get(file_id)
        if inc is None:
            active = sum(
                1
                for i in self._in_files.values()
                if i.state in (_InState.PENDING, _InState.RECEIVING)
            )
            if active >= MAX_OPEN_INCOMING:
                reason = "too many transfers open at once"
                self._emit_record(
                    RecordType.FILE_REJECT, _reason_body(file_id, FileCode.DECLINED, reason)
                )
                return
            self._in_files[file_id] = _Incoming(
                file_id=file_id,
                name=name,
                size=size,
                key=FileKey(key=key, salt=salt),
                chunks=chunk_count(size),
            )
            self._forget_finished()
            self._events.append(FileOffered(file_id, name, size))
        elif inc.state is _InState.RECEIVING:
            self._request_from(inc)
        elif inc.state is _InState.DONE:
            self._emit_record(RecordType.FILE_DONE, _U64.pack(file_id))
        elif inc.state is _InState.SAVING:
            pass  # FILE_DONE or FILE_REJECT follows when the glue has decided
        elif inc.state is _InState.REJECTED:
            self._emit_record(RecordType.FILE_REJECT, _reason_body(file_id, inc.reject_code, ""))
        # PENDING: the user is still deciding; the first offer's event stands.

    def _forget_finished(self) -> None:
        """Keep the memory of finished transfers bounded (oldest go first)."""
        finished = [
            fid
            for fid, inc in self._in_files.items()
            if inc.state in (_InState.DONE, _InState.REJECTED)
        ]
        for fid in finished[: max(0, len(finished) - MAX_FINISHED_INCOMING)]:
            del self._in_files[fid]

    def _on_accept(self, file_id: int, start: int) -> None:
        out = self._out_files.get(file_id)
        if out is None:
            # Finished or cancelled here; the cancel may have been lost.
            reason = "no such transfer"
            self._emit_record(
                RecordType.FILE_CANCEL, _reason_body(file_id, FileCode.CANCELLED, reason)
            )
            return
        if start > out.chunks:
            raise SessionError("FILE_ACCEPT starts past the end of the file")
        out.state = _OutState.SENDING
        out.acked = max(out.acked, start)
        self._events.append(SendChunks(file_id, start))

    def _on_file_ack(self, file_id: int, upto: int) -> None:
        out = self._out_files.get(file_id)
        if out is None:
            self._on_accept(file_id, 0)  # answers with FILE_CANCEL
            return
        if upto > out.acked:
            out.acked = min(upto, out.chunks)
            done = min(out.acked * CHUNK_SIZE, out.size)
            self._events.append(FileProgress(file_id, True, done, out.size))

    def _on_reject(self, rtype: int, body: bytes) -> None:
        if len(body) < _ID_CODE.size:
            raise SessionError("FILE_REJECT/FILE_CANCEL record too short")
        file_id, code = _ID_CODE.unpack_from(body)
        reason = body[_ID_CODE.size :].decode("utf-8", errors="replace")
        if rtype == RecordType.FILE_REJECT:
            if self._out_files.pop(file_id, None) is not None:
                self._events.append(FileFailed(file_id, True, code, reason or _code_text(code)))
            return
        inc = self._in_files.get(file_id)
        if inc is not None and inc.state in (_InState.PENDING, _InState.RECEIVING):
            self._close_incoming(inc, code)
            self._events.append(FileFailed(file_id, False, code, reason or _code_text(code)))

    def _close_incoming(
        self, inc: _Incoming, code: int, state: _InState = _InState.REJECTED
    ) -> None:
        inc.state = state
        inc.reject_code = code
        inc.decryptor = None

    def _abort_incoming(self, inc: _Incoming, code: FileCode, reason: str) -> None:
        self._close_incoming(inc, int(code))
        self._events.append(FileFailed(inc.file_id, False, int(code), reason))
        self._emit_record(RecordType.FILE_REJECT, _reason_body(inc.file_id, code, reason))

    # -- sending records ----------------------------------------------------

    def _send_offer(self, out: _Outgoing) -> None:
        name = out.name.encode("utf-8")
        body = _OFFER.pack(out.file_id, out.size, out.key.key, out.key.salt, len(name)) + name
        self._emit_record(RecordType.FILE_OFFER, body)

    def _emit_text(self, seq: int, data: bytes) -> None:
        parts = [data[i : i + TEXT_PART] for i in range(0, len(data), TEXT_PART)] or [b""]
        for i, part in enumerate(parts):
            flags = TEXT_FINAL if i == len(parts) - 1 else 0
            self._emit_record(RecordType.TEXT, TEXT_HEADER.pack(seq, flags) + part)

    def _emit_record(self, rtype: RecordType, body: bytes) -> None:
        """Send now if established, else hold until the next handshake completes."""
        self._emit_raw(encode_record(rtype, body))

    def _emit_raw(self, record: bytes) -> None:
        send = self._send
        if send is None or self._phase is not _Phase.ESTABLISHED:
            self._queue.append(record)
            return
        ciphertext = send.encrypt_with_ad(b"", record)
        send.rekey()
        self._records += 1
        self._outgoing.append((Lane.CONTROL, bytes([Envelope.DATA]) + ciphertext))

    # -- failure ------------------------------------------------------------

    def _drop_keys(self) -> None:
        """Forget the session and any handshake; unacked items go again later."""
        self._hs = None
        self._pending = None
        self._send = self._recv = None
        self._queue.clear()
        self._reset_partial()
        self._probe_sent = None
        self._resend = True

    def _fail(
        self, reason: str, *, tell_peer: bool = True, why: ResetReason = ResetReason.UNSPECIFIED
    ) -> None:
        self._events.append(SessionFailed(reason))
        self._reset_why = int(why)
        if self._phase is _Phase.BLOCKED:
            self._drop_keys()
            return
        if self.seat is Seat.B:
            self._reset_id = self._session_id if self._send is not None else self._hs_id
        self._drop_keys()
        self._phase = _Phase.HANDSHAKE if self._peer_online else _Phase.OFFLINE
        self._failures += 1
        if not self._peer_online:
            return
        if self.seat is Seat.B:
            # Only A can start a handshake; tell it at once (and again later,
            # in case this is lost).  RESET is unauthenticated on purpose: all
            # it can do is cause a handshake, which a relay can cause anyway
            # by dropping frames.
            if tell_peer and self._reset_id:
                self._send_reset()
        elif self._failures == 1:
            self._start_handshake()
        else:
            # Repeated failures (wrong secret, an attacker in the middle):
            # back off so the two sides do not spin.
            self._retry_at = self._now + min(RETRY_MAX, 2.0 ** (self._failures - 1))


_REGENERATED = frozenset({RecordType.TEXT, RecordType.FILE_OFFER})

_SUPERSEDES: dict[Envelope, frozenset[int]] = {
    # A new HS1 starts over: the old handshake's HS1 and HS3 are moot.
    Envelope.HS1: frozenset({Envelope.HS1, Envelope.HS3}),
    # B answers only its latest HS1; A accepts only its current hs_id.
    Envelope.HS2: frozenset({Envelope.HS2}),
    Envelope.HS3: frozenset({Envelope.HS3}),
    Envelope.RESET: frozenset({Envelope.RESET}),
}


class _VersionMismatch(SessionError):
    """The peer's handshake names another session version."""


_RESET_SENTENCES: dict[int, str] = {
    ResetReason.UNSPECIFIED: "the peer could not continue the session",
    ResetReason.AUTHENTICATION: (
        "the other side could not authenticate this one: the two links' room secrets "
        "differ (was a link changed?), or someone is in the middle"
    ),
    ResetReason.VERSION: "the other side runs another version of the m42 session protocol",
}


def _hs_payload(renew: bool) -> bytes:
    return HS_PAYLOAD.pack(HS_RENEW if renew else HS_FRESH, SESSION_VERSION)


def _parse_hs_payload(payload: bytes, which: str) -> bool:
    """The renew flag of a HS1/HS2 payload.

    Raises:
        _VersionMismatch: the peer speaks another session version (a one-byte
            payload is protocol 1's).
        SessionError: the payload is malformed.
    """
    if len(payload) == 1 and payload[0] in (HS_FRESH, HS_RENEW):
        raise _VersionMismatch(
            "the other person's m42 speaks session protocol 1, this one 2: "
            "both need the same m42 version"
        )
    if len(payload) != HS_PAYLOAD.size:
        raise SessionError(f"handshake message {which} has a bad payload")
    flag: int
    version: int
    flag, version = HS_PAYLOAD.unpack(payload)
    if version != SESSION_VERSION:
        raise _VersionMismatch(
            f"the other person's m42 speaks session protocol {version}, this one "
            f"{SESSION_VERSION}: both need the same m42 version"
        )
    if flag not in (HS_FRESH, HS_RENEW):
        raise SessionError(f"handshake message {which} has a bad payload")
    return flag == HS_RENEW


def _unpack(st: struct.Struct, body: bytes, name: str) -> tuple[int, ...]:
    if len(body) != st.size:
        raise SessionError(f"{name} record has a bad length")
    return st.unpack(body)


def _reason_body(file_id: int, code: int, reason: str) -> bytes:
    return _ID_CODE.pack(file_id, int(code)) + reason.encode("utf-8")[:512]


def _draw_id(random: Callable[[int], bytes]) -> int:
    """A handshake id; never 0, which means "none"."""
    return HS_ID.unpack(random(4))[0] or 1


def _parse_hello_body(body: bytes) -> tuple[int, int, int]:
    if len(body) != _HELLO.size:
        raise SessionError("HELLO has a bad length")
    instance, old_count, first_unacked = _HELLO.unpack(body)
    if first_unacked < 1:
        raise SessionError("HELLO names seq 0")
    return instance, old_count, first_unacked


def _parse_hello(plaintext: bytes) -> tuple[int, int, int]:
    rtype, body = decode_record(plaintext)
    if rtype != RecordType.HELLO:
        raise SessionError("handshake message 3 carries no HELLO")
    return _parse_hello_body(body)


def _refuse_text(data: bytes, size: int, cap: int) -> str | None:
    """Why a complete text cannot be shown, or None when it can."""
    if size > cap:
        return f"a text of {size} bytes, over the {cap}-byte cap"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "a text that is not valid UTF-8"
    return None


def _code_text(code: int) -> str:
    try:
        return FileCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"code {code}"
