// The one exception hierarchy of the browser client. Python twin: m42d/errors.py.
//
// Rules:
// * Every error the client raises on purpose derives from M42Error, split as
//   in h11 by who is at fault: LocalProtocolError (this side misused an API,
//   a bug) and RemoteProtocolError (bytes from outside were malformed, forged
//   or out of order: expected in production). Cryptographic failures on what
//   arrived (CryptoError) are remote ones.
// * One parent per class, as in the twin (single inheritance there too), so
//   `instanceof` is JavaScript's own and the tree says who is at fault.
// * Class names and messages are the Python twin's, so a failure reads the
//   same on both sides and the shared vectors can compare messages.
// * Messages never contain key material, tokens or room secrets.

export class M42Error extends Error {
  /**
   * @param {string} message
   * @param {ErrorOptions} [options] e.g. the cause, as Python's `raise ... from exc`
   */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
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

/** Base of cryptographic failures on what arrived. */
export class CryptoError extends RemoteProtocolError {}

/** Authenticated decryption failed: tampering, a wrong key or a wrong psk. */
export class DecryptError extends CryptoError {}

/** The Noise handshake could not complete (bad message, bad key, low-order point). */
export class HandshakeError extends CryptoError {}

/** A file stream was truncated, extended, reordered or mixed with another file. */
export class StreamError extends CryptoError {}
