// Room links: one pasteable string per seat carrying everything a client needs.
// Python twin: m42d/link.py. Normative text: docs/protocol.md, "Link".
//
// Why a little over 500 lines: links and relay URLs are one grammar
// (docs/protocol.md, "Links"), parsed with precise errors that must match
// m42d/link.py message for message; the rules read best in one file.
//
//     <relay-url>#m42.1.<seat>.<ticket>.<token>.<secret>[.<pin>]
//
// Rules:
// * Parsing is strict; the only leniency is whitespace around the whole link
//   (links get pasted with newlines). Whitespace and lengths follow Python's
//   str.strip() and len() (text.js), so both sides refuse the same texts with
//   the same errors.
// * The checks run in the spec's order and the first failure is reported,
//   with the twin's exact message. No message ever contains input text
//   beyond a version number or a length: the input may be a whole link with
//   its secret.
// * Scheme and host are lower-cased; port and path are kept as written, so
//   formatting a parsed link gives back the input up to that normalisation.
// * IPv6 and IPv4 literals follow Python's ipaddress module exactly (which is
//   what "RFC 3986 without zone identifiers, no leading zeros" means in the
//   twin); they are not rewritten.
// * A Link keeps its token and room secret in private fields: they appear in
//   no toString(), JSON.stringify() or console inspection.

import { Base64urlError, fromBase64url, toBase64url, toBytes, toHex } from "./bytes.js";
import { LinkError } from "./errors.js";
import { codePoints, isAscii, strip } from "./text.js";
import { MalformedTicket, TICKET_SIZE, TOKEN_SIZE, parseTicket } from "./ticket.js";

/** @typedef {import("./bytes.js").Bytes} Bytes */
/** @typedef {import("./ticket.js").Seat} Seat */
/** @typedef {import("./ticket.js").Ticket} Ticket */

export const LINK_PREFIX = "m42";
export const LINK_VERSION = 1;
export const SECRET_SIZE = 32;
export const PIN_SIZE = 32;
/** Generous for any real address, small enough to keep links QR-friendly. */
export const MAX_RELAY_URL_LENGTH = 1024;
/** The longest fragment (with a pin) is 176 characters; 256 leaves slack for a version 2. */
export const MAX_LINK_LENGTH = MAX_RELAY_URL_LENGTH + 256;
export const UNIX_SCHEME = "unix";

/** Ports used when a relay URL names none. Other schemes belong to plugins. */
export const DEFAULT_PORTS = /** @type {ReadonlyMap<string, number>} */ (
  new Map([
    ["ws", 80],
    ["wss", 443],
    ["http", 80],
    ["https", 443],
    ["tls", 8043],
  ])
);

const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
const PORT = /^[1-9][0-9]{0,4}$/;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;
const PATH = /^(?:\/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)*$/;
const VERSION = /^[0-9]{1,9}$/;
const DIGITS = /^[0-9]+$/;
const HEX_DIGITS = /^[0-9A-Fa-f]+$/;

/** A parsed relay URL; build it with parseRelayUrl(), which validates. */
export class RelayAddress {
  /**
   * @param {string} scheme lower case; selects the transport plugin
   * @param {string} host lower case; an IPv6 literal without brackets; "" for unix
   * @param {number | null} port the port written in the URL, or null
   * @param {string} path "" or starting with "/", percent-encoded as written
   */
  constructor(scheme, host, port, path) {
    /** @readonly */ this.scheme = scheme;
    /** @readonly */ this.host = host;
    /** @readonly */ this.port = port;
    /** @readonly */ this.path = path;
    Object.freeze(this);
  }

  /** The written port, else the scheme's default, else null (unix, plugins). */
  get effectivePort() {
    return this.port ?? DEFAULT_PORTS.get(this.scheme) ?? null;
  }

  /** The filesystem path of a unix relay, percent-decoded (as urllib.parse.unquote). */
  get socketPath() {
    const bytes = [];
    for (let i = 0; i < this.path.length; i++) {
      if (this.path[i] === "%") {
        bytes.push(parseInt(this.path.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        bytes.push(this.path.charCodeAt(i));
      }
    }
    return new TextDecoder("utf-8").decode(Uint8Array.from(bytes));
  }

  get url() {
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    const port = this.port === null ? "" : `:${this.port}`;
    return `${this.scheme}://${host}${port}${this.path}`;
  }

  /**
   * @param {RelayAddress} other
   * @returns {boolean}
   */
  equals(other) {
    return (
      this.scheme === other.scheme &&
      this.host === other.host &&
      this.port === other.port &&
      this.path === other.path
    );
  }

  toString() {
    return this.url;
  }
}

/**
 * Validate scheme://host[:port][/path] (or unix:///abs/path).
 *
 * Which schemes exist is up to the transport plugins; this checks syntax
 * only: no user info, query or fragment, a valid host for every scheme but
 * unix, whose host must be empty and whose path must be absolute.
 * @param {string} url
 * @returns {RelayAddress}
 * @throws {LinkError} naming the rule broken; the URL itself is never echoed
 */
export function parseRelayUrl(url) {
  return parseRelay(strip(url));
}

/**
 * @param {string} text
 * @returns {RelayAddress}
 */
function parseRelay(text) {
  if (!text) throw new LinkError("relay URL is empty");
  if (codePoints(text) > MAX_RELAY_URL_LENGTH) {
    throw new LinkError(`relay URL is longer than ${MAX_RELAY_URL_LENGTH} characters`);
  }
  if (!isAscii(text)) {
    throw new LinkError("relay URL must be ASCII (write international host names in punycode)");
  }
  const colon = text.indexOf(":");
  const rawScheme = colon < 0 ? text : text.slice(0, colon);
  if (colon < 0 || !SCHEME.test(rawScheme)) {
    throw new LinkError("relay URL has no valid scheme (expected scheme://host[:port][/path])");
  }
  const scheme = rawScheme.toLowerCase();
  const rest = text.slice(colon + 1);
  if (!rest.startsWith("//")) {
    throw new LinkError("relay URL must have the form scheme://host[:port][/path]");
  }
  if (rest.includes("#")) throw new LinkError("relay URL must not contain a fragment ('#')");
  if (rest.includes("?")) throw new LinkError("relay URL must not contain a query ('?')");
  const afterSlashes = rest.slice(2);
  const slash = afterSlashes.indexOf("/");
  const authority = slash < 0 ? afterSlashes : afterSlashes.slice(0, slash);
  const path = slash < 0 ? "" : afterSlashes.slice(slash);
  if (authority.includes("@")) throw new LinkError("relay URL must not contain user info ('@')");
  if (!PATH.test(path)) {
    throw new LinkError(
      "relay URL path has a character that must be percent-encoded, or a bad '%' escape",
    );
  }
  const [host, port] = parseAuthority(authority);
  if (scheme === UNIX_SCHEME) {
    if (host || port !== null) {
      throw new LinkError("unix relay URL must have an empty host: unix:///path/to.sock");
    }
    if (path.length < 2) {
      throw new LinkError("unix relay URL needs an absolute socket path: unix:///path/to.sock");
    }
  } else if (!host) {
    throw new LinkError("relay URL has no host");
  }
  return new RelayAddress(scheme, host, port, path);
}

/**
 * @param {string} authority
 * @returns {[string, number | null]}
 */
function parseAuthority(authority) {
  let host;
  let portPart;
  if (authority.startsWith("[")) {
    const end = authority.indexOf("]");
    if (end < 0) throw new LinkError("relay host has '[' without ']'");
    host = authority.slice(1, end);
    portPart = authority.slice(end + 1);
    if (portPart && !portPart.startsWith(":")) {
      throw new LinkError("relay host literal ']' must be followed by ':port' or '/'");
    }
    if (!IPV6_CHARS.test(host) || !isIPv6(host)) {
      throw new LinkError("relay host in brackets is not a valid IPv6 address");
    }
    host = host.toLowerCase();
  } else {
    if (authority.split(":").length - 1 > 1) {
      throw new LinkError("relay host: IPv6 addresses must be written in brackets");
    }
    const colon = authority.indexOf(":");
    host = colon < 0 ? authority : authority.slice(0, colon);
    portPart = authority.slice(host.length);
    if (host) host = checkHostName(host.toLowerCase());
  }
  let port = null;
  if (portPart) {
    const portText = portPart.slice(1);
    if (!PORT.test(portText) || Number(portText) > 65535) {
      throw new LinkError("relay port must be a decimal number 1-65535 without leading zeros");
    }
    port = Number(portText);
  }
  return [host, port];
}

/**
 * @param {string} host lower case
 * @returns {string}
 */
function checkHostName(host) {
  const labels = host.split(".");
  if (host.length > 253 || !labels.every((label) => LABEL.test(label))) {
    throw new LinkError(
      "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    );
  }
  // WHATWG rule: a numeric last label makes the host an IPv4 address.
  if (DIGITS.test(labels[labels.length - 1]) && !isIPv4(host)) {
    throw new LinkError("relay host is not a valid IPv4 address");
  }
  return host;
}

/**
 * Dotted decimal as Python's ipaddress.IPv4Address: four octets 0-255, no
 * leading zeros, ASCII digits only.
 * @param {string} text
 * @returns {boolean}
 */
function isIPv4(text) {
  const octets = text.split(".");
  if (octets.length !== 4) return false;
  return octets.every(
    (o) =>
      o.length >= 1 &&
      o.length <= 3 &&
      DIGITS.test(o) &&
      (o === "0" || o[0] !== "0") &&
      Number(o) <= 255,
  );
}

/**
 * An IPv6 literal as Python's ipaddress.IPv6Address accepts it (the
 * characters are already limited to hex digits, ':' and '.'; no zone).
 * @param {string} text
 * @returns {boolean}
 */
function isIPv6(text) {
  const parts = text.split(":");
  if (parts.length < 3) return false;
  const last = parts[parts.length - 1];
  if (last.includes(".")) {
    if (!isIPv4(last)) return false;
    parts.splice(parts.length - 1, 1, "0", "0"); // two hextets; their value does not matter here
  }
  if (parts.length > 9) return false;
  let skip = -1;
  for (let i = 1; i < parts.length - 1; i++) {
    if (!parts[i]) {
      if (skip >= 0) return false; // at most one '::'
      skip = i;
    }
  }
  /** @type {string[]} */
  let hextets;
  if (skip >= 0) {
    let hi = skip;
    let lo = parts.length - skip - 1;
    if (!parts[0] && --hi) return false; // a leading ':' only as part of '::'
    if (!parts[parts.length - 1] && --lo) return false; // a trailing ':' likewise
    if (8 - (hi + lo) < 1) return false;
    hextets = [...parts.slice(0, hi), ...parts.slice(parts.length - lo)];
  } else {
    if (parts.length !== 8 || !parts[0] || !parts[parts.length - 1]) return false;
    hextets = parts;
  }
  return hextets.every((h) => HEX_DIGITS.test(h) && h.length <= 4);
}

/**
 * Decode one fragment part, with the link layer's messages.
 * @param {string} text
 * @param {string} what
 * @returns {Bytes}
 */
function decodePart(text, what) {
  try {
    return fromBase64url(text, what);
  } catch (exc) {
    if (exc instanceof Base64urlError) throw new LinkError(exc.message);
    throw exc;
  }
}

/**
 * @param {string} what
 * @param {unknown} value
 * @param {number} size
 * @returns {asserts value is Uint8Array}
 */
function checkSize(what, value, size) {
  if (!(value instanceof Uint8Array)) throw new LinkError(`${what} must be bytes`);
  if (value.length !== size) throw new LinkError(`${what} must be ${size} bytes, got ${value.length}`);
}

/**
 * @param {unknown} value
 * @returns {asserts value is Uint8Array}
 */
function validateTicket(value) {
  checkSize("ticket", value, TICKET_SIZE);
  try {
    parseTicket(value);
  } catch (exc) {
    if (exc instanceof MalformedTicket) throw new LinkError(`ticket is malformed: ${exc.message}`);
    throw exc;
  }
}

/**
 * @typedef {object} LinkFields
 * @property {string} relay a relay URL; normalised on construction
 * @property {Seat} seat
 * @property {Uint8Array} ticket 42 bytes
 * @property {Uint8Array} token 16 bytes, this seat's token
 * @property {Uint8Array} secret 32 bytes, the room secret R
 * @property {Uint8Array | null} [pin] 32 bytes, SHA-256 of the relay certificate (DER)
 */

/**
 * One seat's link. Construction validates and normalises every field
 * (throwing LinkError, in the twin's order: relay, seat, ticket, token,
 * secret, pin), so a Link in hand always formats to a link that
 * Link.parse() reads back equal.
 */
export class Link {
  /** @type {Bytes} */ #ticket;
  /** @type {Bytes} */ #token;
  /** @type {Bytes} */ #secret;
  /** @type {Bytes | null} */ #pin;

  /** @param {LinkFields} fields */
  constructor({ relay, seat, ticket, token, secret, pin = null }) {
    const address = parseRelayUrl(relay);
    if (seat !== "A" && seat !== "B") throw new LinkError("seat must be A or B");
    validateTicket(ticket);
    checkSize("seat token", token, TOKEN_SIZE);
    checkSize("room secret", secret, SECRET_SIZE);
    if (pin !== null) checkSize("certificate pin", pin, PIN_SIZE);
    /** @readonly the normalised relay URL */
    this.relay = address.url;
    /** @readonly @type {Seat} */
    this.seat = seat;
    this.#ticket = toBytes(ticket);
    this.#token = toBytes(token);
    this.#secret = toBytes(secret);
    this.#pin = pin === null ? null : toBytes(pin);
    Object.freeze(this);
  }

  /** The 42-byte ticket (a copy). */
  get ticket() {
    return this.#ticket.slice();
  }

  /** This seat's 16-byte token (a copy). Never show or log it. */
  get token() {
    return this.#token.slice();
  }

  /** The 32-byte room secret R (a copy). Never show, log or send it. */
  get secret() {
    return this.#secret.slice();
  }

  /** The certificate pin (a copy), or null. */
  get pin() {
    return this.#pin === null ? null : this.#pin.slice();
  }

  get relayAddress() {
    return parseRelayUrl(this.relay);
  }

  get scheme() {
    return this.relayAddress.scheme;
  }

  /** Host to connect to: IPv6 without brackets, "" for unix. */
  get relayHost() {
    return this.relayAddress.host;
  }

  /** Written port or scheme default; null where neither exists. */
  get relayPort() {
    return this.relayAddress.effectivePort;
  }

  /** @returns {Readonly<Ticket>} */
  get parsedTicket() {
    return parseTicket(this.#ticket);
  }

  get roomId() {
    return this.parsedTicket.roomId;
  }

  /** Ticket expiry (unix seconds), as the relay claims it; unauthenticated here. */
  get expires() {
    return this.parsedTicket.expires;
  }

  /** The link text. It contains the room secret: show it only to its owner. */
  format() {
    const parts = [
      LINK_PREFIX,
      String(LINK_VERSION),
      this.seat,
      toBase64url(this.#ticket),
      toBase64url(this.#token),
      toBase64url(this.#secret),
    ];
    if (this.#pin !== null) parts.push(toBase64url(this.#pin));
    return `${this.relay}#${parts.join(".")}`;
  }

  /**
   * The same seat reached through another relay address (same key holders).
   * @param {string} relay
   * @returns {Link}
   */
  withRelay(relay) {
    return new Link({ ...this.#fields(), relay });
  }

  /**
   * Field-by-field equality (as the twin's attrs equality).
   * @param {Link} other
   * @returns {boolean}
   */
  equals(other) {
    return other instanceof Link && this.format() === other.format();
  }

  /** @returns {LinkFields} */
  #fields() {
    return {
      relay: this.relay,
      seat: this.seat,
      ticket: this.#ticket,
      token: this.#token,
      secret: this.#secret,
      pin: this.#pin,
    };
  }

  /** The twin's repr: no token, no secret. */
  toString() {
    const pin = this.#pin === null ? "None" : `'${toHex(this.#pin)}'`;
    return `Link(relay='${this.relay}', seat=${this.seat}, ticket='${toHex(this.#ticket)}', pin=${pin})`;
  }

  /** What JSON.stringify() shows: no token, no secret. */
  toJSON() {
    return {
      relay: this.relay,
      seat: this.seat,
      ticket: toHex(this.#ticket),
      pin: this.#pin === null ? null : toHex(this.#pin),
    };
  }

  /**
   * Read a link; surrounding whitespace is ignored, nothing else is forgiven.
   * @param {string} text
   * @returns {Link}
   * @throws {LinkError} naming the part that is wrong, never echoing secret text
   */
  static parse(text) {
    text = strip(text);
    if (codePoints(text) > MAX_LINK_LENGTH) {
      throw new LinkError(`link is longer than ${MAX_LINK_LENGTH} characters`);
    }
    const hash = text.indexOf("#");
    if (hash < 0) throw new LinkError("link has no '#' fragment (the room secret is missing)");
    const fragment = text.slice(hash + 1);
    if (fragment.includes("#")) throw new LinkError("link has more than one '#'");
    // No strip here: whitespace before '#' is not "surrounding".
    const relay = parseRelay(text.slice(0, hash)).url;
    const fields = fragment.split(".");
    if (fields[0] !== LINK_PREFIX || fields.length < 2) {
      throw new LinkError(`link fragment must start with '${LINK_PREFIX}.'`);
    }
    if (!VERSION.test(fields[1])) throw new LinkError("link version is not a decimal number");
    if (fields[1] !== String(LINK_VERSION)) {
      throw new LinkError(`unsupported link version ${fields[1]}`);
    }
    if (fields.length !== 6 && fields.length !== 7) {
      throw new LinkError(
        `link fragment has ${fields.length} fields, expected 6 or 7 ` +
          "(m42.1.<seat>.<ticket>.<token>.<secret>[.<pin>])",
      );
    }
    const seat = fields[2];
    if (seat !== "A" && seat !== "B") throw new LinkError("seat must be A or B");
    // Each part is decoded and checked before the next one is looked at, so
    // the first broken part (reading left to right) is the one reported.
    const ticket = decodePart(fields[3], "ticket");
    validateTicket(ticket);
    const token = decodePart(fields[4], "seat token");
    checkSize("seat token", token, TOKEN_SIZE);
    const secret = decodePart(fields[5], "room secret");
    checkSize("room secret", secret, SECRET_SIZE);
    const pin = fields.length === 7 ? decodePart(fields[6], "certificate pin") : null;
    return new Link({ relay, seat, ticket, token, secret, pin });
  }
}

/**
 * Both seats' links for a freshly created room (ROOM_CREATED), A first.
 * @param {string} relay
 * @param {{ticket: Uint8Array, tokenA: Uint8Array, tokenB: Uint8Array}} room
 * @param {Uint8Array} secret the room secret R the client drew
 * @param {{pin?: Uint8Array | null}} [options]
 * @returns {[Link, Link]}
 */
export function makeLinks(relay, { ticket, tokenA, tokenB }, secret, { pin = null } = {}) {
  return [
    new Link({ relay, seat: "A", ticket, token: tokenA, secret, pin }),
    new Link({ relay, seat: "B", ticket, token: tokenB, secret, pin }),
  ];
}
