// Long-lived keys of a seat and the values derived from the room secret.
// Python twin: m42d/session/keys.py.
//
// A client keeps, per (room, seat), its own static X25519 key pair and the
// peer's pinned public key, nothing else (docs/protocol.md, "Keys kept").
// Where they live is the caller's business: KeyStore is the interface (the
// page's IndexedDB store implements it), MemoryKeyStore the one that forgets
// everything when the tab closes.
//
// Unlike the twin's, the store holds key *pairs*, not private key bytes: in
// the browser the private half is a non-extractable CryptoKey (noise.js
// uses it only in deriveBits), so no private key byte ever needs to reach
// JS. Every method is async, because IndexedDB is.

import { ascii, concat, toHex } from "../bytes.js";

/** @typedef {import("../bytes.js").Bytes} Bytes */
/** @typedef {import("../noise.js").KeyPair} KeyPair */
/** @typedef {import("../ticket.js").Seat} Seat */

export const PROLOGUE_PREFIX = ascii("m42d/2");
export const PSK_INFO = ascii("m42 psk v1");

/**
 * Where a client keeps, per room and seat, its static key pair and the
 * peer's pinned public key.
 * @typedef {object} KeyStore
 * @property {(roomId: Uint8Array, seat: Seat) => Promise<Readonly<KeyPair> | null>} loadStatic
 *   this seat's static key pair for the room, or null on first use
 * @property {(roomId: Uint8Array, seat: Seat, keyPair: Readonly<KeyPair>) => Promise<void>} saveStatic
 * @property {(roomId: Uint8Array, seat: Seat) => Promise<Uint8Array | null>} loadPeer
 *   the pinned public key of the *other* seat, or null before first contact
 * @property {(roomId: Uint8Array, seat: Seat, publicKey: Uint8Array) => Promise<void>} savePeer
 *   pin (or re-pin, after the user trusted it) the other seat's public key
 */

/** A key store that forgets everything with the page: for tests and private modes. */
export class MemoryKeyStore {
  /** @type {Map<string, Readonly<KeyPair>>} */ #statics = new Map();
  /** @type {Map<string, Uint8Array>} */ #peers = new Map();

  /** @param {Uint8Array} roomId @param {Seat} seat */
  static #key(roomId, seat) {
    return `${toHex(roomId)}/${seat}`;
  }

  /** @param {Uint8Array} roomId @param {Seat} seat */
  async loadStatic(roomId, seat) {
    return this.#statics.get(MemoryKeyStore.#key(roomId, seat)) ?? null;
  }

  /** @param {Uint8Array} roomId @param {Seat} seat @param {Readonly<KeyPair>} keyPair */
  async saveStatic(roomId, seat, keyPair) {
    this.#statics.set(MemoryKeyStore.#key(roomId, seat), keyPair);
  }

  /** @param {Uint8Array} roomId @param {Seat} seat */
  async loadPeer(roomId, seat) {
    const pinned = this.#peers.get(MemoryKeyStore.#key(roomId, seat));
    return pinned === undefined ? null : pinned.slice();
  }

  /** @param {Uint8Array} roomId @param {Seat} seat @param {Uint8Array} publicKey */
  async savePeer(roomId, seat, publicKey) {
    this.#peers.set(MemoryKeyStore.#key(roomId, seat), publicKey.slice());
  }
}

/**
 * The Noise psk: the room secret bound to the room it was made for,
 * HKDF-SHA256(ikm = R, salt = room_id, info = "m42 psk v1", L = 32).
 * @param {Uint8Array} secret
 * @param {Uint8Array} roomId
 * @returns {Promise<Bytes>}
 */
export async function derivePsk(secret, roomId) {
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey("raw", concat(secret), "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: concat(roomId), info: PSK_INFO }, ikm, 256);
  return new Uint8Array(bits);
}

/**
 * Binds protocol version and room into the handshake transcript.
 * @param {Uint8Array} roomId
 * @returns {Bytes}
 */
export function prologue(roomId) {
  return concat(PROLOGUE_PREFIX, roomId);
}
