// The one exception hierarchy of the browser client. Python twin: m42d/errors.py.
//
// Rules:
// * Every error the client raises on purpose derives from M42Error, split as
//   in h11 by who is at fault: LocalProtocolError (this side misused an API,
//   a bug) and RemoteProtocolError (bytes from outside were malformed, forged
//   or out of order: expected in production).
// * Class names and messages are the Python twin's, so a failure reads the
//   same on both sides and the shared vectors can compare messages.
// * Python has multiple inheritance (DecryptError is a CryptoError *and* a
//   RemoteProtocolError); JS classes have one parent. A class lists its
//   further parents in `static also`, and `instanceof` (through
//   Symbol.hasInstance on M42Error) follows them, so `err instanceof
//   RemoteProtocolError` answers as it does in Python.
// * Messages never contain key material, tokens or room secrets.

export class M42Error extends Error {
  /** @type {ReadonlyArray<Function>} further parents (Python's multiple bases) */
  static also = [];

  /**
   * @param {string} message
   * @param {ErrorOptions} [options] e.g. the cause, as Python's `raise ... from exc`
   */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }

  /**
   * `value instanceof C` is true if C is on value's prototype chain, or if
   * value's class descends from C through some class's `also` list.
   * @override
   * @param {unknown} value
   * @returns {boolean}
   */
  static [Symbol.hasInstance](value) {
    if (typeof value !== "object" || value === null) return false;
    if (Function.prototype[Symbol.hasInstance].call(this, value)) return true;
    return descendsFrom(Object.getPrototypeOf(value).constructor, this);
  }
}

/**
 * Whether `cls` is `target` or inherits from it, counting `also` parents.
 * @param {Function} cls
 * @param {Function} target
 * @returns {boolean}
 */
function descendsFrom(cls, target) {
  for (let c = cls; typeof c === "function"; c = Object.getPrototypeOf(c)) {
    if (c === target) return true;
    const also = Object.hasOwn(c, "also") ? /** @type {{also: Function[]}} */ (/** @type {unknown} */ (c)).also : [];
    if (also.some((parent) => descendsFrom(parent, target))) return true;
  }
  return false;
}

/** This side broke the rules of an API or state machine (a caller bug). */
export class LocalProtocolError extends M42Error {}

/** Input from the network or a user violated the protocol. */
export class RemoteProtocolError extends M42Error {}

/** A room link could not be parsed or is not valid; the message says which part. */
export class LinkError extends M42Error {}

/** A room ticket is malformed (clients only ever check its structure). */
export class TicketError extends RemoteProtocolError {}

/** A relay frame is malformed or exceeds a size cap. */
export class WireError extends RemoteProtocolError {}

/** Base of cryptographic failures. */
export class CryptoError extends M42Error {}

/** Authenticated decryption failed: tampering, a wrong key or a wrong psk. */
export class DecryptError extends CryptoError {
  /** @override */
  static also = [RemoteProtocolError];
}

/** The Noise handshake could not complete (bad message, bad key, low-order point). */
export class HandshakeError extends CryptoError {
  /** @override */
  static also = [RemoteProtocolError];
}

/** A file stream was truncated, extended, reordered or mixed with another file. */
export class StreamError extends CryptoError {
  /** @override */
  static also = [RemoteProtocolError];
}
