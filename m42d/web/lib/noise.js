// The Noise Protocol Framework (revision 34) for 25519_AESGCM_SHA256, on WebCrypto.
// Python twin: m42d/crypto/noise/ (the facade m42d.crypto.noise). Normative text:
// docs/protocol.md, "Noise handshake and transport encryption".
//
// Why ~1,150 lines: the Noise Protocol Framework as its specification lays
// it out (primitives, pattern notation, CipherState, SymmetricState,
// HandshakeState), objects defined in terms of each other, kept in the
// specification's order (as the twin, one module per section) so a reviewer
// checks it section by section against the spec and the vectors.
//
// m42d runs Noise_XXpsk3_25519_AESGCM_SHA256 between the two clients of a
// room; like its twin, this engine runs every fundamental, deferred and pskN
// pattern, so that the third-party cacophony and snow vectors check it.
//
// Rules and invariants (the twin's, plus what WebCrypto changes):
// * Handshake patterns are data: the table below is the specification's own
//   notation, parsed once; pskN modifiers edit the parsed token lists.
// * One HandshakeState runs one handshake, then is spent. Messages are taken
//   strictly in pattern order; writing when the next message is the peer's,
//   reading when it is ours, or either after completion is a
//   LocalProtocolError.
// * Noise state is not rollback-safe: a failed readMessage (bad length, bad
//   tag, low-order key) marks the handshake failed and every later call
//   throws LocalProtocolError. A writeMessage refused for an oversized payload
//   is checked before any state changes and leaves the handshake usable.
// * Every message, handshake or transport, is at most MAX_MESSAGE bytes;
//   handshake message lengths are fixed by the pattern apart from the
//   payload, so they are checked before any token is processed.
// * A received public key (e or s token) is rejected at once when it is a
//   low-order point, and any DH whose result is all zeros fails
//   (LowOrderPointError). WebCrypto is asked, and the result is also checked
//   here, because implementations differ: Node 20 and Chromium throw an
//   OperationError for an all-zero X25519 result, older engines returned it.
// * After the last message Split() derives the two transport CipherStates;
//   the ephemeral keys, chaining key and psks are dropped.
// * A CipherState's nonce counts messages and is never reused: it advances
//   only on success, and 2^64-1 is reserved for Rekey. Nonces are BigInt.
// * Every method that touches WebCrypto is async; calls on one CipherState
//   or HandshakeState run strictly in call order (serial.js), so the state
//   machine behaves exactly like its synchronous twin. Getters read the
//   state as of the last settled call.
// * Static keys may be non-extractable CryptoKeys: the engine only ever uses
//   the private key in deriveBits and never sees its bytes. AES keys are
//   non-extractable too. No key, psk or chaining key appears in a message.
//
// X25519 private keys in WebCrypto (checked in Node 20.20 and Chromium 156):
// * importKey("raw", ...) is for public keys only; a raw private key is
//   refused (SyntaxError in both).
// * PKCS#8 works in both: the fixed 16-byte DER prefix
//   302e020100300506032b656e04220420 followed by the 32-byte scalar (RFC 8410),
//   and the key can be imported non-extractable.
// * JWK needs the public key as well: {kty: "OKP", crv: "X25519", d, x} with
//   "x" required (both refuse a JWK without it) and checked against "d"
//   (both refuse a wrong one). So JWK needs the public key first.
// * The public key of any private CryptoKey, extractable or not, is
//   X25519(k, 9): deriveBits with the base point u = 9. That is how
//   keyPairFromPrivate() gets it, with no bytes leaving WebCrypto.
// * importKey("raw") accepts every 32-byte public key, including the all-zero
//   and other low-order points; only deriveBits fails on them.

import { ascii, concat, isAllZero, toBytes, u64, zeros } from "./bytes.js";
import {
  CryptoError,
  DecryptError,
  HandshakeError,
  LocalProtocolError,
} from "./errors.js";
import { Serial } from "./serial.js";

/** @typedef {import("./bytes.js").Bytes} Bytes */

/** The largest Noise message, handshake or transport (spec section 3). */
export const MAX_MESSAGE = 65535;
/** Reserved nonce: used only by Rekey, never to encrypt a message. */
export const MAX_NONCE = (1n << 64n) - 1n;
export const PSK_LEN = 32;
/** The protocol m42d clients speak. */
export const PROTOCOL_NAME = "Noise_XXpsk3_25519_AESGCM_SHA256";

const DHLEN = 32;
const KEYLEN = 32;
const HASHLEN = 32;
const TAG_LEN = 16;

/** @returns {SubtleCrypto} */
function subtle() {
  return globalThis.crypto.subtle;
}

// ------------------------------------------------------------------ errors

/** A handshake message failed authentication: a wrong psk or a tampered message. */
export class HandshakeAuthError extends HandshakeError {}

/** A public key was a low-order X25519 point, which would make a DH result public. */
export class LowOrderPointError extends HandshakeError {}

/** The protocol name is malformed or names a pattern or function m42d does not have. */
export class UnsupportedProtocolError extends LocalProtocolError {}

/** A CipherState reached the reserved nonce 2^64-1: a fresh handshake is required. */
export class NonceExhaustedError extends LocalProtocolError {}

const AUTH_FAILED = "handshake authentication failed: wrong room secret or tampered message";

/**
 * Whether `exc` is WebCrypto's "the operation failed" (a bad tag, an
 * all-zero X25519 result), as opposed to a caller error (bad arguments).
 * @param {unknown} exc
 * @returns {boolean}
 */
function isOperationError(exc) {
  return typeof exc === "object" && exc !== null && "name" in exc && exc.name === "OperationError";
}

// ------------------------------------------------------------------ X25519

/**
 * An X25519 key pair: the private key stays inside WebCrypto.
 * @typedef {object} KeyPair
 * @property {CryptoKey} privateKey usable for deriveBits; may be non-extractable
 * @property {Bytes} publicKey the 32-byte u-coordinate
 */

const PKCS8_X25519_PREFIX = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
);
const BASE_POINT = (() => {
  const u = zeros(DHLEN);
  u[0] = 9;
  return u;
})();

/**
 * A fresh key pair whose private half can never be exported.
 * @returns {Promise<Readonly<KeyPair>>}
 */
export async function generateKeyPair() {
  const pair = /** @type {CryptoKeyPair} */ (
    await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"])
  );
  const publicKey = new Uint8Array(await subtle().exportKey("raw", pair.publicKey));
  return Object.freeze({ privateKey: pair.privateKey, publicKey });
}

/**
 * A key pair from a raw 32-byte private key (known-answer tests, or keys
 * stored as bytes). The private CryptoKey is non-extractable unless asked.
 * @param {Uint8Array} raw
 * @param {{extractable?: boolean}} [options]
 * @returns {Promise<Readonly<KeyPair>>}
 */
export async function keyPairFromPrivate(raw, { extractable = false } = {}) {
  if (raw.length !== DHLEN) throw new LocalProtocolError(`an X25519 private key is ${DHLEN} bytes`);
  const privateKey = await subtle().importKey(
    "pkcs8",
    concat(PKCS8_X25519_PREFIX, raw),
    { name: "X25519" },
    extractable,
    ["deriveBits"],
  );
  return Object.freeze({ privateKey, publicKey: await publicKeyOf(privateKey) });
}

/**
 * The public key of an X25519 private CryptoKey, extractable or not: X25519(k, 9).
 * @param {CryptoKey} privateKey
 * @returns {Promise<Bytes>}
 */
export async function publicKeyOf(privateKey) {
  return rawDh(privateKey, BASE_POINT);
}

/**
 * @param {CryptoKey} privateKey
 * @param {Uint8Array} publicKey 32 bytes
 * @returns {Promise<Bytes>}
 */
async function rawDh(privateKey, publicKey) {
  const peer = await subtle().importKey("raw", toBytes(publicKey), { name: "X25519" }, true, []);
  let shared;
  try {
    shared = new Uint8Array(
      await subtle().deriveBits({ name: "X25519", public: peer }, privateKey, DHLEN * 8),
    );
  } catch (exc) {
    if (isOperationError(exc)) {
      throw new LowOrderPointError("peer public key is a low-order point", { cause: exc });
    }
    throw exc;
  }
  if (isAllZero(shared)) throw new LowOrderPointError("peer public key is a low-order point");
  return shared;
}

/**
 * The Noise DH function (spec section 12.1).
 * @param {KeyPair} keyPair
 * @param {Uint8Array} publicKey 32 bytes
 * @returns {Promise<Bytes>}
 * @throws {LowOrderPointError} the result would be all zeros
 */
export async function dh(keyPair, publicKey) {
  if (publicKey.length !== DHLEN) throw new LocalProtocolError(`a public key is ${DHLEN} bytes`);
  return rawDh(keyPair.privateKey, publicKey);
}

/** @type {Promise<Readonly<KeyPair>> | null} */
let probeKey = null;

/**
 * Reject a low-order point before it is used in any DH.
 *
 * Every clamped X25519 scalar is a multiple of the cofactor 8, so the
 * product with a fixed scalar is zero exactly when the point's order
 * divides 8: one DH with a throwaway key decides it.
 * @param {Uint8Array} publicKey
 * @returns {Promise<void>}
 */
export async function checkPublic(publicKey) {
  probeKey ??= generateKeyPair();
  await dh(await probeKey, publicKey);
}

/**
 * @param {unknown} value
 * @param {string} label
 * @returns {asserts value is KeyPair}
 */
function checkKeyPair(value, label) {
  const pair = /** @type {Partial<KeyPair> | null} */ (value);
  if (
    typeof pair !== "object" ||
    pair === null ||
    !(pair.privateKey instanceof CryptoKey) ||
    pair.privateKey.algorithm.name !== "X25519" ||
    !(pair.publicKey instanceof Uint8Array) ||
    pair.publicKey.length !== DHLEN
  ) {
    throw new LocalProtocolError(`${label} must be an X25519 key pair (privateKey, publicKey)`);
  }
}

// ------------------------------------------------------------------ hash

/**
 * @param {Uint8Array} data
 * @returns {Promise<Bytes>}
 */
export async function sha256(data) {
  return new Uint8Array(await subtle().digest("SHA-256", toBytes(data)));
}

/**
 * @param {Uint8Array} key non-empty (WebCrypto refuses empty HMAC keys)
 * @param {Uint8Array} data
 * @returns {Promise<Bytes>}
 */
export async function hmacSha256(key, data) {
  const k = await subtle().importKey("raw", toBytes(key), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await subtle().sign("HMAC", k, toBytes(data)));
}

/**
 * HKDF as Noise defines it (spec section 4.3), for 2 or 3 outputs.
 * @param {Uint8Array} chainingKey
 * @param {Uint8Array} ikm
 * @param {2 | 3} outputs
 * @returns {Promise<Bytes[]>}
 */
export async function noiseHkdf(chainingKey, ikm, outputs) {
  const tempKey = await hmacSha256(chainingKey, ikm);
  /** @type {Bytes[]} */
  const result = [];
  let previous = zeros(0);
  for (let i = 1; i <= outputs; i++) {
    previous = await hmacSha256(tempKey, concat(previous, Uint8Array.of(i)));
    result.push(previous);
  }
  return result;
}

// ------------------------------------------------------------------ patterns

/** @typedef {"e" | "s" | "ee" | "es" | "se" | "ss" | "psk"} Token */

const TOKENS = new Set(["e", "s", "ee", "es", "se", "ss", "psk"]);

/**
 * One line of a pattern: who sends it and its tokens in order.
 * @typedef {object} MessagePattern
 * @property {boolean} fromInitiator
 * @property {ReadonlyArray<Token>} tokens
 */

/**
 * A parsed handshake pattern, modifiers already applied.
 * @typedef {object} HandshakePattern
 * @property {string} name
 * @property {ReadonlyArray<MessagePattern>} preMessages
 * @property {ReadonlyArray<MessagePattern>} messages
 * @property {boolean} oneWay every message goes from the initiator
 * @property {number} pskCount
 */

/**
 * @param {string} name
 * @param {ReadonlyArray<MessagePattern>} preMessages
 * @param {ReadonlyArray<MessagePattern>} messages
 * @returns {Readonly<HandshakePattern>}
 */
function makePattern(name, preMessages, messages) {
  return Object.freeze({
    name,
    preMessages,
    messages,
    oneWay: messages.every((m) => m.fromInitiator),
    pskCount: messages.reduce((n, m) => n + m.tokens.filter((t) => t === "psk").length, 0),
  });
}

/**
 * Bytes each message adds to its payload.
 *
 * Whether a key is set at each token is fixed by the pattern (it is set by
 * the first MixKey and never cleared), so message sizes are known in advance
 * and can be checked before any state changes.
 * @param {HandshakePattern} pattern
 * @returns {number[]}
 */
function overheads(pattern) {
  const pskMode = pattern.pskCount > 0;
  let hasKey = false;
  for (const pre of pattern.preMessages) {
    if (pskMode && pre.tokens.includes("e")) hasKey = true;
  }
  return pattern.messages.map((message) => {
    let size = 0;
    for (const token of message.tokens) {
      if (token === "e") {
        size += DHLEN;
        hasKey = hasKey || pskMode;
      } else if (token === "s") {
        size += DHLEN + (hasKey ? TAG_LEN : 0);
      } else {
        hasKey = true;
      }
    }
    return size + (hasKey ? TAG_LEN : 0);
  });
}

/**
 * Parse the specification's notation: pre-messages, "...", messages.
 * @param {string} name
 * @param {string} text
 * @returns {Readonly<HandshakePattern>}
 */
function parseNotation(name, text) {
  const lines = text
    .trim()
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line);
  const split = lines.indexOf("...");
  const preLines = split < 0 ? [] : lines.slice(0, split);
  const messageLines = split < 0 ? lines : lines.slice(split + 1);
  /** @param {string} line @returns {MessagePattern} */
  const parseLine = (line) => {
    const space = line.indexOf(" ");
    const arrow = line.slice(0, space);
    if (arrow !== "->" && arrow !== "<-") throw new Error(`pattern ${name}: bad line`);
    const tokens = line
      .slice(space + 1)
      .split(",")
      .map((t) => t.trim());
    if (!tokens.every((t) => TOKENS.has(t))) throw new Error(`pattern ${name}: bad token`);
    return Object.freeze({
      fromInitiator: arrow === "->",
      tokens: Object.freeze(/** @type {Token[]} */ (tokens)),
    });
  };
  return makePattern(
    name,
    Object.freeze(preLines.map(parseLine)),
    Object.freeze(messageLines.map(parseLine)),
  );
}

// Spec sections 7.4 (one-way), 7.5 (interactive) and 18 (deferred patterns).
/** @type {Readonly<Record<string, string>>} */
const PATTERN_NOTATION = {
  N: "<- s\n...\n-> e, es",
  K: "-> s\n<- s\n...\n-> e, es, ss",
  X: "<- s\n...\n-> e, es, s, ss",
  NN: "-> e\n<- e, ee",
  NK: "<- s\n...\n-> e, es\n<- e, ee",
  NX: "-> e\n<- e, ee, s, es",
  KN: "-> s\n...\n-> e\n<- e, ee, se",
  KK: "-> s\n<- s\n...\n-> e, es, ss\n<- e, ee, se",
  KX: "-> s\n...\n-> e\n<- e, ee, se, s, es",
  XN: "-> e\n<- e, ee\n-> s, se",
  XK: "<- s\n...\n-> e, es\n<- e, ee\n-> s, se",
  XX: "-> e\n<- e, ee, s, es\n-> s, se",
  IN: "-> e, s\n<- e, ee, se",
  IK: "<- s\n...\n-> e, es, s, ss\n<- e, ee, se",
  IX: "-> e, s\n<- e, ee, se, s, es",
  NK1: "<- s\n...\n-> e\n<- e, ee, es",
  NX1: "-> e\n<- e, ee, s\n-> es",
  X1N: "-> e\n<- e, ee\n-> s\n<- se",
  X1K: "<- s\n...\n-> e, es\n<- e, ee\n-> s\n<- se",
  XK1: "<- s\n...\n-> e\n<- e, ee, es\n-> s, se",
  X1K1: "<- s\n...\n-> e\n<- e, ee, es\n-> s\n<- se",
  X1X: "-> e\n<- e, ee, s, es\n-> s\n<- se",
  XX1: "-> e\n<- e, ee, s\n-> es, s, se",
  X1X1: "-> e\n<- e, ee, s\n-> es, s\n<- se",
  K1N: "-> s\n...\n-> e\n<- e, ee\n-> se",
  K1K: "-> s\n<- s\n...\n-> e, es\n<- e, ee\n-> se",
  KK1: "-> s\n<- s\n...\n-> e\n<- e, ee, se, es",
  K1K1: "-> s\n<- s\n...\n-> e\n<- e, ee, es\n-> se",
  K1X: "-> s\n...\n-> e\n<- e, ee, s, es\n-> se",
  KX1: "-> s\n...\n-> e\n<- e, ee, se, s\n-> es",
  K1X1: "-> s\n...\n-> e\n<- e, ee, s\n-> se, es",
  I1N: "-> e, s\n<- e, ee\n-> se",
  I1K: "<- s\n...\n-> e, es, s\n<- e, ee\n-> se",
  IK1: "<- s\n...\n-> e, s\n<- e, ee, se, es",
  I1K1: "<- s\n...\n-> e, s\n<- e, ee, es\n-> se",
  I1X: "-> e, s\n<- e, ee, s, es\n-> se",
  IX1: "-> e, s\n<- e, ee, se, s\n-> es",
  I1X1: "-> e, s\n<- e, ee, s\n-> se, es",
};

/** @type {ReadonlyMap<string, Readonly<HandshakePattern>>} */
export const BASE_PATTERNS = new Map(
  Object.entries(PATTERN_NOTATION).map(([name, text]) => [name, parseNotation(name, text)]),
);

const PATTERN_NAME = /^([A-Z0-9]+)([a-z0-9+]*)$/;
const PSK_MODIFIER = /^psk(0|[1-9][0-9]*)$/;

/**
 * Resolve a pattern name such as XXpsk3 or XXpsk0+psk2 (spec 8 and 10.2).
 *
 * psk0 puts a psk token at the start of the first message; pskN (N >= 1)
 * appends one to the end of message N. Modifiers apply left to right.
 * @param {string} name
 * @returns {Readonly<HandshakePattern>}
 * @throws {UnsupportedProtocolError} unknown base pattern or modifier
 */
export function handshakePattern(name) {
  const match = PATTERN_NAME.exec(name);
  const base = match ? BASE_PATTERNS.get(match[1]) : undefined;
  if (!match || !base) throw new UnsupportedProtocolError(`unknown handshake pattern '${name}'`);
  const modifiers = match[2] ? match[2].split("+") : [];
  const messages = base.messages.map((m) => [...m.tokens]);
  const seen = new Set();
  for (const modifier of modifiers) {
    const psk = PSK_MODIFIER.exec(modifier);
    if (!psk) {
      throw new UnsupportedProtocolError(
        `unsupported pattern modifier '${modifier}' in '${name}' (only pskN)`,
      );
    }
    if (seen.has(modifier)) {
      throw new UnsupportedProtocolError(`repeated modifier '${modifier}' in '${name}'`);
    }
    seen.add(modifier);
    const position = Number(psk[1]);
    if (position > messages.length) {
      throw new UnsupportedProtocolError(
        `'${modifier}' in '${name}': pattern has only ${messages.length} messages`,
      );
    }
    if (position === 0) messages[0].unshift("psk");
    else messages[position - 1].push("psk");
  }
  return makePattern(
    name,
    base.preMessages,
    Object.freeze(
      base.messages.map((m, i) =>
        Object.freeze({ fromInitiator: m.fromInitiator, tokens: Object.freeze(messages[i]) }),
      ),
    ),
  );
}

/** @type {Readonly<Record<string, string>>} the one function of each kind this engine has */
const SUPPORTED = { DH: "25519", cipher: "AESGCM", hash: "SHA256" };

/**
 * A parsed protocol name: Noise_<pattern>_<dh>_<cipher>_<hash>.
 * @param {string} name
 * @returns {{name: string, pattern: Readonly<HandshakePattern>}}
 * @throws {UnsupportedProtocolError} for anything but *_25519_AESGCM_SHA256
 */
export function parseProtocolName(name) {
  const parts = name.split("_");
  if (parts.length !== 5 || parts[0] !== "Noise") {
    throw new UnsupportedProtocolError(
      `malformed Noise protocol name '${name}' (want Noise_<pattern>_<dh>_<cipher>_<hash>)`,
    );
  }
  const pattern = handshakePattern(parts[1]);
  /** @type {Array<[string, string]>} */
  const functions = [
    ["DH", parts[2]],
    ["cipher", parts[3]],
    ["hash", parts[4]],
  ];
  for (const [kind, given] of functions) {
    if (given !== SUPPORTED[kind]) {
      throw new UnsupportedProtocolError(
        `unsupported ${kind} function '${given}' in '${name}' (supported: ${SUPPORTED[kind]})`,
      );
    }
  }
  return { name, pattern };
}

// ------------------------------------------------------------------ CipherState

/**
 * 32 bits of zeros followed by the big-endian 64-bit counter.
 * @param {bigint} n
 * @returns {Bytes}
 */
function aesNonce(n) {
  return concat(zeros(4), u64(n));
}

/**
 * @param {Uint8Array} raw 32 bytes
 * @returns {Promise<CryptoKey>}
 */
function importAesKey(raw) {
  return subtle().importKey("raw", toBytes(raw), { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/**
 * @param {CryptoKey} key
 * @param {bigint} n
 * @param {Uint8Array} ad
 * @param {Uint8Array} plaintext
 * @returns {Promise<Bytes>}
 */
async function aesEncrypt(key, n, ad, plaintext) {
  const params = { name: "AES-GCM", iv: aesNonce(n), additionalData: toBytes(ad), tagLength: 128 };
  return new Uint8Array(await subtle().encrypt(params, key, toBytes(plaintext)));
}

/**
 * A key and a message counter (spec section 5.1).
 *
 * Without a key, encryption passes data through unchanged, as the spec
 * requires during the first handshake messages.
 */
export class CipherState {
  /** @type {CryptoKey | null} */ #key = null;
  /** @type {bigint} */ #n = 0n;
  #serial = new Serial();

  /**
   * A CipherState holding `key` (32 raw bytes) or none, nonce 0.
   * @param {Uint8Array | null} [key]
   * @returns {Promise<CipherState>}
   */
  static async create(key = null) {
    const cs = new CipherState();
    await cs.initializeKey(key);
    return cs;
  }

  /**
   * Set (or clear) the key and reset the nonce to zero.
   * @param {Uint8Array | null} key
   * @returns {Promise<void>}
   */
  initializeKey(key) {
    return this.#serial.run(async () => {
      if (key !== null && key.length !== KEYLEN) {
        throw new LocalProtocolError(`a cipher key is ${KEYLEN} bytes`);
      }
      this.#key = key === null ? null : await importAesKey(key);
      this.#n = 0n;
    });
  }

  hasKey() {
    return this.#key !== null;
  }

  /** The nonce the next message will use (= messages processed so far). */
  get nonce() {
    return this.#n;
  }

  /**
   * @param {bigint} n
   * @returns {Promise<void>}
   */
  setNonce(n) {
    return this.#serial.run(async () => {
      if (typeof n !== "bigint" || n < 0n || n > MAX_NONCE) {
        throw new LocalProtocolError("nonce must be in 0 .. 2^64-1");
      }
      this.#n = n;
    });
  }

  /**
   * Encrypt one message and advance the nonce.
   * @param {Uint8Array} ad
   * @param {Uint8Array} plaintext
   * @returns {Promise<Bytes>}
   * @throws {NonceExhaustedError} the nonce reached 2^64-1
   * @throws {LocalProtocolError} the ciphertext would exceed MAX_MESSAGE bytes
   */
  encryptWithAd(ad, plaintext) {
    return this.#serial.run(async () => {
      const key = this.#key;
      if (key === null) {
        if (plaintext.length > MAX_MESSAGE) {
          throw new LocalProtocolError(`message longer than ${MAX_MESSAGE} bytes`);
        }
        return toBytes(plaintext);
      }
      const n = this.#n;
      if (n >= MAX_NONCE) throw new NonceExhaustedError("cipher nonce exhausted; run a new handshake");
      if (plaintext.length > MAX_MESSAGE - TAG_LEN) {
        throw new LocalProtocolError(`plaintext longer than ${MAX_MESSAGE - TAG_LEN} bytes`);
      }
      const ciphertext = await aesEncrypt(key, n, ad, plaintext);
      this.#n = n + 1n;
      return ciphertext;
    });
  }

  /**
   * Decrypt one message; the nonce advances only on success.
   * @param {Uint8Array} ad
   * @param {Uint8Array} ciphertext
   * @returns {Promise<Bytes>}
   * @throws {DecryptError} wrong key, tampered or oversized ciphertext
   * @throws {NonceExhaustedError} the nonce reached 2^64-1
   */
  decryptWithAd(ad, ciphertext) {
    return this.#serial.run(async () => {
      if (ciphertext.length > MAX_MESSAGE) {
        throw new DecryptError(`ciphertext longer than ${MAX_MESSAGE} bytes`);
      }
      const key = this.#key;
      if (key === null) return toBytes(ciphertext);
      const n = this.#n;
      if (n >= MAX_NONCE) throw new NonceExhaustedError("cipher nonce exhausted; run a new handshake");
      let plaintext;
      try {
        const params = { name: "AES-GCM", iv: aesNonce(n), additionalData: toBytes(ad), tagLength: 128 };
        plaintext = new Uint8Array(await subtle().decrypt(params, key, toBytes(ciphertext)));
      } catch (exc) {
        if (isOperationError(exc)) {
          throw new DecryptError("message authentication failed (wrong key or tampered)", {
            cause: exc,
          });
        }
        throw exc;
      }
      this.#n = n + 1n;
      return plaintext;
    });
  }

  /**
   * Replace the key by REKEY(k) = ENCRYPT(k, 2^64-1, "", 32 zero bytes)[0:32];
   * the nonce is kept (spec section 11.3).
   * @returns {Promise<void>}
   */
  rekey() {
    return this.#serial.run(async () => {
      const key = this.#key;
      if (key === null) throw new LocalProtocolError("rekey on a CipherState without a key");
      const sealed = await aesEncrypt(key, MAX_NONCE, zeros(0), zeros(KEYLEN));
      this.#key = await importAesKey(sealed.subarray(0, KEYLEN));
    });
  }

  toString() {
    return `CipherState(has_key=${this.hasKey()}, nonce=${this.#n})`;
  }
}

/**
 * The two transport CipherStates after Split, oriented for this side.
 * @typedef {object} TransportPair
 * @property {CipherState} send
 * @property {CipherState} recv
 */

// ------------------------------------------------------------------ SymmetricState

/** Chaining key, handshake hash and the handshake CipherState (spec section 5.2). */
export class SymmetricState {
  /** @type {Bytes} */ #ck;
  /** @type {Bytes} */ #h;
  /** @type {CipherState} */ #cs;

  /**
   * @param {Bytes} h
   * @param {CipherState} cs
   */
  constructor(h, cs) {
    this.#ck = h;
    this.#h = h;
    this.#cs = cs;
  }

  /**
   * InitializeSymmetric(protocol_name).
   * @param {string} protocolName
   * @returns {Promise<SymmetricState>}
   */
  static async initialize(protocolName) {
    const name = ascii(protocolName);
    const h = name.length <= HASHLEN ? concat(name, zeros(HASHLEN - name.length)) : await sha256(name);
    return new SymmetricState(h, await CipherState.create());
  }

  get handshakeHash() {
    return this.#h;
  }

  hasKey() {
    return this.#cs.hasKey();
  }

  /** @param {Uint8Array} ikm */
  async mixKey(ikm) {
    const [ck, tempK] = await noiseHkdf(this.#ck, ikm, 2);
    this.#ck = ck;
    await this.#cs.initializeKey(tempK.subarray(0, KEYLEN));
  }

  /** @param {Uint8Array} data */
  async mixHash(data) {
    this.#h = await sha256(concat(this.#h, data));
  }

  /** @param {Uint8Array} ikm */
  async mixKeyAndHash(ikm) {
    const [ck, tempH, tempK] = await noiseHkdf(this.#ck, ikm, 3);
    this.#ck = ck;
    await this.mixHash(tempH);
    await this.#cs.initializeKey(tempK.subarray(0, KEYLEN));
  }

  /** @param {Uint8Array} plaintext */
  async encryptAndHash(plaintext) {
    const ciphertext = await this.#cs.encryptWithAd(this.#h, plaintext);
    await this.mixHash(ciphertext);
    return ciphertext;
  }

  /** @param {Uint8Array} ciphertext */
  async decryptAndHash(ciphertext) {
    const plaintext = await this.#cs.decryptWithAd(this.#h, ciphertext);
    await this.mixHash(ciphertext);
    return plaintext;
  }

  /** @returns {Promise<[CipherState, CipherState]>} */
  async split() {
    const [tempK1, tempK2] = await noiseHkdf(this.#ck, zeros(0), 2);
    return [
      await CipherState.create(tempK1.subarray(0, KEYLEN)),
      await CipherState.create(tempK2.subarray(0, KEYLEN)),
    ];
  }
}

// ------------------------------------------------------------------ HandshakeState

/**
 * @typedef {object} HandshakeOptions
 * @property {boolean} initiator whether this side sends the first message
 * @property {Uint8Array} [prologue] data both sides must agree on
 * @property {KeyPair | null} [s] this side's static key pair, if the pattern uses one
 * @property {KeyPair | null} [e] an ephemeral to use instead of a fresh one (known-answer tests)
 * @property {Uint8Array | null} [rs] the peer's static public key, for patterns that pre-share it
 * @property {Uint8Array | null} [re] the peer's ephemeral public key, likewise
 * @property {ReadonlyArray<Uint8Array>} [psks] one 32-byte psk per psk token, in pattern order
 */

/** @typedef {"running" | "complete" | "failed"} Phase */

/** Guards the constructor: handshakes are built by HandshakeState.create(). */
const CONSTRUCT = Symbol("HandshakeState.create");

/** One side of one Noise handshake (spec section 5.3). */
export class HandshakeState {
  /** @type {string} */ #protocolName;
  /** @type {Readonly<HandshakePattern>} */ #pattern;
  /** @type {boolean} */ #initiator;
  /** @type {SymmetricState | null} */ #symmetric = null;
  /** @type {KeyPair | null} */ #s;
  /** @type {KeyPair | null} */ #e;
  /** @type {Bytes | null} */ #rs;
  /** @type {Bytes | null} */ #re;
  /** @type {Bytes[]} */ #psks;
  #pskIndex = 0;
  /** @type {boolean} */ #pskMode;
  /** @type {number[]} */ #overheads;
  #index = 0;
  /** @type {Phase} */ #phase = "running";
  /** @type {Readonly<TransportPair> | null} */ #transport = null;
  /** @type {Bytes | null} */ #handshakeHash = null;
  #serial = new Serial();

  /**
   * Use HandshakeState.create(), which validates; this only stores.
   * @param {symbol} token
   * @param {string} protocolName
   * @param {Readonly<HandshakePattern>} pattern
   * @param {boolean} initiator
   * @param {{s: KeyPair | null, e: KeyPair | null, rs: Bytes | null, re: Bytes | null, psks: Bytes[]}} keys
   */
  constructor(token, protocolName, pattern, initiator, { s, e, rs, re, psks }) {
    if (token !== CONSTRUCT) throw new LocalProtocolError("use HandshakeState.create()");
    this.#protocolName = protocolName;
    this.#pattern = pattern;
    this.#initiator = initiator;
    this.#pskMode = pattern.pskCount > 0;
    this.#overheads = overheads(pattern);
    this.#s = s;
    this.#e = e;
    this.#rs = rs;
    this.#re = re;
    this.#psks = psks;
  }

  /**
   * A HandshakeState ready for its first message.
   * @param {string} protocolName e.g. PROTOCOL_NAME
   * @param {HandshakeOptions} options
   * @returns {Promise<HandshakeState>}
   * @throws {UnsupportedProtocolError} the protocol name is not supported
   * @throws {LocalProtocolError} a key or psk the pattern needs is missing, or
   *   one is given that it cannot use, or one has the wrong length
   * @throws {LowOrderPointError} rs or re is a low-order point
   */
  static async create(
    protocolName,
    { initiator, prologue = zeros(0), s = null, e = null, rs = null, re = null, psks = [] },
  ) {
    // The checks and their order are the twin's constructor's.
    const { pattern } = parseProtocolName(protocolName);
    const mine = pattern.messages.filter((m) => m.fromInitiator === initiator);
    const myPre = pattern.preMessages.filter((m) => m.fromInitiator === initiator);
    const theirPre = pattern.preMessages.filter((m) => m.fromInitiator !== initiator);
    if (s === null && [...mine, ...myPre].some((m) => m.tokens.includes("s"))) {
      throw new LocalProtocolError(`pattern ${pattern.name} needs this side's static key (s)`);
    }
    if (e === null && myPre.some((m) => m.tokens.includes("e"))) {
      throw new LocalProtocolError(`pattern ${pattern.name} needs this side's pre-shared e`);
    }
    if (s !== null) checkKeyPair(s, "s");
    if (e !== null) checkKeyPair(e, "e");
    /** @type {Array<[string, Uint8Array | null, Token]>} */
    const remote = [
      ["rs", rs, "s"],
      ["re", re, "e"],
    ];
    for (const [label, key, token] of remote) {
      const preKnown = theirPre.some((m) => m.tokens.includes(token));
      if (preKnown && key === null) {
        throw new LocalProtocolError(
          `pattern ${pattern.name} needs the peer's pre-known key (${label})`,
        );
      }
      if (!preKnown && key !== null) {
        throw new LocalProtocolError(
          `pattern ${pattern.name} does not pre-share the peer's key (${label})`,
        );
      }
      if (key !== null) {
        if (key.length !== DHLEN) throw new LocalProtocolError(`${label} must be ${DHLEN} bytes`);
        await checkPublic(key);
      }
    }
    if (psks.length !== pattern.pskCount) {
      throw new LocalProtocolError(
        `pattern ${pattern.name} needs ${pattern.pskCount} psk(s), got ${psks.length}`,
      );
    }
    if (psks.some((psk) => psk.length !== PSK_LEN)) {
      throw new LocalProtocolError(`each psk must be ${PSK_LEN} bytes`);
    }
    const hs = new HandshakeState(CONSTRUCT, protocolName, pattern, initiator, {
      s,
      e,
      rs: rs === null ? null : toBytes(rs),
      re: re === null ? null : toBytes(re),
      psks: psks.map(toBytes),
    });
    await hs.#initialize(prologue);
    return hs;
  }

  /** @param {Uint8Array} prologue */
  async #initialize(prologue) {
    const symmetric = await SymmetricState.initialize(this.#protocolName);
    await symmetric.mixHash(prologue);
    // The initiator's pre-message keys are always hashed first (spec 7.1).
    const pres = [...this.#pattern.preMessages].sort(
      (a, b) => Number(!a.fromInitiator) - Number(!b.fromInitiator),
    );
    for (const pre of pres) {
      const local = pre.fromInitiator === this.#initiator;
      for (const token of pre.tokens) {
        if (token === "s") {
          await symmetric.mixHash(local ? this.#need(this.#s).publicKey : this.#need(this.#rs));
        } else {
          const pub = local ? this.#need(this.#e).publicKey : this.#need(this.#re);
          await symmetric.mixHash(pub);
          if (this.#pskMode) await symmetric.mixKey(pub);
        }
      }
    }
    this.#symmetric = symmetric;
  }

  toString() {
    const total = this.#pattern.messages.length;
    return (
      `HandshakeState(protocol='${this.#protocolName}', initiator=${this.#initiator},` +
      ` phase='${this.#phase}', message=${this.#index}/${total})`
    );
  }

  get protocolName() {
    return this.#protocolName;
  }

  get isInitiator() {
    return this.#initiator;
  }

  get complete() {
    return this.#phase === "complete";
  }

  get failed() {
    return this.#phase === "failed";
  }

  /** The final handshake hash h: the channel binding the SAS is drawn from. */
  get handshakeHash() {
    if (this.#handshakeHash === null) {
      throw new LocalProtocolError("handshake hash is only defined once the handshake completes");
    }
    return this.#handshakeHash.slice();
  }

  /** The peer's static public key, once known (pre-shared or received). */
  get remoteStatic() {
    return this.#rs === null ? null : this.#rs.slice();
  }

  /** True when the next call must be writeMessage. */
  isMyTurn() {
    if (this.#phase !== "running") return false;
    return this.#pattern.messages[this.#index].fromInitiator === this.#initiator;
  }

  /**
   * The transport CipherStates: the initiator sends with c1, the responder
   * with c2. Every call returns the same pair, so nonces cannot be reused by
   * splitting twice.
   * @returns {Readonly<TransportPair>}
   */
  split() {
    if (this.#transport === null) {
      throw new LocalProtocolError("split() before the handshake completed");
    }
    return this.#transport;
  }

  /**
   * Produce the next handshake message, carrying `payload`.
   * @param {Uint8Array} [payload]
   * @returns {Promise<Bytes>}
   * @throws {LocalProtocolError} out of turn, after completion or failure, or
   *   the message would exceed MAX_MESSAGE bytes (nothing changed then)
   */
  writeMessage(payload = zeros(0)) {
    return this.#serial.run(async () => {
      const symmetric = this.#checkTurn(true);
      const overhead = this.#overheads[this.#index];
      if (overhead + payload.length > MAX_MESSAGE) {
        throw new LocalProtocolError(
          `handshake payload of ${payload.length} bytes exceeds the` +
            ` ${MAX_MESSAGE - overhead} bytes this message can carry`,
        );
      }
      /** @type {Uint8Array[]} */
      const parts = [];
      try {
        for (const token of this.#pattern.messages[this.#index].tokens) {
          if (token === "e") {
            this.#e ??= await generateKeyPair();
            parts.push(this.#e.publicKey);
            await symmetric.mixHash(this.#e.publicKey);
            if (this.#pskMode) await symmetric.mixKey(this.#e.publicKey);
          } else if (token === "s") {
            parts.push(await symmetric.encryptAndHash(this.#need(this.#s).publicKey));
          } else if (token === "psk") {
            await this.#mixPsk(symmetric);
          } else {
            await symmetric.mixKey(await this.#dh(token));
          }
        }
        parts.push(await symmetric.encryptAndHash(payload));
      } catch (exc) {
        this.#phase = "failed";
        throw exc;
      }
      await this.#advance(symmetric);
      return concat(...parts);
    });
  }

  /**
   * Consume the peer's next handshake message and return its payload.
   * @param {Uint8Array} message
   * @returns {Promise<Bytes>}
   * @throws {LocalProtocolError} out of turn, after completion or failure
   * @throws {HandshakeAuthError} the message does not authenticate
   * @throws {LowOrderPointError} it carries a low-order public key
   * @throws {HandshakeError} it is too short or too long
   */
  readMessage(message) {
    return this.#serial.run(async () => {
      const symmetric = this.#checkTurn(false);
      let payload;
      try {
        payload = await this.#readTokens(symmetric, toBytes(message));
      } catch (exc) {
        this.#phase = "failed";
        throw exc;
      }
      await this.#advance(symmetric);
      return payload;
    });
  }

  /**
   * @param {SymmetricState} symmetric
   * @param {Bytes} message
   * @returns {Promise<Bytes>}
   */
  async #readTokens(symmetric, message) {
    const overhead = this.#overheads[this.#index];
    const number = this.#index + 1;
    if (message.length > MAX_MESSAGE) {
      throw new HandshakeError(`handshake message ${number} longer than ${MAX_MESSAGE} bytes`);
    }
    if (message.length < overhead) {
      throw new HandshakeError(
        `handshake message ${number} too short: ${message.length} < ${overhead} bytes`,
      );
    }
    let offset = 0;
    try {
      for (const token of this.#pattern.messages[this.#index].tokens) {
        if (token === "e") {
          const rePublic = message.slice(offset, offset + DHLEN);
          offset += DHLEN;
          await checkPublic(rePublic);
          this.#re = rePublic;
          await symmetric.mixHash(rePublic);
          if (this.#pskMode) await symmetric.mixKey(rePublic);
        } else if (token === "s") {
          const size = DHLEN + (symmetric.hasKey() ? TAG_LEN : 0);
          const rsPublic = await symmetric.decryptAndHash(message.slice(offset, offset + size));
          offset += size;
          await checkPublic(rsPublic);
          this.#rs = rsPublic;
        } else if (token === "psk") {
          await this.#mixPsk(symmetric);
        } else {
          await symmetric.mixKey(await this.#dh(token));
        }
      }
      return await symmetric.decryptAndHash(message.slice(offset));
    } catch (exc) {
      if (exc instanceof HandshakeError) throw exc;
      if (exc instanceof DecryptError) throw new HandshakeAuthError(AUTH_FAILED, { cause: exc });
      throw exc;
    }
  }

  /**
   * @param {boolean} writing
   * @returns {SymmetricState}
   */
  #checkTurn(writing) {
    const verb = writing ? "write" : "read";
    if (this.#phase === "failed") {
      throw new LocalProtocolError(`cannot ${verb}: this handshake failed earlier; start a new one`);
    }
    if (this.#phase === "complete" || this.#symmetric === null) {
      throw new LocalProtocolError(`cannot ${verb}: the handshake is complete; use split()`);
    }
    if (this.isMyTurn() !== writing) {
      const other = writing ? "read" : "write";
      throw new LocalProtocolError(
        `cannot ${verb} handshake message ${this.#index + 1}: it is this side's turn to ${other}`,
      );
    }
    return this.#symmetric;
  }

  /** @param {SymmetricState} symmetric */
  async #advance(symmetric) {
    this.#index += 1;
    if (this.#index < this.#pattern.messages.length) return;
    const [c1, c2] = await symmetric.split();
    this.#transport = Object.freeze(
      this.#initiator ? { send: c1, recv: c2 } : { send: c2, recv: c1 },
    );
    this.#handshakeHash = symmetric.handshakeHash;
    this.#phase = "complete";
    // Drop what forward secrecy needs forgotten; the caller owns s.
    this.#symmetric = null;
    this.#e = null;
    this.#re = null;
    this.#psks = [];
  }

  /** @param {SymmetricState} symmetric */
  async #mixPsk(symmetric) {
    await symmetric.mixKeyAndHash(this.#psks[this.#pskIndex]);
    this.#pskIndex += 1;
  }

  /**
   * @param {Token} token ee, es, se or ss
   * @returns {Promise<Bytes>}
   */
  #dh(token) {
    if (token === "ee") return dh(this.#need(this.#e), this.#need(this.#re));
    if (token === "ss") return dh(this.#need(this.#s), this.#need(this.#rs));
    // es: initiator's e with responder's s; se: initiator's s with responder's e.
    const localE = (token === "es") === this.#initiator;
    if (localE) return dh(this.#need(this.#e), this.#need(this.#rs));
    return dh(this.#need(this.#s), this.#need(this.#re));
  }

  /**
   * A key the pattern table guarantees is present at this point.
   * @template T
   * @param {T | null} value
   * @returns {T}
   */
  #need(value) {
    if (value === null) throw new LocalProtocolError("a key the pattern needs is missing");
    return value;
  }
}
