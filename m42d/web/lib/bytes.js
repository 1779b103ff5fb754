// Byte strings: hex, base64url, concatenation, big-endian integers, equality.
// Python twins: the byte handling spread over m42d/link.py (_b64encode,
// _b64decode), struct.pack(">H/I/Q") and hmac.compare_digest.
//
// Rules (docs/protocol.md, "Conventions" and "Link"):
// * Byte strings are Uint8Array backed by an ArrayBuffer (what WebCrypto takes).
// * base64url is RFC 4648 section 5 without padding, and exactly one spelling is
//   accepted per byte string: "=" anywhere, a character outside A-Z a-z 0-9 - _,
//   a length of 1 mod 4, or non-zero unused bits in the last character are
//   refused, checked in that order (the order of m42d/link.py's messages).
// * Integers are unsigned big-endian; u64 values are BigInt, never Number, so
//   no value above 2^53 is silently rounded.
// * equalBytes never returns early on the first differing byte (the lengths
//   are not secret), for the places where Python uses hmac.compare_digest.

/** @typedef {Uint8Array<ArrayBuffer>} Bytes */

const HEX = "0123456789abcdef";
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** base64url character -> 6-bit value, -1 for anything else (ASCII only). */
const B64URL_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < B64URL.length; i++) B64URL_VALUE[B64URL.charCodeAt(i)] = i;

const U64_MAX = (1n << 64n) - 1n;

/**
 * A fresh zero-filled byte string.
 * @param {number} length
 * @returns {Bytes}
 */
export function zeros(length) {
  return new Uint8Array(length);
}

/**
 * A copy of `data` in a buffer of its own (so views of larger buffers, or of
 * SharedArrayBuffers, are safe to hand to WebCrypto or to keep).
 * @param {ArrayLike<number> | ArrayBuffer | ArrayBufferView} data
 * @returns {Bytes}
 */
export function toBytes(data) {
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  return Uint8Array.from(data);
}

/**
 * ASCII text as bytes (labels, protocol names); refuses anything else.
 * @param {string} text
 * @returns {Bytes}
 */
export function ascii(text) {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) throw new RangeError("ascii() takes ASCII text only");
    out[i] = c;
  }
  return out;
}

/**
 * Lower-case hex, as Python's bytes.hex().
 * @param {Uint8Array} data
 * @returns {string}
 */
export function toHex(data) {
  let out = "";
  for (const b of data) out += HEX[b >> 4] + HEX[b & 15];
  return out;
}

/**
 * Parse hex (either case, even length, nothing else).
 * @param {string} text
 * @returns {Bytes}
 */
export function fromHex(text) {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new RangeError("hex text must be an even number of hex digits");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * base64url without padding (RFC 4648 section 5).
 * @param {Uint8Array} data
 * @returns {string}
 */
export function toBase64url(data) {
  let out = "";
  let i = 0;
  for (; i + 3 <= data.length; i += 3) {
    const n = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
  }
  const rest = data.length - i;
  if (rest === 1) {
    const n = data[i] << 16;
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (data[i] << 16) | (data[i + 1] << 8);
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63];
  }
  return out;
}

/**
 * Why a text is not canonical base64url; the message is the link layer's,
 * naming the part (`what`) and never echoing the text.
 */
export class Base64urlError extends Error {
  /**
   * @param {string} what the part being decoded, e.g. "ticket"
   * @param {"padding" | "alphabet" | "trailing-bits"} reason
   */
  constructor(what, reason) {
    super(
      reason === "padding"
        ? `${what} must be base64url without '=' padding`
        : reason === "alphabet"
          ? `${what} is not valid base64url`
          : `${what} is not valid base64url (non-zero trailing bits)`,
    );
    this.name = "Base64urlError";
    /** @readonly */
    this.reason = reason;
  }
}

/**
 * Decode unpadded base64url, accepting only the one canonical spelling.
 * @param {string} text
 * @param {string} [what] the part's name for the error message
 * @returns {Bytes}
 * @throws {Base64urlError}
 */
export function fromBase64url(text, what = "value") {
  if (text.includes("=")) throw new Base64urlError(what, "padding");
  if (text.length % 4 === 1) throw new Base64urlError(what, "alphabet");
  const values = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? B64URL_VALUE[c] : -1;
    if (v < 0) throw new Base64urlError(what, "alphabet");
    values[i] = v;
  }
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const v of values) {
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  // What is left over are the unused low bits of the last character.
  if (acc !== 0) throw new Base64urlError(what, "trailing-bits");
  return out;
}

/**
 * The concatenation of byte strings.
 * @param {...Uint8Array} parts
 * @returns {Bytes}
 */
export function concat(...parts) {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/**
 * @param {number} value
 * @param {number} bytes
 * @returns {Bytes}
 */
function uintBE(value, bytes) {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * bytes)) {
    throw new RangeError(`u${8 * bytes} out of range`);
  }
  const out = new Uint8Array(bytes);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = value & 0xff;
    value = Math.floor(value / 256);
  }
  return out;
}

/** @param {number} value @returns {Bytes} */
export const u8 = (value) => uintBE(value, 1);
/** @param {number} value @returns {Bytes} */
export const u16 = (value) => uintBE(value, 2);
/** @param {number} value @returns {Bytes} */
export const u32 = (value) => uintBE(value, 4);

/**
 * An unsigned big-endian integer of `bytes` bytes (u64 is 8; STREAM's nonce
 * counter is 11).
 * @param {bigint} value
 * @param {number} [bytes]
 * @returns {Bytes}
 */
export function u64(value, bytes = 8) {
  if (typeof value !== "bigint" || value < 0n || value >= 1n << BigInt(8 * bytes)) {
    throw new RangeError(`u${8 * bytes} out of range (u64 fields are BigInt)`);
  }
  const out = new Uint8Array(bytes);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return out;
}

/**
 * @param {Uint8Array} data
 * @param {number} offset
 * @param {number} bytes
 * @returns {number}
 */
function readUintBE(data, offset, bytes) {
  if (!Number.isInteger(offset) || offset < 0 || offset + bytes > data.length) {
    throw new RangeError(`u${8 * bytes} read past the end`);
  }
  let value = 0;
  for (let i = 0; i < bytes; i++) value = value * 256 + data[offset + i];
  return value;
}

/** @param {Uint8Array} data @param {number} [offset] @returns {number} */
export const readU16 = (data, offset = 0) => readUintBE(data, offset, 2);
/** @param {Uint8Array} data @param {number} [offset] @returns {number} */
export const readU32 = (data, offset = 0) => readUintBE(data, offset, 4);

/**
 * @param {Uint8Array} data
 * @param {number} [offset]
 * @returns {bigint}
 */
export function readU64(data, offset = 0) {
  if (!Number.isInteger(offset) || offset < 0 || offset + 8 > data.length) {
    throw new RangeError("u64 read past the end");
  }
  let value = 0n;
  for (let i = 0; i < 8; i++) value = (value << 8n) | BigInt(data[offset + i]);
  return value;
}

export { U64_MAX };

/**
 * Equality of two byte strings in time that depends only on their lengths
 * (as hmac.compare_digest: for MACs, tokens and pins).
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * Whether every byte is zero (an X25519 result, record padding); no early exit.
 * @param {Uint8Array} data
 * @returns {boolean}
 */
export function isAllZero(data) {
  let acc = 0;
  for (const b of data) acc |= b;
  return acc === 0;
}
