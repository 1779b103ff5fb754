"""The end-to-end session both m42 clients run (sans-IO): the facade.

Callers import from here; the modules behind it each hold one part of the
machine (docs/protocol.md, "End-to-end session", is the normative text):

* :mod:`~m42d.session.records`: envelopes, records and their bodies;
* :mod:`~m42d.session.events`: what the machine tells the user interface;
* :mod:`~m42d.session.keys`: the key store, the psk and the prologue;
* :mod:`~m42d.session.texts`: the outbox of our texts and the inbox of the peer's;
* :mod:`~m42d.session.files`: outgoing and incoming file transfers;
* :mod:`~m42d.session.phases`: the session's phases and their one transition table;
* :mod:`~m42d.session.handshake`: handshakes, keys, pinning, RESET and back-off;
* :mod:`~m42d.session.machine`: :class:`Session`, which ties them together;
* :mod:`~m42d.session.options`: :class:`SessionOptions`, its knobs as one typed value.
"""

from __future__ import annotations

from m42d.session.events import (
    Event,
    FileChunk,
    FileCompleted,
    FileDelivered,
    FileFailed,
    FileOffered,
    FileProgress,
    HandshakeComplete,
    PeerKeyChanged,
    SendChunks,
    SessionFailed,
    TextDelivered,
    TextReceived,
    TextRefused,
    TextRejected,
)
from m42d.session.files import (
    FILE_ACK_EVERY,
    MAX_BAD_CHUNKS,
    MAX_FINISHED_INCOMING,
    MAX_OPEN_INCOMING,
)
from m42d.session.handshake import RETRY_MAX
from m42d.session.keys import (
    PROLOGUE_PREFIX,
    PSK_INFO,
    KeyStore,
    MemoryKeyStore,
    derive_psk,
    prologue,
)
from m42d.session.machine import Session
from m42d.session.options import SessionOptions, open_session
from m42d.session.records import (
    BULK_HEADER,
    DEFAULT_MAX_TEXT,
    HS_FRESH,
    HS_ID,
    HS_PAYLOAD,
    HS_RENEW,
    MAX_FILE_NAME,
    MAX_NOISE_PLAINTEXT,
    MAX_RECORD,
    MAX_RECORD_BODY,
    MAX_TEXT,
    PAD_BUCKET,
    RECORD_HEADER,
    RESET_BODY,
    SESSION_VERSION,
    TEXT_FINAL,
    TEXT_HEADER,
    TEXT_PART,
    Envelope,
    FileCode,
    RecordType,
    ResetReason,
    SessionError,
    decode_record,
    encode_record,
)
from m42d.session.texts import MAX_REFUSED_REMEMBERED

__all__ = [
    "BULK_HEADER",
    "DEFAULT_MAX_TEXT",
    "FILE_ACK_EVERY",
    "HS_FRESH",
    "HS_ID",
    "HS_PAYLOAD",
    "HS_RENEW",
    "MAX_BAD_CHUNKS",
    "MAX_FILE_NAME",
    "MAX_FINISHED_INCOMING",
    "MAX_NOISE_PLAINTEXT",
    "MAX_OPEN_INCOMING",
    "MAX_RECORD",
    "MAX_RECORD_BODY",
    "MAX_REFUSED_REMEMBERED",
    "MAX_TEXT",
    "PAD_BUCKET",
    "PROLOGUE_PREFIX",
    "PSK_INFO",
    "RECORD_HEADER",
    "RESET_BODY",
    "RETRY_MAX",
    "SESSION_VERSION",
    "TEXT_FINAL",
    "TEXT_HEADER",
    "TEXT_PART",
    "Envelope",
    "Event",
    "FileChunk",
    "FileCode",
    "FileCompleted",
    "FileDelivered",
    "FileFailed",
    "FileOffered",
    "FileProgress",
    "HandshakeComplete",
    "KeyStore",
    "MemoryKeyStore",
    "PeerKeyChanged",
    "RecordType",
    "ResetReason",
    "SendChunks",
    "Session",
    "SessionError",
    "SessionFailed",
    "SessionOptions",
    "TextDelivered",
    "TextReceived",
    "TextRefused",
    "TextRejected",
    "decode_record",
    "derive_psk",
    "encode_record",
    "open_session",
    "prologue",
]
