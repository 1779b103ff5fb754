// Relay frames: the client <-> relay wire format, sans-IO, in the WebSocket form.
// Python twin: m42d/wire/ (the facade m42d.wire). Normative text: docs/protocol.md,
// "Relay wire format".
//
// Why ~850 lines: the relay wire format of docs/protocol.md in one place:
// every frame kind's class and codec share one table of body limits and one
// set of field codecs; split by kind, that table would be scattered over a
// dozen files. Much of it is JSDoc. (The twin is split along those shared
// parts instead, not by kind: kinds, limits, fields, frames, codec, decoder.)
//
// This module turns frame values into bytes and bytes into frame values and
// does nothing else: no WebSocket, no timers. The browser's connection code
// sends encode(frame) as one binary WebSocket message and hands every
// message it receives to decodeMessage().
//
// Rules and invariants (the twin's):
// * One binary WebSocket message is one frame, `kind:u8 | body`: encode() and
//   decode(). A text message is a protocol error, and so is an empty one.
//   The stream form (`length:u32 | kind | body`, for TCP+TLS and Unix
//   sockets) is only encoded here (encodeStream, for the spec's worked
//   examples): a browser has no byte streams, so it needs no stream decoder.
// * Every kind has a body-length range (BODY_LIMITS), judged in one place
//   before any field is read; so no message longer than MAX_FRAME bytes is
//   ever accepted, and a CONTROL or BULK payload is at most MAX_PAYLOAD.
// * Decoding is total: any input either yields a frame or throws WireError
//   (FrameTooLargeError for a body over its cap), never RangeError or
//   TypeError. Decoded frames own their bytes (copies, not views of the
//   message), so the caller may reuse its buffer.
// * Encoding validates with the same rules and throws LocalProtocolError: a
//   frame the peer's decoder would refuse is a bug on this side.
// * Text fields are strict UTF-8 both ways: a lone surrogate cannot be
//   encoded (TextEncoder would silently write U+FFFD), and overlong forms,
//   encoded surrogates and truncated sequences do not decode. A leading BOM is
//   kept, as Python keeps it.
// * Error messages name the kind and the rule, never the bytes of a payload,
//   token, ticket or secret, and are the twin's word for word; toString()
//   and toJSON() hide tokens and secrets and show payloads only by length.
// * Versions are carried, not judged: CREATE_ROOM and JOIN of any version
//   decode (a relay answers ERROR 415, not 400).
// * u32 and u16 fields are Numbers (exact); nothing on this layer is a u64.
// * Frames are classes, told apart with instanceof as the twin's with
//   isinstance; the twin's Error is ErrorFrame here (Error is JS's own).
// * Lanes: only BULK travels in the bulk lane; every other frame uses the
//   control lane, which the relay drains first.

import { concat, readU16, readU32, u16, u32 } from "./bytes.js";
import { LocalProtocolError, WireError } from "./errors.js";
import { hasLoneSurrogate } from "./text.js";
import { SEAT_BYTE, TICKET_SIZE, TOKEN_SIZE } from "./ticket.js";

/** @typedef {import("./bytes.js").Bytes} Bytes */
/** @typedef {import("./ticket.js").Seat} Seat */

/** Relay protocol version sent in CREATE_ROOM and JOIN. */
export const WIRE_VERSION = 2;
/** Largest CONTROL/BULK payload: a 64 KiB file chunk plus room for AEAD tag and header. */
export const MAX_PAYLOAD = 262144 + 64;
/** Largest frame: kind byte plus the largest body (and so the largest WebSocket message). */
export const MAX_FRAME = 1 + MAX_PAYLOAD;
export const LENGTH_PREFIX_SIZE = 4;
export const MAX_SECRET = 255;
export const MAX_PING_DATA = 32;
/** Cap, in UTF-8 bytes, of ERROR messages and GOAWAY reasons. */
export const MAX_TEXT = 1024;

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const JOINED_SIZE = 9;

/** The first byte of every frame; the numbers are part of the protocol. */
export const FrameKind = Object.freeze({
  CREATE_ROOM: 0x01,
  ROOM_CREATED: 0x02,
  JOIN: 0x03,
  JOINED: 0x04,
  PEER_UP: 0x05,
  PEER_DOWN: 0x06,
  BURN: 0x07,
  CONTROL: 0x10,
  BULK: 0x11,
  CREDIT: 0x12,
  PING: 0x20,
  PONG: 0x21,
  ERROR: 0x30,
  GOAWAY: 0x31,
});

/** @type {ReadonlyMap<number, string>} kind byte -> name, for messages */
const KIND_NAME = new Map(Object.entries(FrameKind).map(([name, kind]) => [kind, name]));

/** Which relay queue a frame waits in; CONTROL is always drained before BULK. */
export const Lane = Object.freeze({ CONTROL: "control", BULK: "bulk" });
/** @typedef {typeof Lane[keyof typeof Lane]} LaneName */

/** Numbers sent in ERROR frames. Stable public contract: never renumber. */
export const ErrorCode = Object.freeze({
  BAD_FRAME: 400,
  BAD_TOKEN: 401,
  CREDIT_EXCEEDED: 402,
  FORBIDDEN: 403,
  UNKNOWN_ROOM: 404,
  JOIN_TIMEOUT: 408,
  SEAT_TAKEN: 409,
  EXPIRED: 410,
  BURNED: 411,
  TOO_LARGE: 413,
  UNSUPPORTED_VERSION: 415,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  UNAVAILABLE: 503,
});

/** @type {ReadonlyMap<number, string>} the default sentence a relay sends with each code */
export const ERROR_SENTENCES = new Map([
  [ErrorCode.BAD_FRAME, "malformed frame"],
  [ErrorCode.BAD_TOKEN, "wrong seat token or seat"],
  [ErrorCode.CREDIT_EXCEEDED, "bulk sent past credit"],
  [ErrorCode.FORBIDDEN, "room creation needs the relay's creation secret"],
  [ErrorCode.UNKNOWN_ROOM, "ticket not issued by this relay"],
  [ErrorCode.JOIN_TIMEOUT, "no CREATE_ROOM or JOIN arrived in time"],
  [ErrorCode.SEAT_TAKEN, "this seat was taken over by a newer connection"],
  [ErrorCode.EXPIRED, "room expired"],
  [ErrorCode.BURNED, "room was burned"],
  [ErrorCode.TOO_LARGE, "frame too large"],
  [ErrorCode.UNSUPPORTED_VERSION, "unsupported protocol version"],
  [ErrorCode.RATE_LIMITED, "too many requests, slow down"],
  [ErrorCode.INTERNAL, "internal relay error"],
  [ErrorCode.UNAVAILABLE, "relay full or shutting down"],
]);

/**
 * A declared frame length or a variable-size body exceeds its cap. Separate
 * from plain WireError so a relay can answer ERROR 413 instead of 400.
 */
export class FrameTooLargeError extends WireError {}

/**
 * The ERROR code a relay sends for a decoding failure.
 * @param {WireError} exc
 * @returns {number}
 */
export function errorCodeFor(exc) {
  return exc instanceof FrameTooLargeError ? ErrorCode.TOO_LARGE : ErrorCode.BAD_FRAME;
}

/** @type {ReadonlyMap<number, readonly [number, number]>} inclusive body length range per kind */
export const BODY_LIMITS = new Map([
  [FrameKind.CREATE_ROOM, [1, 1 + MAX_SECRET]],
  [FrameKind.ROOM_CREATED, [TICKET_SIZE + 2 * TOKEN_SIZE, TICKET_SIZE + 2 * TOKEN_SIZE]],
  [FrameKind.JOIN, [2 + TICKET_SIZE + TOKEN_SIZE, 2 + TICKET_SIZE + TOKEN_SIZE]],
  [FrameKind.JOINED, [JOINED_SIZE, JOINED_SIZE]],
  [FrameKind.PEER_UP, [0, 0]],
  [FrameKind.PEER_DOWN, [0, 0]],
  [FrameKind.BURN, [0, 0]],
  [FrameKind.CONTROL, [1, MAX_PAYLOAD]],
  [FrameKind.BULK, [1, MAX_PAYLOAD]],
  [FrameKind.CREDIT, [4, 4]],
  [FrameKind.PING, [0, MAX_PING_DATA]],
  [FrameKind.PONG, [0, MAX_PING_DATA]],
  [FrameKind.ERROR, [2, 2 + MAX_TEXT]],
  [FrameKind.GOAWAY, [4, 4 + MAX_TEXT]],
]);

/**
 * Apply BODY_LIMITS; the one place that judges a body's size.
 * @param {number} kindByte
 * @param {number} n body length
 */
function checkBodyLength(kindByte, n) {
  const limits = BODY_LIMITS.get(kindByte);
  const name = KIND_NAME.get(kindByte);
  if (limits === undefined || name === undefined) {
    throw new WireError(`unknown frame kind 0x${kindByte.toString(16).padStart(2, "0")}`);
  }
  const [lo, hi] = limits;
  if (lo <= n && n <= hi) return;
  if (lo === hi) throw new WireError(`${name} body must be ${lo} bytes, got ${n}`);
  if (n > hi) throw new FrameTooLargeError(`${name} body must be at most ${hi} bytes, got ${n}`);
  throw new WireError(`${name} body must be at least ${lo} bytes, got ${n}`);
}

// -- encoding helpers: validate like the decoder would, but blame ourselves --

/**
 * @param {number} kind
 * @param {string} field
 * @param {unknown} value
 * @param {number} lo
 * @param {number} hi
 * @returns {Uint8Array}
 */
function encBytes(kind, field, value, lo, hi) {
  const name = KIND_NAME.get(kind);
  if (!(value instanceof Uint8Array)) {
    throw new LocalProtocolError(`cannot encode ${name}: ${field} must be bytes`);
  }
  const n = value.length;
  if (n < lo || n > hi) {
    const rule = lo === hi ? `${lo} bytes` : `${lo}..${hi} bytes`;
    throw new LocalProtocolError(`cannot encode ${name}: ${field} must be ${rule}, got ${n}`);
  }
  return value;
}

/**
 * @param {number} kind
 * @param {string} field
 * @param {unknown} value
 * @param {number} lo
 * @param {number} hi
 * @returns {number}
 */
function encUint(kind, field, value, lo, hi) {
  if (typeof value !== "number" || !Number.isInteger(value) || value < lo || value > hi) {
    throw new LocalProtocolError(`cannot encode ${KIND_NAME.get(kind)}: ${field} must be an int in ${lo}..${hi}`);
  }
  return value;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * @param {number} kind
 * @param {string} field
 * @param {unknown} value
 * @returns {Bytes}
 */
function encText(kind, field, value) {
  const name = KIND_NAME.get(kind);
  if (typeof value !== "string") throw new LocalProtocolError(`cannot encode ${name}: ${field} must be str`);
  if (hasLoneSurrogate(value)) {
    throw new LocalProtocolError(`cannot encode ${name}: ${field} is not valid UTF-8`);
  }
  const raw = ENCODER.encode(value);
  if (raw.length > MAX_TEXT) {
    throw new LocalProtocolError(
      `cannot encode ${name}: ${field} must be at most ${MAX_TEXT} UTF-8 bytes, got ${raw.length}`,
    );
  }
  return raw;
}

/**
 * @param {number} kind
 * @param {string} field
 * @param {Bytes} body
 * @param {number} start
 * @returns {string}
 */
function decText(kind, field, body, start) {
  try {
    return DECODER.decode(body.subarray(start));
  } catch (exc) {
    throw new WireError(`${KIND_NAME.get(kind)} ${field} is not valid UTF-8`, { cause: exc });
  }
}

/** @param {Uint8Array} payload */
const lengthOnly = (payload) => `<${payload.length} bytes>`;

// -- frames -------------------------------------------------------------------
//
// Each frame class knows its body: encodeBody() validates and returns the body
// bytes, the static decodeBody() parses a body whose length already passed
// BODY_LIMITS. Construction does not validate: decoded frames are valid by
// construction, and frames built here are checked once, at encode time.
// Frames are frozen; tokens and secrets live in private fields behind getters
// so that neither console.log nor JSON shows them.

/** c->r: ask the relay for a new room. */
export class CreateRoom {
  static KIND = FrameKind.CREATE_ROOM;
  /** @type {Uint8Array} */ #creationSecret;

  /** @param {{version?: number, creationSecret?: Uint8Array}} [fields] */
  constructor({ version = WIRE_VERSION, creationSecret = new Uint8Array(0) } = {}) {
    this.version = version;
    this.#creationSecret = creationSecret;
    Object.freeze(this);
  }

  get kind() {
    return FrameKind.CREATE_ROOM;
  }

  get creationSecret() {
    return this.#creationSecret;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    const version = encUint(this.kind, "version", this.version, 0, 0xff);
    const secret = encBytes(this.kind, "creation_secret", this.#creationSecret, 0, MAX_SECRET);
    return concat(Uint8Array.of(version), secret);
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new CreateRoom({ version: body[0], creationSecret: body.slice(1) });
  }

  toString() {
    return `CreateRoom(version=${this.version})`;
  }

  toJSON() {
    return { kind: "CREATE_ROOM", version: this.version };
  }
}

/** r->c: the ticket and both seat tokens of a fresh room. */
export class RoomCreated {
  static KIND = FrameKind.ROOM_CREATED;
  /** @type {Uint8Array} */ #tokenA;
  /** @type {Uint8Array} */ #tokenB;

  /** @param {{ticket: Uint8Array, tokenA: Uint8Array, tokenB: Uint8Array}} fields */
  constructor({ ticket, tokenA, tokenB }) {
    this.ticket = ticket;
    this.#tokenA = tokenA;
    this.#tokenB = tokenB;
    Object.freeze(this);
  }

  get kind() {
    return FrameKind.ROOM_CREATED;
  }

  get tokenA() {
    return this.#tokenA;
  }

  get tokenB() {
    return this.#tokenB;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    const k = this.kind;
    return concat(
      encBytes(k, "ticket", this.ticket, TICKET_SIZE, TICKET_SIZE),
      encBytes(k, "token_a", this.#tokenA, TOKEN_SIZE, TOKEN_SIZE),
      encBytes(k, "token_b", this.#tokenB, TOKEN_SIZE, TOKEN_SIZE),
    );
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    const t = TICKET_SIZE;
    return new RoomCreated({
      ticket: body.slice(0, t),
      tokenA: body.slice(t, t + TOKEN_SIZE),
      tokenB: body.slice(t + TOKEN_SIZE),
    });
  }

  toString() {
    return `RoomCreated(ticket=<${this.ticket.length} bytes>)`;
  }

  toJSON() {
    return { kind: "ROOM_CREATED" };
  }
}

/** @type {ReadonlyMap<number, Seat>} */
const SEAT_BY_BYTE = new Map([
  [SEAT_BYTE.A, "A"],
  [SEAT_BYTE.B, "B"],
]);

/** c->r: take a seat in a room. */
export class Join {
  static KIND = FrameKind.JOIN;
  /** @type {Uint8Array} */ #token;

  /** @param {{seat: Seat, ticket: Uint8Array, token: Uint8Array, version?: number}} fields */
  constructor({ seat, ticket, token, version = WIRE_VERSION }) {
    this.seat = seat;
    this.ticket = ticket;
    this.#token = token;
    this.version = version;
    Object.freeze(this);
  }

  get kind() {
    return FrameKind.JOIN;
  }

  get token() {
    return this.#token;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    const k = this.kind;
    const version = encUint(k, "version", this.version, 0, 0xff);
    if (this.seat !== "A" && this.seat !== "B") {
      throw new LocalProtocolError("cannot encode JOIN: seat must be a Seat");
    }
    return concat(
      Uint8Array.of(version, SEAT_BYTE[this.seat]),
      encBytes(k, "ticket", this.ticket, TICKET_SIZE, TICKET_SIZE),
      encBytes(k, "token", this.#token, TOKEN_SIZE, TOKEN_SIZE),
    );
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    const seat = SEAT_BY_BYTE.get(body[1]);
    if (seat === undefined) throw new WireError("JOIN seat byte must be ASCII 'A' or 'B'");
    return new Join({
      seat,
      ticket: body.slice(2, 2 + TICKET_SIZE),
      token: body.slice(2 + TICKET_SIZE),
      version: body[0],
    });
  }

  toString() {
    return `Join(seat=${this.seat}, version=${this.version})`;
  }

  toJSON() {
    return { kind: "JOIN", seat: this.seat, version: this.version };
  }
}

/** r->c: the seat is yours; announces the caps and the bulk window. */
export class Joined {
  static KIND = FrameKind.JOINED;

  /** @param {{peerOnline: boolean, maxPayload: number, bulkWindow: number}} fields */
  constructor({ peerOnline, maxPayload, bulkWindow }) {
    this.peerOnline = peerOnline;
    this.maxPayload = maxPayload;
    this.bulkWindow = bulkWindow;
    Object.freeze(this);
  }

  get kind() {
    return FrameKind.JOINED;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    const k = this.kind;
    return concat(
      Uint8Array.of(this.peerOnline ? 1 : 0),
      u32(encUint(k, "max_payload", this.maxPayload, 0, U32_MAX)),
      u32(encUint(k, "bulk_window", this.bulkWindow, 0, U32_MAX)),
    );
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    if (body[0] > 1) throw new WireError("JOINED peer_online must be 0 or 1");
    return new Joined({ peerOnline: body[0] === 1, maxPayload: readU32(body, 1), bulkWindow: readU32(body, 5) });
  }
}

/** A frame with an empty body (PEER_UP, PEER_DOWN, BURN). */
class Empty {
  constructor() {
    Object.freeze(this);
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    return new Uint8Array(0);
  }
}

/** r->c: the other seat is connected. */
export class PeerUp extends Empty {
  static KIND = FrameKind.PEER_UP;

  get kind() {
    return FrameKind.PEER_UP;
  }

  static decodeBody() {
    return new PeerUp();
  }
}

/** r->c: the other seat disconnected (or was never there). */
export class PeerDown extends Empty {
  static KIND = FrameKind.PEER_DOWN;

  get kind() {
    return FrameKind.PEER_DOWN;
  }

  static decodeBody() {
    return new PeerDown();
  }
}

/** c->r: destroy the room for both seats until its expiry. */
export class Burn extends Empty {
  static KIND = FrameKind.BURN;

  get kind() {
    return FrameKind.BURN;
  }

  static decodeBody() {
    return new Burn();
  }
}

/** A CONTROL or BULK frame: end-to-end ciphertext the relay passes on unread. */
class Opaque {
  /** @param {Uint8Array} payload */
  constructor(payload) {
    this.payload = payload;
    Object.freeze(this);
  }

  /** @returns {number} */
  get kind() {
    throw new LocalProtocolError("abstract");
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    return encBytes(this.kind, "payload", this.payload, 1, MAX_PAYLOAD);
  }

  toString() {
    return `${this.constructor.name}(payload=${lengthOnly(this.payload)})`;
  }

  toJSON() {
    return { kind: KIND_NAME.get(this.kind), payload: lengthOnly(this.payload) };
  }
}

/** Both ways: opaque end-to-end bytes in the control lane (handshake, records). */
export class Control extends Opaque {
  static KIND = FrameKind.CONTROL;

  /** @override */
  get kind() {
    return FrameKind.CONTROL;
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new Control(body.slice());
  }
}

/** Both ways: opaque end-to-end bytes in the bulk lane (file chunks); costs credit. */
export class Bulk extends Opaque {
  static KIND = FrameKind.BULK;

  /** @override */
  get kind() {
    return FrameKind.BULK;
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new Bulk(body.slice());
  }
}

/** r->c: the client may send `amount` more bytes of BULK payload. */
export class Credit {
  static KIND = FrameKind.CREDIT;

  /** @param {number} amount */
  constructor(amount) {
    this.amount = amount;
    Object.freeze(this);
  }

  get kind() {
    return FrameKind.CREDIT;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    return u32(encUint(this.kind, "amount", this.amount, 1, U32_MAX));
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    const amount = readU32(body);
    if (amount === 0) throw new WireError("CREDIT amount must be greater than 0");
    return new Credit(amount);
  }
}

/** PING or PONG: hop-by-hop, never forwarded to the peer. */
class Probe {
  /** @param {Uint8Array} [data] */
  constructor(data = new Uint8Array(0)) {
    this.data = data;
    Object.freeze(this);
  }

  /** @returns {number} */
  get kind() {
    throw new LocalProtocolError("abstract");
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    return encBytes(this.kind, "data", this.data, 0, MAX_PING_DATA);
  }
}

/** Both ways: liveness probe; the receiver answers PONG with the same data. */
export class Ping extends Probe {
  static KIND = FrameKind.PING;

  /** @override */
  get kind() {
    return FrameKind.PING;
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new Ping(body.slice());
  }
}

/** Both ways: the answer to PING, echoing its data. */
export class Pong extends Probe {
  static KIND = FrameKind.PONG;

  /** @override */
  get kind() {
    return FrameKind.PONG;
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new Pong(body.slice());
  }
}

/**
 * r->c: why the relay refuses or is about to close. `code` stays a plain
 * number so a code added by a newer relay still decodes.
 */
export class ErrorFrame {
  static KIND = FrameKind.ERROR;

  /**
   * @param {number} code
   * @param {string} message for humans; the peer's text, to be escaped when shown
   */
  constructor(code, message) {
    this.code = code;
    this.message = message;
    Object.freeze(this);
  }

  /**
   * An ERROR frame with the code's default sentence unless `message` is given.
   * @param {number} code one of ErrorCode
   * @param {string} [message]
   */
  static fromCode(code, message) {
    const sentence = ERROR_SENTENCES.get(code);
    if (sentence === undefined) throw new LocalProtocolError(`unknown error code ${code}`);
    return new ErrorFrame(code, message ?? sentence);
  }

  get kind() {
    return FrameKind.ERROR;
  }

  /** The code's name when it is one of ErrorCode, else null (a code from the future). */
  get errorCode() {
    for (const [name, code] of Object.entries(ErrorCode)) if (code === this.code) return name;
    return null;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    const code = encUint(this.kind, "code", this.code, 0, U16_MAX);
    return concat(u16(code), encText(this.kind, "message", this.message));
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new ErrorFrame(readU16(body), decText(FrameKind.ERROR, "message", body, 2));
  }
}

/** r->c: the relay will close this connection after `graceMs`; reconnect with backoff. */
export class GoAway {
  static KIND = FrameKind.GOAWAY;

  /**
   * @param {number} graceMs
   * @param {string} [reason]
   */
  constructor(graceMs, reason = "") {
    this.graceMs = graceMs;
    this.reason = reason;
    Object.freeze(this);
  }

  get kind() {
    return FrameKind.GOAWAY;
  }

  /** @returns {Uint8Array} */
  encodeBody() {
    const grace = encUint(this.kind, "grace_ms", this.graceMs, 0, U32_MAX);
    return concat(u32(grace), encText(this.kind, "reason", this.reason));
  }

  /** @param {Bytes} body */
  static decodeBody(body) {
    return new GoAway(readU32(body), decText(FrameKind.GOAWAY, "reason", body, 4));
  }
}

/**
 * @typedef {CreateRoom | RoomCreated | Join | Joined | PeerUp | PeerDown | Burn
 *   | Control | Bulk | Credit | Ping | Pong | ErrorFrame | GoAway} Frame
 */

const FRAME_CLASSES = [
  CreateRoom, RoomCreated, Join, Joined, PeerUp, PeerDown, Burn,
  Control, Bulk, Credit, Ping, Pong, ErrorFrame, GoAway,
];

/** @type {ReadonlyMap<number, (body: Bytes) => Frame>} */
const DECODERS = new Map(FRAME_CLASSES.map((cls) => [cls.KIND, (/** @type {Bytes} */ body) => cls.decodeBody(body)]));

/** @type {ReadonlySet<number>} kinds a relay may send to a client; anything else from it is malformed */
export const FROM_RELAY = new Set([
  FrameKind.ROOM_CREATED, FrameKind.JOINED, FrameKind.PEER_UP, FrameKind.PEER_DOWN,
  FrameKind.CONTROL, FrameKind.BULK, FrameKind.CREDIT, FrameKind.PING, FrameKind.PONG,
  FrameKind.ERROR, FrameKind.GOAWAY,
]);

/**
 * @param {unknown} frame
 * @returns {Uint8Array}
 */
function encodeBody(frame) {
  if (!FRAME_CLASSES.some((cls) => frame instanceof cls)) {
    const name = typeof frame === "object" && frame !== null ? frame.constructor.name : typeof frame;
    throw new LocalProtocolError(`cannot encode ${name}: not a relay frame`);
  }
  return /** @type {Frame} */ (frame).encodeBody();
}

/**
 * Message form (one binary WebSocket message): `kind:u8 | body`.
 * @param {Frame} frame
 * @returns {Bytes}
 * @throws {LocalProtocolError} the frame breaks a rule the peer's decoder enforces
 */
export function encode(frame) {
  const body = encodeBody(frame);
  return concat(Uint8Array.of(frame.kind), body);
}

/**
 * Stream form (TCP+TLS, Unix socket): `length:u32 | kind:u8 | body`.
 * @param {Frame} frame
 * @returns {Bytes}
 * @throws {LocalProtocolError} as encode()
 */
export function encodeStream(frame) {
  const body = encodeBody(frame);
  return concat(u32(1 + body.length), Uint8Array.of(frame.kind), body);
}

/**
 * Decode one whole message (`kind:u8 | body`). The frame owns copies of
 * its bytes.
 * @param {ArrayBuffer | ArrayBufferView} message
 * @returns {Frame}
 * @throws {WireError} the message is empty, of an unknown kind or breaks a body rule
 */
export function decode(message) {
  const view = message instanceof ArrayBuffer
    ? new Uint8Array(message)
    : new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
  if (view.length === 0) throw new WireError("empty message: a frame needs at least a kind byte");
  const kind = view[0];
  const body = /** @type {Bytes} */ (view.subarray(1));
  checkBodyLength(kind, body.length);
  return /** @type {(body: Bytes) => Frame} */ (DECODERS.get(kind))(body);
}

/**
 * What a client does with one WebSocket message from the relay: binary
 * data decodes to a frame of a kind the relay may send; anything else
 * (a text message, a kind only clients send) is malformed.
 *
 * The socket must have `binaryType = "arraybuffer"`: a Blob can only be read
 * asynchronously, which would let later messages overtake it.
 * @param {unknown} data MessageEvent.data
 * @returns {Frame}
 * @throws {WireError} malformed, a text message, or a kind the relay must not send
 * @throws {LocalProtocolError} a Blob (the socket's binaryType was not set)
 */
export function decodeFromRelay(data) {
  if (typeof data === "string") throw new WireError("text message: relay frames are binary WebSocket messages");
  if (!(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
    throw new LocalProtocolError("WebSocket binaryType must be \"arraybuffer\"");
  }
  const frame = decode(data);
  if (!FROM_RELAY.has(frame.kind)) {
    throw new WireError(`the relay sent a ${KIND_NAME.get(frame.kind)} frame, which only clients send`);
  }
  return frame;
}

/**
 * The relay queue a frame goes to: BULK frames use the bulk lane, all else control.
 * @param {Frame} frame
 * @returns {LaneName}
 */
export function laneOf(frame) {
  return frame.kind === FrameKind.BULK ? Lane.BULK : Lane.CONTROL;
}

/**
 * The name of a kind byte ("CONTROL"), or null for an unknown one.
 * @param {number} kind
 * @returns {string | null}
 */
export function kindName(kind) {
  return KIND_NAME.get(kind) ?? null;
}
