// Words both people read to each other: the safety words (protocol 2), and
// the mapping of 32 bytes to words they share with the older per-handshake SAS.
// Python twin: m42d/crypto/sas.py. Normative text: docs/protocol.md,
// "Short authentication string (SAS)".
//
// The room secret R authenticates the handshake only as well as the link was
// kept secret. A man-in-the-middle (the relay operator, anyone who saw a
// link) leaves the two sides with different handshake hashes; five words
// derived from the hash, compared by voice, expose it.
//
// Rules:
// * okm = HKDF-SHA256(ikm = h, salt = "" , info = "m42 sas v1", L = 40);
//   word k = WORDLIST[uint64_be(okm[8k .. 8k+8]) mod 7776], k = 0..4.
// * h must be the 32-byte final Noise handshake hash; another length is a
//   caller error (LocalProtocolError).
// * The word list is an input, not part of this module: the browser fetches
//   the EFF large word list from the relay it loaded the page from, the Node
//   tests read m42d/crypto/data/eff_large_wordlist.txt. A damaged list would
//   not fail loudly on its own (it would show different words than the
//   peer's, which a user would read as an attack), so Wordlist.parse() checks
//   it exactly as the twin does, and sasWords() takes only a parsed Wordlist.

import { ascii, readU64, toBytes } from "./bytes.js";
import { LocalProtocolError, M42Error } from "./errors.js";
import { splitLines, strip } from "./text.js";

/** Words in the SAS: 5 x log2(7776) ~ 64.6 bits, short enough to read aloud. */
export const SAS_WORDS = 5;
export const WORDLIST_SIZE = 7776;
/** HKDF info label; a change of derivation gets a new label. */
export const SAS_INFO = ascii("m42 sas v1");
/** Noise handshake hash length for SHA-256. */
export const HANDSHAKE_HASH_SIZE = 32;

const BYTES_PER_WORD = 8;

/** The word list is damaged: the SAS cannot be computed the way the peer does. */
export class WordlistError extends M42Error {}

/** A checked SAS word list: exactly 7,776 distinct, non-empty, unpadded words. */
export class Wordlist {
  /** @type {ReadonlyArray<string>} */ #words;

  /**
   * Use Wordlist.parse().
   * @param {ReadonlyArray<string>} words already checked
   */
  constructor(words) {
    this.#words = Object.freeze([...words]);
    Object.freeze(this);
  }

  /**
   * Read and check the list's text, one word per line.
   * @param {string} text
   * @returns {Wordlist}
   * @throws {WordlistError} not exactly 7,776 distinct, non-empty words without spaces
   */
  static parse(text) {
    const words = splitLines(text);
    if (words.length !== WORDLIST_SIZE) {
      throw new WordlistError(
        `SAS word list has ${words.length} lines, expected ${WORDLIST_SIZE}: reinstall m42d`,
      );
    }
    if (new Set(words).size !== WORDLIST_SIZE) {
      throw new WordlistError("SAS word list has duplicate words: reinstall m42d");
    }
    if (words.some((w) => !w || w !== strip(w) || w.includes(" "))) {
      throw new WordlistError("SAS word list has empty or padded lines: reinstall m42d");
    }
    return new Wordlist(words);
  }

  /** The words in list order. */
  get words() {
    return this.#words;
  }
}

/**
 * The five SAS words for a completed handshake, in reading order.
 *
 * Each word takes 8 bytes of HKDF output reduced mod 7,776; the modulo bias
 * (7,776 / 2^64 ~ 4e-16) is far below anything a person could notice.
 * @param {Uint8Array} handshakeHash the final Noise handshake hash h
 * @param {Wordlist} wordlist
 * @returns {Promise<string[]>}
 * @throws {LocalProtocolError} handshakeHash is not 32 bytes, or wordlist is not a Wordlist
 */
export async function sasWords(handshakeHash, wordlist) {
  if (handshakeHash.length !== HANDSHAKE_HASH_SIZE) {
    throw new LocalProtocolError(
      `handshake hash must be ${HANDSHAKE_HASH_SIZE} bytes, got ${handshakeHash.length}`,
    );
  }
  if (!(wordlist instanceof Wordlist)) {
    throw new LocalProtocolError("sasWords() needs a Wordlist (Wordlist.parse)");
  }
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey("raw", toBytes(handshakeHash), "HKDF", false, ["deriveBits"]);
  const okm = new Uint8Array(
    await subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: SAS_INFO },
      ikm,
      SAS_WORDS * BYTES_PER_WORD * 8,
    ),
  );
  const words = wordlist.words;
  /** @type {string[]} */
  const result = [];
  for (let i = 0; i < okm.length; i += BYTES_PER_WORD) {
    result.push(words[Number(readU64(okm, i) % BigInt(WORDLIST_SIZE))]);
  }
  return result;
}

/** PBKDF2 salt prefix of the safety words (protocol 2). */
export const SAFETY_INFO = ascii("m42 safety words v1");
/** PBKDF2-HMAC-SHA256 rounds per seat's half: every attacker's guess costs the same. */
export const SAFETY_ITERATIONS = 65536;
export const SAFETY_WORDS_PER_SEAT = 4;

/**
 * The eight safety words of a room: seat A's four, then seat B's four.
 *
 * They depend only on the room and the two static public keys, so they stay
 * the same while neither key changes. Each half is
 * PBKDF2-HMAC-SHA256(P = key, S = "m42 safety words v1" || room_id || seat, 65536, 32 bytes),
 * its first four 8-byte groups mapped to words as in sasWords().
 * @param {Uint8Array} roomId 16 bytes
 * @param {Uint8Array} staticA seat A's static public key, 32 bytes
 * @param {Uint8Array} staticB seat B's static public key, 32 bytes
 * @param {Wordlist} wordlist
 * @returns {Promise<string[]>}
 * @throws {LocalProtocolError} a wrong length, or wordlist is not a Wordlist
 */
export async function safetyWords(roomId, staticA, staticB, wordlist) {
  if (roomId.length !== 16) {
    throw new LocalProtocolError(`room id must be 16 bytes, got ${roomId.length}`);
  }
  if (!(wordlist instanceof Wordlist)) {
    throw new LocalProtocolError("safetyWords() needs a Wordlist (Wordlist.parse)");
  }
  const subtle = globalThis.crypto.subtle;
  const words = wordlist.words;
  /** @type {string[]} */
  const result = [];
  for (const [seat, key] of /** @type {const} */ ([[0x41, staticA], [0x42, staticB]])) {
    if (key.length !== 32) {
      throw new LocalProtocolError(`static key must be 32 bytes, got ${key.length}`);
    }
    const salt = new Uint8Array(SAFETY_INFO.length + 17);
    salt.set(SAFETY_INFO, 0);
    salt.set(roomId, SAFETY_INFO.length);
    salt[SAFETY_INFO.length + 16] = seat;
    const password = await subtle.importKey("raw", toBytes(key), "PBKDF2", false, ["deriveBits"]);
    const half = new Uint8Array(
      await subtle.deriveBits(
        { name: "PBKDF2", hash: "SHA-256", salt, iterations: SAFETY_ITERATIONS },
        password,
        256,
      ),
    );
    for (let i = 0; i < SAFETY_WORDS_PER_SEAT * BYTES_PER_WORD; i += BYTES_PER_WORD) {
      result.push(words[Number(readU64(half, i) % BigInt(WORDLIST_SIZE))]);
    }
  }
  return result;
}

/**
 * The SAS as one line to show or read aloud: words separated by single spaces.
 * @param {Iterable<string>} words
 * @returns {string}
 */
export function formatSas(words) {
  return [...words].join(" ");
}
