// The end-to-end session both m42 clients run (sans-IO): the facade.
// Python twin: m42d/session/__init__.py. Normative text: docs/protocol.md,
// "End-to-end session".
//
// Callers import from here; the modules behind it each hold one part of the
// machine, as in the twin:
// * records.js: envelopes, records and their bodies;
// * events.js: what the machine tells the user interface;
// * keys.js: the key store interface, the psk and the prologue;
// * texts.js: the outbox of our texts and the inbox of the peer's;
// * files.js: outgoing and incoming file transfers;
// * phases.js: the session's phases and their one transition table;
// * handshake.js: handshakes, keys, pinning, RESET and back-off;
// * machine.js: Session, which ties them together (and says how its async
//   methods keep the twin's ordering).

export {
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
} from "./events.js";
export { FILE_ACK_EVERY, MAX_BAD_CHUNKS, MAX_FINISHED_INCOMING, MAX_OPEN_INCOMING } from "./files.js";
export { RETRY_MAX } from "./handshake.js";
export { MemoryKeyStore, PROLOGUE_PREFIX, PSK_INFO, derivePsk, prologue } from "./keys.js";
export { Session } from "./machine.js";
export { Phase } from "./phases.js";
export {
  BULK_HEADER,
  DEFAULT_MAX_TEXT,
  Envelope,
  FileCode,
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
  RecordType,
  ResetReason,
  SESSION_VERSION,
  SessionError,
  TEXT_FINAL,
  TEXT_HEADER,
  TEXT_PART,
  decodeRecord,
  encodeRecord,
} from "./records.js";
export { MAX_REFUSED_REMEMBERED } from "./texts.js";

/** @typedef {import("./events.js").Event} Event */
/** @typedef {import("./keys.js").KeyStore} KeyStore */
/** @typedef {import("./machine.js").SessionOptions} SessionOptions */
