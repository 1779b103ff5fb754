// File STREAM encryption: one AES-256-GCM key per file, counter nonces, a last-chunk flag.
// Python twin: m42d/crypto/stream.py. Normative text: docs/protocol.md,
// "File STREAM encryption".
//
// Files travel on the bulk lane, outside the Noise cipher states, each under
// its own random key sent inside the (Noise-encrypted) file offer. Chunks are
// sealed with the STREAM construction as used by age: the nonce is the chunk
// counter plus a flag set only on the final chunk. The flag makes truncation
// detectable; the counter makes reordering, skipping and splicing detectable.
//
// Rules and invariants (the twin's):
// * Plaintext is cut into chunks of exactly CHUNK_SIZE bytes; only the final
//   chunk may be shorter, and it is empty only when the whole file is empty.
// * Chunk key K = HKDF-SHA256(ikm = file_key, salt = salt, info = "m42 file
//   stream v1", L = 32); it never leaves WebCrypto (non-extractable). Nonce of
//   chunk i = i as 11 bytes big-endian || flag (0x01 final, else 0x00). No
//   associated data.
// * Chunk indexes, sizes and counts are BigInt (u64 on the wire); indexes are
//   below MAX_CHUNKS = 2^64.
// * A decryptor accepts chunks strictly in order from `start`. After the final
//   chunk it is done and refuses any further chunk (extension); finish()
//   before the final chunk throws (truncation). Any refused chunk poisons it:
//   resuming means a new decryptor with start = nextIndex. Its calls run in
//   call order (serial.js), so two chunks can never be opened at one index.
// * The encryptor is stateless apart from the key (random access for resume).
//   It refuses, as LocalProtocolError, any chunk that would break the framing
//   rule; the decryptor refuses the same with StreamError.
// * Error messages name the chunk index and the rule, never key material, and
//   are the twin's word for word.

import { ascii, concat, toBytes, u64 } from "./bytes.js";
import { LocalProtocolError, StreamError } from "./errors.js";
import { Serial } from "./serial.js";

/** @typedef {import("./bytes.js").Bytes} Bytes */

/** Plaintext bytes in every chunk but the last. */
export const CHUNK_SIZE = 262144;
/** AES-GCM tag appended to each chunk. */
export const TAG_SIZE = 16;
/** Size on the wire of a full chunk; no chunk is larger. */
export const ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
export const FILE_KEY_SIZE = 32;
export const SALT_SIZE = 32;
/** Chunk indexes stay below this. */
export const MAX_CHUNKS = 1n << 64n;
/** HKDF info label; a new version of the construction gets a new label. */
export const STREAM_INFO = ascii("m42 file stream v1");

const NONCE_PREFIX_SIZE = 11;
const FLAG_MORE = Uint8Array.of(0);
const FLAG_LAST = Uint8Array.of(1);

/** @returns {SubtleCrypto} */
function subtle() {
  return globalThis.crypto.subtle;
}

/**
 * The per-file secret sent in a file offer: key material plus the HKDF salt.
 * Both halves are random per file, so a chunk of one file can never
 * authenticate as a chunk of another. Neither appears in toString() or JSON.
 */
export class FileKey {
  /** @type {Bytes} */ #key;
  /** @type {Bytes} */ #salt;

  /**
   * @param {Uint8Array} key 32 bytes
   * @param {Uint8Array} salt 32 bytes
   * @throws {StreamError} a wrong length (the offer comes from the peer)
   */
  constructor(key, salt) {
    if (key.length !== FILE_KEY_SIZE) {
      throw new StreamError(`file stream key must be ${FILE_KEY_SIZE} bytes, got ${key.length}`);
    }
    if (salt.length !== SALT_SIZE) {
      throw new StreamError(`file stream salt must be ${SALT_SIZE} bytes, got ${salt.length}`);
    }
    this.#key = toBytes(key);
    this.#salt = toBytes(salt);
    Object.freeze(this);
  }

  /** A fresh key for one file; never reuse it for another file. */
  static generate() {
    const random = globalThis.crypto.getRandomValues(new Uint8Array(FILE_KEY_SIZE + SALT_SIZE));
    return new FileKey(random.subarray(0, FILE_KEY_SIZE), random.subarray(FILE_KEY_SIZE));
  }

  /** The key bytes (a copy), for the file offer only. */
  get key() {
    return this.#key.slice();
  }

  /** The salt bytes (a copy), for the file offer only. */
  get salt() {
    return this.#salt.slice();
  }

  toString() {
    return "FileKey()";
  }

  toJSON() {
    return "FileKey()";
  }
}

/**
 * The chunk AES key, derived inside WebCrypto and never extractable.
 * @param {FileKey} fileKey
 * @returns {Promise<CryptoKey>}
 */
async function chunkCipher(fileKey) {
  const ikm = await subtle().importKey("raw", fileKey.key, "HKDF", false, ["deriveKey"]);
  return subtle().deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: fileKey.salt, info: STREAM_INFO },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/**
 * Number of chunks of a file of `size` bytes; an empty file still has one.
 * @param {bigint} size
 * @returns {bigint}
 */
export function chunkCount(size) {
  if (typeof size !== "bigint") throw new LocalProtocolError("file size must be a BigInt");
  if (size < 0n) throw new LocalProtocolError(`file size must not be negative, got ${size}`);
  if (size === 0n) return 1n;
  const chunk = BigInt(CHUNK_SIZE);
  return (size + chunk - 1n) / chunk;
}

/**
 * Bytes on the bulk lane for a file of `size` bytes (plaintext plus one tag per chunk).
 * @param {bigint} size
 * @returns {bigint}
 */
export function encryptedSize(size) {
  return size + chunkCount(size) * BigInt(TAG_SIZE);
}

/**
 * @param {bigint} index
 * @returns {void}
 */
function checkIndex(index) {
  if (typeof index !== "bigint") throw new LocalProtocolError("chunk index must be a BigInt");
  if (index < 0n || index >= MAX_CHUNKS) {
    throw new LocalProtocolError(`chunk index ${index} is outside [0, 2**64)`);
  }
}

/**
 * @param {bigint} index
 * @param {Uint8Array} flag
 * @returns {Bytes}
 */
function nonce(index, flag) {
  return concat(u64(index, NONCE_PREFIX_SIZE), flag);
}

/**
 * AES-GCM open; null when the tag does not verify.
 * @param {CryptoKey} key
 * @param {Bytes} iv
 * @param {Bytes} ciphertext
 * @returns {Promise<Bytes | null>}
 */
async function tryOpen(key, iv, ciphertext) {
  try {
    return new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv, tagLength: 128 }, key, ciphertext));
  } catch (exc) {
    if (typeof exc === "object" && exc !== null && "name" in exc && exc.name === "OperationError") {
      return null;
    }
    throw exc;
  }
}

/**
 * Decrypt chunk `index`, working out from the tag whether it is the final one.
 *
 * As in age, a full-size chunk is tried as non-final first (the common case),
 * then as final; a shorter chunk can only be final. A short chunk that
 * authenticates as non-final was framed wrongly by the sender; that is
 * checked only after failing, so it costs nothing on the good path.
 * @param {CryptoKey} key
 * @param {bigint} index
 * @param {Uint8Array} data
 * @returns {Promise<[Bytes, boolean]>}
 */
async function open(key, index, data) {
  const ciphertext = toBytes(data);
  const n = ciphertext.length;
  if (n < TAG_SIZE) {
    throw new StreamError(`chunk ${index} is ${n} bytes, shorter than the ${TAG_SIZE}-byte tag`);
  }
  if (n > ENCRYPTED_CHUNK_SIZE) {
    throw new StreamError(`chunk ${index} is ${n} bytes, longer than the maximum ${ENCRYPTED_CHUNK_SIZE}`);
  }
  if (n === ENCRYPTED_CHUNK_SIZE) {
    const plaintext = await tryOpen(key, nonce(index, FLAG_MORE), ciphertext);
    if (plaintext !== null) return [plaintext, false];
  }
  const plaintext = await tryOpen(key, nonce(index, FLAG_LAST), ciphertext);
  if (plaintext === null) {
    if (n < ENCRYPTED_CHUNK_SIZE && (await tryOpen(key, nonce(index, FLAG_MORE), ciphertext)) !== null) {
      throw new StreamError(`chunk ${index} is marked non-final but holds fewer than ${CHUNK_SIZE} bytes`);
    }
    throw new StreamError(`chunk ${index} failed authentication (tampered, out of order, or from another file)`);
  }
  if (plaintext.length === 0 && index !== 0n) {
    throw new StreamError(`chunk ${index} is an empty final chunk; only an empty file may end with one`);
  }
  return [plaintext, true];
}

/**
 * Decrypt one chunk out of order; returns [plaintext, isLast].
 *
 * Derives the key on each call, so it suits spot checks, not a transfer: use
 * StreamDecryptor, which also enforces order and completeness.
 * @param {FileKey} fileKey
 * @param {bigint} index
 * @param {Uint8Array} ciphertext
 * @returns {Promise<[Bytes, boolean]>}
 */
export async function decryptChunk(fileKey, index, ciphertext) {
  checkIndex(index);
  return open(await chunkCipher(fileKey), index, ciphertext);
}

/**
 * Seals the chunks of one file. Random access on purpose: after a reconnect
 * the sender resumes at the first chunk the receiver has not acknowledged.
 * Deterministic: a (key, nonce) pair only ever seals the one chunk of the
 * file at that position.
 */
export class StreamEncryptor {
  /** @type {CryptoKey} */ #key;

  /**
   * Use StreamEncryptor.create().
   * @param {CryptoKey} key
   */
  constructor(key) {
    this.#key = key;
  }

  /**
   * @param {FileKey} fileKey
   * @returns {Promise<StreamEncryptor>}
   */
  static async create(fileKey) {
    return new StreamEncryptor(await chunkCipher(fileKey));
  }

  /**
   * Chunk `index` of the file, sealed; `last` marks the final chunk.
   * @param {bigint} index
   * @param {Uint8Array} plaintext
   * @param {{last: boolean}} options
   * @returns {Promise<Bytes>}
   * @throws {LocalProtocolError} the index is out of range, or the chunk breaks
   *   the framing rule (a non-final chunk must hold exactly CHUNK_SIZE bytes;
   *   only chunk 0 may be an empty final chunk)
   */
  async encryptChunk(index, plaintext, { last }) {
    checkIndex(index);
    const n = plaintext.length;
    if (n > CHUNK_SIZE) throw new LocalProtocolError(`chunk ${index} holds ${n} bytes, more than ${CHUNK_SIZE}`);
    let flag;
    if (last) {
      if (n === 0 && index !== 0n) {
        throw new LocalProtocolError(
          `chunk ${index} would be an empty final chunk; make chunk ${index - 1n} final`,
        );
      }
      flag = FLAG_LAST;
    } else {
      if (n !== CHUNK_SIZE) {
        throw new LocalProtocolError(
          `non-final chunk ${index} holds ${n} bytes; it must hold exactly ${CHUNK_SIZE}`,
        );
      }
      flag = FLAG_MORE;
    }
    const params = { name: "AES-GCM", iv: nonce(index, flag), tagLength: 128 };
    return new Uint8Array(await subtle().encrypt(params, this.#key, toBytes(plaintext)));
  }
}

/**
 * Opens the chunks of one file strictly in order and tells when it is complete.
 * The decryptor owns the chunk counter, so a chunk that arrives out of place
 * fails authentication instead of being silently accepted.
 */
export class StreamDecryptor {
  /** @type {CryptoKey} */ #key;
  /** @type {bigint} */ #next;
  #done = false;
  #failed = false;
  #serial = new Serial();

  /**
   * Use StreamDecryptor.create().
   * @param {CryptoKey} key
   * @param {bigint} start
   */
  constructor(key, start) {
    checkIndex(start);
    this.#key = key;
    this.#next = start;
  }

  /**
   * @param {FileKey} fileKey
   * @param {{start?: bigint}} [options] the resume index (default 0)
   * @returns {Promise<StreamDecryptor>}
   */
  static async create(fileKey, { start = 0n } = {}) {
    checkIndex(start);
    return new StreamDecryptor(await chunkCipher(fileKey), start);
  }

  /** Index of the chunk expected next (after the final chunk: one past it). */
  get nextIndex() {
    return this.#next;
  }

  /** True once the final chunk has been authenticated. */
  get done() {
    return this.#done;
  }

  /**
   * Plaintext of the next chunk.
   * @param {Uint8Array} ciphertext
   * @returns {Promise<Bytes>}
   * @throws {StreamError} the chunk is tampered, out of order, from another
   *   file, badly framed, over-long, or comes after the final chunk; or this
   *   decryptor already failed
   */
  decryptNext(ciphertext) {
    return this.#serial.run(async () => {
      if (this.#failed) throw new StreamError("file stream already failed; resume with a new decryptor");
      if (this.#done) {
        this.#failed = true;
        throw new StreamError(`chunk ${this.#next} arrived after the final chunk (stream extended)`);
      }
      if (this.#next >= MAX_CHUNKS) {
        this.#failed = true;
        throw new StreamError("file stream has 2**64 chunks and no final chunk");
      }
      let plaintext;
      let last;
      try {
        [plaintext, last] = await open(this.#key, this.#next, ciphertext);
      } catch (exc) {
        this.#failed = true;
        throw exc;
      }
      this.#next += 1n;
      this.#done = last;
      return plaintext;
    });
  }

  /**
   * Confirm the file is complete; call it when the sender says the file
   * ended. It runs after every decryptNext() called before it.
   * @returns {Promise<void>}
   * @throws {StreamError} the final chunk was never seen (the stream was truncated)
   */
  finish() {
    return this.#serial.run(async () => {
      if (!this.#done) {
        throw new StreamError(
          this.#next > 0n
            ? `file stream truncated: no final chunk after chunk ${this.#next - 1n}`
            : "file stream truncated: no chunk received",
        );
      }
    });
  }
}
