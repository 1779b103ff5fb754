// The bytes two m42 clients exchange: envelopes, records and record bodies.
// Python twin: m42d/session/records.py. Normative text: docs/protocol.md,
// "End-to-end session".
//
// This module is the byte layouts and nothing else. Every function is pure:
// no keys, no state, no clock. Encoders take values and return bytes;
// decoders take bytes from the peer and either return values or throw
// SessionError with the twin's message, which the machine reports as the
// reason its session failed.
//
// * A CONTROL payload is an envelope byte and what follows it (HS1..HS3 with
//   a handshake id, DATA with one sealed record, RESET with an id and a
//   reason).
// * A record, before sealing, is `type:u8 | length:u16 | body | zero padding`
//   to the next multiple of 256 bytes; decodeRecord() refuses non-zero padding.
// * A BULK payload is `file_id:u64 | index:u64 | STREAM chunk`.
// * u64 fields (seq, instance, file ids, sizes, chunk indexes) are BigInt;
//   hs_id is a u32 Number; codes are u16 Numbers.

import { concat, isAllZero, readU16, readU32, readU64, u16, u32, u64 } from "../bytes.js";
import { LocalProtocolError, RemoteProtocolError } from "../errors.js";
import { hasLoneSurrogate } from "../text.js";

/** @typedef {import("../bytes.js").Bytes} Bytes */

/** Version of the end-to-end session; the relay's wire version is separate. */
export const SESSION_VERSION = 3;

export const PAD_BUCKET = 256;
export const MAX_NOISE_PLAINTEXT = 65535 - 16;
export const MAX_RECORD = Math.floor(MAX_NOISE_PLAINTEXT / PAD_BUCKET) * PAD_BUCKET; // 65280
export const RECORD_HEADER = 3; // type:u8, body length:u16
export const MAX_RECORD_BODY = MAX_RECORD - RECORD_HEADER; // 65277

/** The protocol's cap on one text, in UTF-8 bytes. */
export const MAX_TEXT = 1024 * 1024;
export const DEFAULT_MAX_TEXT = MAX_TEXT;
export const TEXT_HEADER = 9; // seq:u64, flags:u8
export const TEXT_FINAL = 0x01;
export const TEXT_PART = MAX_RECORD_BODY - TEXT_HEADER;
/** Bytes of UTF-8 in a TEXT_REFUSED, FILE_REJECT or FILE_CANCEL reason. */
export const MAX_REASON = 512;

export const BULK_HEADER = 16; // file id:u64, chunk index:u64
export const MAX_FILE_NAME = 1024;

export const HS_ID = 4; // handshake id chosen by A in HS1, echoed in HS2/HS3
export const HS_FRESH = 0; // a new session (unacked items are re-sent)
export const HS_RENEW = 1; // new keys for a live session (nothing was lost)
export const HS_PAYLOAD = 2; // HS1/HS2 payload: mode:u8, session version:u8
export const RESET_BODY = 5; // RESET: id:u32, reason:u8

const HELLO_BODY = 24; // instance, records on the old keys, first unacked
const OFFER_HEADER = 8 + 8 + 32 + 32 + 2; // file id, size, file key, salt, name length
const ID_INDEX = 16; // FILE_ACCEPT, FILE_ACK: file id, chunk index
const ID_CODE = 10; // FILE_REJECT, FILE_CANCEL: file id, code

/** First byte of every CONTROL payload: which Noise message follows. */
export const Envelope = Object.freeze({ HS1: 1, HS2: 2, HS3: 3, DATA: 4, RESET: 5 });

/** Type of a decrypted control record. */
export const RecordType = Object.freeze({
  HELLO: 0x01,
  TEXT: 0x02,
  ACK: 0x03,
  REHANDSHAKE: 0x04,
  PING: 0x05,
  PONG: 0x06,
  TEXT_REFUSED: 0x07,
  FILE_OFFER: 0x10,
  FILE_ACCEPT: 0x11,
  FILE_REJECT: 0x12,
  FILE_ACK: 0x13,
  FILE_DONE: 0x14,
  FILE_CANCEL: 0x15,
});

/** Why a file was rejected or cancelled; stable numbers on the wire. */
export const FileCode = Object.freeze({
  DECLINED: 1,
  TOO_LARGE: 2,
  NO_SPACE: 3,
  MISMATCH: 4, // the data did not match the offer (protocol 1 called it "hash mismatch")
  CANCELLED: 5,
  WRITE_FAILED: 6,
  BAD_NAME: 7,
});

/** Why B's session broke, sent in RESET so that A can say it too (unauthenticated). */
export const ResetReason = Object.freeze({
  UNSPECIFIED: 0,
  AUTHENTICATION: 1, // HS3 failed: the room secrets differ, or someone is in the middle
  VERSION: 2, // the initiator speaks another session version
});

/** The peer (or the relay between us) broke the end-to-end protocol. */
export class SessionError extends RemoteProtocolError {}

/** The peer's handshake names another session version (RESET reason 2). */
export class VersionMismatch extends SessionError {}

/**
 * Where a part of the machine hands a record body to be sealed (or held) and
 * sent; it resolves once the record is sealed or queued, in call order.
 * @typedef {(type: number, body: Uint8Array) => Promise<void>} RecordSender
 */

const UTF8 = new TextEncoder();
const STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const LENIENT = new TextDecoder("utf-8", { ignoreBOM: true });

// -- records -------------------------------------------------------------------

/**
 * Frame and pad one control record (before Noise encryption).
 * @param {number} type
 * @param {Uint8Array} body
 * @returns {Bytes}
 */
export function encodeRecord(type, body) {
  if (body.length > MAX_RECORD_BODY) {
    throw new LocalProtocolError(`control record body of ${body.length} bytes exceeds the cap`);
  }
  const padded = Math.ceil((RECORD_HEADER + body.length) / PAD_BUCKET) * PAD_BUCKET;
  const out = new Uint8Array(padded);
  out[0] = type;
  out.set(u16(body.length), 1);
  out.set(body, RECORD_HEADER);
  return out;
}

/**
 * Inverse of encodeRecord(); the padding must be zeros.
 * @param {Uint8Array} plaintext
 * @returns {{type: number, body: Bytes}}
 */
export function decodeRecord(plaintext) {
  if (plaintext.length < RECORD_HEADER || plaintext.length % PAD_BUCKET) {
    throw new SessionError("control record has a bad length");
  }
  const end = RECORD_HEADER + readU16(plaintext, 1);
  if (end > plaintext.length || !isAllZero(plaintext.subarray(end))) {
    throw new SessionError("control record has a bad length or padding");
  }
  return { type: plaintext[0], body: plaintext.slice(RECORD_HEADER, end) };
}

/**
 * A body of exactly one u64 (ACK, FILE_DONE).
 * @param {Uint8Array} body
 * @param {string} name
 * @returns {bigint}
 */
export function decodeU64Body(body, name) {
  if (body.length !== 8) throw new SessionError(`${name} record has a bad length`);
  return readU64(body);
}

/**
 * A FILE_ACCEPT or FILE_ACK body: file id and chunk index.
 * @param {Uint8Array} body
 * @param {string} name
 * @returns {[bigint, bigint]}
 */
export function decodeIdIndex(body, name) {
  if (body.length !== ID_INDEX) throw new SessionError(`${name} record has a bad length`);
  return [readU64(body), readU64(body, 8)];
}

/**
 * @param {bigint} fileId
 * @param {bigint} index
 * @returns {Bytes}
 */
export function idIndexBody(fileId, index) {
  return concat(u64(fileId), u64(index));
}

// -- the handshake's payloads ----------------------------------------------------

/**
 * The HS1/HS2 Noise payload: fresh or renew, and our session version.
 * @param {boolean} renew
 * @returns {Bytes}
 */
export function hsPayload(renew) {
  return Uint8Array.of(renew ? HS_RENEW : HS_FRESH, SESSION_VERSION);
}

/**
 * The renew flag of a HS1/HS2 payload.
 * @param {Uint8Array} payload
 * @param {string} which "1" or "2"
 * @returns {boolean}
 * @throws {VersionMismatch} the peer speaks another session version (a
 *   one-byte payload is protocol 1's)
 * @throws {SessionError} the payload is malformed
 */
export function decodeHsPayload(payload, which) {
  if (payload.length === 1 && (payload[0] === HS_FRESH || payload[0] === HS_RENEW)) {
    throw new VersionMismatch(
      `the other person's m42 speaks session protocol 1, this one ${SESSION_VERSION}: both need the same m42 version`,
    );
  }
  if (payload.length !== HS_PAYLOAD) throw new SessionError(`handshake message ${which} has a bad payload`);
  const [flag, version] = payload;
  if (version !== SESSION_VERSION) {
    throw new VersionMismatch(
      `the other person's m42 speaks session protocol ${version}, this one ${SESSION_VERSION}: ` +
        "both need the same m42 version",
    );
  }
  if (flag !== HS_FRESH && flag !== HS_RENEW) throw new SessionError(`handshake message ${which} has a bad payload`);
  return flag === HS_RENEW;
}

/**
 * The HELLO body: who is numbering texts, and what the peer may forget.
 * `instance` names the sender's text numbering, `oldCount` is (when
 * renewing) the number of records it sent on the old keys, and
 * `firstUnacked` the lowest text seq it still waits an ACK for.
 */
export class Hello {
  /**
   * @param {bigint} instance
   * @param {bigint} oldCount
   * @param {bigint} firstUnacked
   */
  constructor(instance, oldCount, firstUnacked) {
    this.instance = instance;
    this.oldCount = oldCount;
    this.firstUnacked = firstUnacked;
    Object.freeze(this);
  }

  /** The padded HELLO record (HS3's payload, or B's first record on new keys). */
  encode() {
    return encodeRecord(RecordType.HELLO, concat(u64(this.instance), u64(this.oldCount), u64(this.firstUnacked)));
  }
}

/**
 * A HELLO record's body.
 * @param {Uint8Array} body
 * @returns {Hello}
 */
export function decodeHello(body) {
  if (body.length !== HELLO_BODY) throw new SessionError("HELLO has a bad length");
  const hello = new Hello(readU64(body), readU64(body, 8), readU64(body, 16));
  if (hello.firstUnacked < 1n) throw new SessionError("HELLO names seq 0");
  return hello;
}

/**
 * HS3's Noise payload: A's padded HELLO record.
 * @param {Uint8Array} plaintext
 * @returns {Hello}
 */
export function decodeHs3Payload(plaintext) {
  const { type, body } = decodeRecord(plaintext);
  if (type !== RecordType.HELLO) throw new SessionError("handshake message 3 carries no HELLO");
  return decodeHello(body);
}

/**
 * The CONTROL payload carrying one Noise handshake message.
 * @param {number} envelope
 * @param {number} hsId
 * @param {Uint8Array} message
 * @returns {Bytes}
 */
export function handshakeMessage(envelope, hsId, message) {
  return concat(Uint8Array.of(envelope), u32(hsId), message);
}

/**
 * The handshake id at the start of a HS1..HS3 body (after the envelope byte).
 * @param {Uint8Array} body
 * @returns {number}
 */
export function readHsId(body) {
  if (body.length < HS_ID) throw new SessionError("handshake message too short");
  return readU32(body);
}

/**
 * The CONTROL payload of a RESET naming a session or handshake id.
 * @param {number} named
 * @param {number} why
 * @returns {Bytes}
 */
export function resetMessage(named, why) {
  return concat(Uint8Array.of(Envelope.RESET), u32(named), Uint8Array.of(why));
}

// -- texts -------------------------------------------------------------------------

/**
 * The TEXT record bodies of one text: parts of at most TEXT_PART bytes, the last final.
 * @param {bigint} seq
 * @param {Uint8Array} data
 * @returns {Bytes[]}
 */
export function textBodies(seq, data) {
  /** @type {Uint8Array[]} */
  const parts = [];
  for (let i = 0; i < data.length; i += TEXT_PART) parts.push(data.subarray(i, i + TEXT_PART));
  if (parts.length === 0) parts.push(new Uint8Array(0));
  const last = parts.length - 1;
  return parts.map((part, i) => concat(u64(seq), Uint8Array.of(i === last ? TEXT_FINAL : 0), part));
}

/**
 * A TEXT body: seq, whether this is the final part, and its UTF-8 bytes.
 * @param {Uint8Array} body
 * @returns {{seq: bigint, final: boolean, part: Bytes}}
 */
export function decodeText(body) {
  if (body.length < TEXT_HEADER) throw new SessionError("TEXT record too short");
  return { seq: readU64(body), final: (body[8] & TEXT_FINAL) !== 0, part: body.slice(TEXT_HEADER) };
}

/**
 * UTF-8 of `text` cut to `limit` bytes (a cut may split a character; the
 * receiver decodes leniently, as the twin does).
 * @param {string} text
 * @param {number} limit
 */
function cutUtf8(text, limit) {
  return UTF8.encode(text).subarray(0, limit);
}

/**
 * @param {bigint} seq
 * @param {string} reason
 * @returns {Bytes}
 */
export function textRefusedBody(seq, reason) {
  return concat(u64(seq), cutUtf8(reason, MAX_REASON));
}

/**
 * @param {Uint8Array} body
 * @returns {{seq: bigint, reason: string}}
 */
export function decodeTextRefused(body) {
  if (body.length < 8) throw new SessionError("TEXT_REFUSED record too short");
  return { seq: readU64(body), reason: LENIENT.decode(body.subarray(8)) };
}

/**
 * Strict UTF-8 (the whole text must be valid), or null.
 * @param {Uint8Array} data
 * @returns {string | null}
 */
export function decodeUtf8(data) {
  try {
    return STRICT.decode(data);
  } catch {
    return null;
  }
}

/**
 * UTF-8 of a string this side sends; a lone surrogate has none.
 * @param {string} text
 * @param {string} what for the message, e.g. "the text"
 * @returns {Bytes}
 * @throws {LocalProtocolError}
 */
export function encodeUtf8(text, what) {
  if (typeof text !== "string" || hasLoneSurrogate(text)) {
    throw new LocalProtocolError(`${what} is not valid UTF-8`);
  }
  return UTF8.encode(text);
}

// -- files -------------------------------------------------------------------------

/** A FILE_OFFER body: the file's id, size, STREAM key and salt, and name. */
export class Offer {
  /** @type {Bytes} */ #key;
  /** @type {Bytes} */ #salt;

  /**
   * @param {bigint} fileId
   * @param {bigint} size
   * @param {Bytes} key 32 bytes
   * @param {Bytes} salt 32 bytes
   * @param {string} name
   */
  constructor(fileId, size, key, salt, name) {
    this.fileId = fileId;
    this.size = size;
    this.#key = key;
    this.#salt = salt;
    this.name = name;
    Object.freeze(this);
  }

  get key() {
    return this.#key;
  }

  get salt() {
    return this.#salt;
  }

  encode() {
    const name = UTF8.encode(this.name);
    return concat(u64(this.fileId), u64(this.size), this.#key, this.#salt, u16(name.length), name);
  }
}

/**
 * @param {Uint8Array} body
 * @returns {Offer}
 */
export function decodeOffer(body) {
  if (body.length < OFFER_HEADER) throw new SessionError("FILE_OFFER record too short");
  const nameLength = readU16(body, OFFER_HEADER - 2);
  const rawName = body.subarray(OFFER_HEADER);
  if (rawName.length !== nameLength || !(nameLength > 0 && nameLength <= MAX_FILE_NAME)) {
    throw new SessionError("FILE_OFFER has a bad name length");
  }
  const name = decodeUtf8(rawName);
  if (name === null) throw new SessionError("FILE_OFFER name is not valid UTF-8");
  return new Offer(readU64(body), readU64(body, 8), body.slice(16, 48), body.slice(48, 80), name);
}

/**
 * A FILE_REJECT or FILE_CANCEL body; the reason is cut to MAX_REASON bytes.
 * @param {bigint} fileId
 * @param {number} code
 * @param {string} reason
 * @returns {Bytes}
 */
export function reasonBody(fileId, code, reason) {
  return concat(u64(fileId), u16(code), cutUtf8(reason, MAX_REASON));
}

/**
 * A FILE_REJECT or FILE_CANCEL body.
 * @param {Uint8Array} body
 * @returns {{fileId: bigint, code: number, reason: string}}
 */
export function decodeReason(body) {
  if (body.length < ID_CODE) throw new SessionError("FILE_REJECT/FILE_CANCEL record too short");
  return { fileId: readU64(body), code: readU16(body, 8), reason: LENIENT.decode(body.subarray(ID_CODE)) };
}

/**
 * A file code in words, for a reject or cancel that came without a reason.
 * @param {number} code
 * @returns {string}
 */
export function codeText(code) {
  for (const [name, value] of Object.entries(FileCode)) {
    if (value === code) return name.toLowerCase().replaceAll("_", " ");
  }
  return `code ${code}`;
}
