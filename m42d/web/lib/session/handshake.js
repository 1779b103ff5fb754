// The handshakes of one seat and the keys they make (docs/protocol.md, "Handshake").
// Python twin: m42d/session/handshake.py.
//
// Why ~600 lines: the three Noise messages, their retry and renewal, the
// key pin and RESET belong to one state: each step reads and writes the
// handshake in flight and the keys in use (twin: m42d/session/handshake.py).
//
// Rules and invariants (the twin's):
// * Seat A is the Noise initiator, seat B the responder, always. The pattern
//   is Noise_XXpsk3_25519_AESGCM_SHA256 with psk = HKDF(R, salt=room_id,
//   info="m42 psk v1") and prologue = "m42d/2" || room_id. HS1 and HS2 carry
//   mode | version; HS3 carries A's padded HELLO.
// * One handshake at a time, named by the hs_id A draws (never 0). A
//   handshake message with another id is stale and ignored, not fatal.
// * Message 1 needs no secret, so it proves nothing: an established B keeps
//   its session (and ignores a HS1 it cannot parse) until HS3 authenticates A.
// * The psk enters only in message 3, so A trusts the new keys only once B's
//   HELLO decrypts with them (key confirmation); someone in the middle
//   without R fails on both sides.
// * A renewal keeps the old keys for receiving until the new ones are
//   confirmed, and each side checks that it received exactly the peer's
//   old_count records on the old keys: nothing vanishes across a switch.
// * The peer's static key is pinned on first contact; a different one is
//   reported (PeerKeyChanged) and no keys are installed.
// * RESET is B's unauthenticated "my session broke" (with a reason that is
//   only ever a hint). A acts on one that names its session or its
//   handshake; B repeats it with back-off, as A backs off its retries.
//
// What the browser changes: the static key pair comes from the key store as
// a (possibly non-extractable) CryptoKey pair, and is made there with
// noise.js's generateKeyPair() unless the caller supplies its own random
// source (known-answer transcripts), in which case every key is drawn from
// it in the twin's order. The methods that touch WebCrypto are async; the
// machine awaits each before the next, so they run in the twin's order.

import { readU32 } from "../bytes.js";
import { DecryptError, HandshakeError, LocalProtocolError } from "../errors.js";
import { HandshakeState, PROTOCOL_NAME, generateKeyPair, keyPairFromPrivate } from "../noise.js";
import { safetyWords } from "../sas.js";
import { PeerKeyChanged } from "./events.js";
import { derivePsk, prologue } from "./keys.js";
import {
  Envelope,
  HS_ID,
  RESET_BODY,
  RecordType,
  ResetReason,
  SessionError,
  decodeHello,
  decodeHs3Payload,
  decodeHsPayload,
  decodeRecord,
  handshakeMessage,
  hsPayload,
  readHsId,
  resetMessage,
} from "./records.js";

/** @typedef {import("../bytes.js").Bytes} Bytes */
/** @typedef {import("../noise.js").KeyPair} KeyPair */
/** @typedef {import("../noise.js").CipherState} CipherState */
/** @typedef {import("../noise.js").TransportPair} TransportPair */
/** @typedef {import("../sas.js").Wordlist} Wordlist */
/** @typedef {import("../ticket.js").Seat} Seat */
/** @typedef {import("./keys.js").KeyStore} KeyStore */
/** @typedef {import("./records.js").Hello} Hello */

/** Seconds: the longest back-off between failed handshakes. */
export const RETRY_MAX = 30;

/** @type {ReadonlyArray<[number, ReadonlySet<number>]>} */
const SUPERSEDED = [
  // A new HS1 starts over: the old handshake's HS1 and HS3 are moot.
  [Envelope.HS1, new Set([Envelope.HS1, Envelope.HS3])],
  // B answers only its latest HS1; A accepts only its current hs_id.
  [Envelope.HS2, new Set([Envelope.HS2])],
  [Envelope.HS3, new Set([Envelope.HS3])],
  [Envelope.RESET, new Set([Envelope.RESET])],
];
/** @type {ReadonlyMap<number, ReadonlySet<number>>} unsent payloads (by envelope) a new one of the key's envelope makes pointless */
export const SUPERSEDES = new Map(SUPERSEDED);

/** @type {ReadonlyMap<number, string>} */
export const RESET_SENTENCES = new Map([
  [ResetReason.UNSPECIFIED, "the peer could not continue the session"],
  [
    ResetReason.AUTHENTICATION,
    "the other side could not authenticate this one: the two links' room secrets " +
      "differ (was a link changed?), or someone is in the middle",
  ],
  [ResetReason.VERSION, "the other side runs another version of the m42 session protocol"],
]);

/** A handshake completed and its keys are installed. */
export class Established {
  /**
   * @param {Hello} peerHello
   * @param {Bytes} peerKey
   * @param {boolean} firstContact
   * @param {boolean} fresh not a renewal: everything unacknowledged goes again
   * @param {bigint} oldSent B, renewing: records it sent on the old keys (its HELLO's oldCount); else 0
   * @param {ReadonlyArray<string>} words
   */
  constructor(peerHello, peerKey, firstContact, fresh, oldSent, words) {
    this.peerHello = peerHello;
    this.peerKey = peerKey;
    this.firstContact = firstContact;
    this.fresh = fresh;
    this.oldSent = oldSent;
    this.words = words;
    Object.freeze(this);
  }
}

/** @typedef {Established | PeerKeyChanged | null} Outcome what a HS3 (B) or B's HELLO (A) did */

/**
 * @typedef {object} HandshakeOptions
 * @property {Seat} seat A initiates, B responds
 * @property {Uint8Array} roomId
 * @property {Uint8Array} secret the room secret R
 * @property {KeyStore} keys where the static key pair and the pinned peer key live
 * @property {Wordlist} wordlist for the safety words
 * @property {((n: number) => Bytes) | null} drawKeys null: keys come from
 *   WebCrypto's generateKey; else every key is drawn from it (transcripts)
 * @property {(n: number) => Bytes} random source of handshake ids
 * @property {(oldCount: bigint) => Bytes} hello makes our padded HELLO record
 */

/** One seat's handshakes, the keys they made, the pin and the back-off. */
export class Handshake {
  /** @type {HandshakeOptions} */ #o;
  /** @type {Readonly<KeyPair>} */ #static;
  /** @type {Bytes} */ #psk;
  /** @type {{key: Uint8Array, words: ReadonlyArray<string>} | null} PBKDF2 runs once per key */
  #words = null;
  /** @type {Uint8Array | null} */ #changedKey = null;

  // The handshake in progress, and what it was started for.
  /** @type {HandshakeState | null} */ #hs = null;
  #started = 0;
  #hsId = 0;
  #renew = false;
  #oldSent = 0n; // A: records sent on the old keys
  /** @type {Readonly<TransportPair> | null} */ #pending = null;

  // The keys in use.
  #sessionId = 0;
  /** @type {CipherState | null} */ #send = null;
  /** @type {CipherState | null} */ #recv = null;
  #keyedAt = 0;
  #sealed = 0; // records sealed on these keys

  // Failures: A's retries, B's RESETs.
  #failures = 0;
  #retryAt = 0;
  #resetId = 0; // B: what the RESET names
  #resetAt = 0; // B: the next RESET
  #resetWhy = 0; // B: the ResetReason it carries

  /**
   * Use Handshake.create().
   * @param {HandshakeOptions} options
   * @param {Readonly<KeyPair>} staticKey
   * @param {Bytes} psk
   */
  constructor(options, staticKey, psk) {
    this.#o = options;
    this.#static = staticKey;
    this.#psk = psk;
  }

  /**
   * Load (or make and save, on first use) this seat's static key, and derive the psk.
   * @param {HandshakeOptions} options
   * @returns {Promise<Handshake>}
   */
  static async create(options) {
    let staticKey = await options.keys.loadStatic(options.roomId, options.seat);
    if (staticKey === null) {
      staticKey = await newKeyPair(options.drawKeys);
      await options.keys.saveStatic(options.roomId, options.seat, staticKey);
    }
    return new Handshake(options, staticKey, await derivePsk(options.secret, options.roomId));
  }

  // -- what the machine asks -----------------------------------------------------

  get staticPublic() {
    return this.#static.publicKey.slice();
  }

  /** Session keys are installed (records can be sealed and opened). */
  get keyed() {
    return this.#send !== null;
  }

  get inProgress() {
    return this.#hs !== null;
  }

  /** A, after HS3: new keys made, waiting for B's HELLO to prove them. */
  get confirming() {
    return this.#pending !== null;
  }

  /**
   * The safety words of the room with this peer key.
   * @param {Uint8Array} peerKey
   * @returns {Promise<ReadonlyArray<string>>}
   */
  async words(peerKey) {
    const cached = this.#words;
    if (cached !== null && equal(cached.key, peerKey)) return cached.words;
    const ours = this.#static.publicKey;
    const [a, b] = this.#o.seat === "A" ? [ours, peerKey] : [peerKey, ours];
    const words = Object.freeze(await safetyWords(this.#o.roomId, a, b, this.#o.wordlist));
    this.#words = { key: peerKey.slice(), words };
    return words;
  }

  /** @returns {Promise<ReadonlyArray<string>>} */
  async pinnedWords() {
    const pinned = await this.#o.keys.loadPeer(this.#o.roomId, this.#o.seat);
    return pinned === null ? [] : this.words(pinned);
  }

  /** @param {number} now @param {number} timeout */
  timedOut(now, timeout) {
    return this.#hs !== null && now - this.#started > timeout;
  }

  /** A: the back-off after a failure is over. @param {number} now */
  retryDue(now) {
    return now >= this.#retryAt;
  }

  /** B: the peer should hear that a session or handshake of ours broke. */
  get owesReset() {
    return this.#resetId !== 0;
  }

  /** B: a RESET is owed and its back-off is over. @param {number} now */
  resetDue(now) {
    return this.owesReset && now >= this.#resetAt;
  }

  /** @param {number} now @param {number} records @param {number} seconds */
  renewalDue(now, records, seconds) {
    return this.#sealed >= records || now - this.#keyedAt >= seconds;
  }

  // -- what the machine tells it ---------------------------------------------------

  /** Forget the keys and any handshake in progress. */
  drop() {
    this.#hs = null;
    this.#pending = null;
    this.#send = null;
    this.#recv = null;
  }

  /** B, established: drop an unfinished (perhaps forged) handshake; the session stands. */
  abandon() {
    this.#hs = null;
  }

  /** A new presence of the peer: no RESET is owed for what came before. */
  forgetReset() {
    this.#resetId = 0;
  }

  /**
   * The session or handshake broke: count it, and (B) note what RESET names.
   * Call before dropping the keys: whether there were any decides the name.
   * @param {number} why a ResetReason
   * @param {{blocked: boolean}} options
   */
  failed(why, { blocked }) {
    this.#resetWhy = why;
    if (!blocked) {
      if (this.#o.seat === "B") this.#resetId = this.#send !== null ? this.#sessionId : this.#hsId;
      this.#failures += 1;
    }
  }

  /**
   * A, after a failure: true the first time; later ones back off (2 s, 4 s, ... 30 s).
   * @param {number} now
   */
  retryAtOnce(now) {
    if (this.#failures === 1) return true;
    this.#retryAt = now + Math.min(RETRY_MAX, 2 ** (this.#failures - 1));
    return false;
  }

  /** B asked A to renew: count the next period from now. @param {number} now */
  restartPeriod(now) {
    this.#keyedAt = now;
    this.#sealed = 0;
  }

  /**
   * Pin the changed key the user accepted; resolves to the id of the handshake it stopped.
   * @returns {Promise<number>}
   */
  async trust() {
    const changed = this.#changedKey;
    if (changed === null) {
      throw new LocalProtocolError(
        "no changed key waits to be trusted (if the other person left, it is asked again when they are back with it)",
      );
    }
    await this.#o.keys.savePeer(this.#o.roomId, this.#o.seat, changed);
    this.#changedKey = null;
    return this.#hsId;
  }

  /** The peer that offered it left: it is not this one's to trust any more. */
  forgetChangedKey() {
    this.#changedKey = null;
  }

  /** B: the next RESET names `named` (the handshake a trust unblocked). @param {number} named */
  oweReset(named) {
    this.#resetId = named;
  }

  // -- payloads ----------------------------------------------------------------------

  /**
   * A: HS1 of a fresh handshake, or of a renewal of the live session.
   * @param {number} now
   * @param {{renew: boolean}} options
   * @returns {Promise<Bytes>}
   */
  async start(now, { renew }) {
    if (renew) {
      // The count of records already sent on the old keys goes into HS3 so
      // B can check none went missing.
      this.#oldSent = /** @type {CipherState} */ (this.#send).nonce;
    }
    // The renew flag rides in message 1's payload, which Noise hashes into
    // the transcript: a relay that flips it breaks the handshake.
    const hs = await this.#new(true);
    this.#hs = hs;
    this.#started = now;
    this.#renew = renew;
    this.#hsId = readU32(this.#o.random(HS_ID)) || 1; // never 0, which means "none"
    this.#pending = null;
    return handshakeMessage(Envelope.HS1, this.#hsId, await hs.writeMessage(hsPayload(renew)));
  }

  /**
   * B: answer a HS1 with HS2, or null to ignore it (it cannot end a live session).
   * @param {Uint8Array} body
   * @param {number} now
   * @param {{established: boolean}} options
   * @returns {Promise<Bytes | null>}
   */
  async respond(body, now, { established }) {
    const hsId = readHsId(body);
    const hs = await this.#new(false);
    let flag;
    try {
      flag = await hs.readMessage(body.subarray(HS_ID));
    } catch (exc) {
      if (established && exc instanceof HandshakeError) return null; // garbage cannot end a working session
      throw exc;
    }
    let askedRenew;
    try {
      askedRenew = decodeHsPayload(flag, "1");
    } catch (exc) {
      if (established) return null;
      this.#hsId = hsId; // the RESET that follows names it, so A hears why
      throw exc;
    }
    // HS1 proves nothing (message 1 needs no secret), so an established
    // session is kept, and used, until HS3 authenticates A. B's answer (in
    // the transcript, so authenticated by the end) tells A whether its
    // unacked items must go again.
    const renew = askedRenew && established;
    this.#hs = hs;
    this.#started = now;
    this.#renew = renew;
    this.#hsId = hsId;
    return handshakeMessage(Envelope.HS2, hsId, await hs.writeMessage(hsPayload(renew)));
  }

  /**
   * A: answer HS2 with HS3 (our HELLO) and hold the new keys as pending.
   * @param {Uint8Array} body
   * @returns {Promise<Bytes | null>}
   */
  async receiveHs2(body) {
    const [hs, message] = this.#current(body);
    if (hs === null || hs.complete || hs.isMyTurn()) return null; // stale, or a duplicate we answered
    const answeredRenew = decodeHsPayload(await hs.readMessage(message), "2");
    if (this.#renew && !answeredRenew) this.#renew = false; // B has no session to renew: fresh it is
    const old = this.#renew ? this.#oldSent : 0n;
    const reply = handshakeMessage(Envelope.HS3, this.#hsId, await hs.writeMessage(this.#o.hello(old)));
    // Not yet trusted: the peer has not proven it knows the psk. Old keys
    // (if renewing) stay in use for receiving until HELLO arrives.
    this.#pending = hs.split();
    return reply;
  }

  /**
   * B: A's HS3 authenticates A; install the keys (or report a changed key).
   * @param {Uint8Array} body
   * @param {number} now
   * @returns {Promise<Outcome>}
   */
  async receiveHs3(body, now) {
    const [hs, message] = this.#current(body);
    if (hs === null || hs.complete || hs.isMyTurn()) return null;
    const hello = decodeHs3Payload(await hs.readMessage(message));
    const pair = hs.split();
    const changed = await this.#checkPin(hs);
    if (changed !== null) return changed;
    let oldSent = 0n;
    if (this.#renew) {
      const recv = /** @type {CipherState} */ (this.#recv);
      if (recv.nonce !== hello.oldCount) throw new SessionError("records were lost while renewing the keys");
      oldSent = /** @type {CipherState} */ (this.#send).nonce;
    }
    return this.#install(hs, pair, hello, oldSent, now);
  }

  /**
   * A, holding pending keys: B's first record on them must be its HELLO.
   * @param {Uint8Array} body
   * @param {number} now
   * @returns {Promise<Outcome>}
   */
  async confirm(body, now) {
    const pair = /** @type {Readonly<TransportPair>} */ (this.#pending);
    const hs = /** @type {HandshakeState} */ (this.#hs);
    let plaintext;
    try {
      plaintext = await pair.recv.decryptWithAd(new Uint8Array(0), body);
    } catch (exc) {
      if (!(exc instanceof DecryptError)) throw exc;
      if (this.#renew) {
        throw new SessionError("control record failed to decrypt while renewing the keys", { cause: exc });
      }
      return null; // a record of the session before this fresh one: ignore
    }
    await pair.recv.rekey();
    const record = decodeRecord(plaintext);
    if (record.type !== RecordType.HELLO) throw new SessionError("first record after the handshake is not HELLO");
    const hello = decodeHello(record.body);
    if (this.#renew && /** @type {CipherState} */ (this.#recv).nonce !== hello.oldCount) {
      throw new SessionError("records were lost while renewing the keys");
    }
    const changed = await this.#checkPin(hs);
    if (changed !== null) return changed;
    return this.#install(hs, pair, hello, 0n, now);
  }

  /**
   * A, renewing: a record B sealed on the old keys before it saw HS3, or null.
   * @param {Uint8Array} body
   * @returns {Promise<Bytes | null>}
   */
  async openOld(body) {
    const recv = this.#recv;
    if (recv === null || !this.#renew) return null;
    let plaintext;
    try {
      plaintext = await recv.decryptWithAd(new Uint8Array(0), body);
    } catch (exc) {
      if (exc instanceof DecryptError) return null;
      throw exc;
    }
    await recv.rekey();
    return plaintext;
  }

  /**
   * One DATA payload on the keys in use (Rekey after each).
   * @param {Uint8Array} body
   * @returns {Promise<Bytes>}
   */
  async open(body) {
    const recv = /** @type {CipherState} */ (this.#recv);
    let plaintext;
    try {
      plaintext = await recv.decryptWithAd(new Uint8Array(0), body);
    } catch (exc) {
      if (!(exc instanceof DecryptError)) throw exc;
      throw new SessionError("control record failed to decrypt: tampered, dropped, reordered or replayed", {
        cause: exc,
      });
    }
    await recv.rekey();
    return plaintext;
  }

  /**
   * The DATA payload of one padded record on the keys in use (Rekey after each).
   * @param {Uint8Array} record
   * @returns {Promise<Bytes>}
   */
  async seal(record) {
    const send = /** @type {CipherState} */ (this.#send);
    const ciphertext = await send.encryptWithAd(new Uint8Array(0), record);
    await send.rekey();
    this.#sealed += 1;
    const out = new Uint8Array(1 + ciphertext.length);
    out[0] = Envelope.DATA;
    out.set(ciphertext, 1);
    return out;
  }

  /**
   * A: what a RESET says, if it names the session we hold or the handshake we
   * run; one about an older attempt crossed our retry in flight and is ignored.
   * @param {Uint8Array} body
   * @returns {string | null}
   */
  resetSentence(body) {
    const why = this.resetReason(body);
    return why === null ? null : /** @type {string} */ (RESET_SENTENCES.get(why));
  }

  /**
   * A: why a RESET says B broke off (an unknown number is UNSPECIFIED), if it
   * names the session we hold or the handshake we run; else null.
   * @param {Uint8Array} body
   * @returns {number | null}
   */
  resetReason(body) {
    if (body.length !== RESET_BODY) throw new SessionError("RESET has a bad length");
    const named = readU32(body);
    const why = body[4];
    const aboutSession = this.#send !== null && named === this.#sessionId;
    const aboutHandshake = this.#hs !== null && named === this.#hsId;
    if (!(aboutSession || aboutHandshake)) return null;
    return RESET_SENTENCES.has(why) ? why : ResetReason.UNSPECIFIED;
  }

  /**
   * B: the RESET owed, and when the next one is due (2 s, 4 s, ... 30 s).
   * @param {number} now
   * @returns {Bytes}
   */
  reset(now) {
    this.#resetAt = now + Math.min(RETRY_MAX, 2 ** Math.max(0, this.#failures - 1));
    return resetMessage(this.#resetId, this.#resetWhy);
  }

  // -- inside ------------------------------------------------------------------------

  /**
   * @param {boolean} initiator
   * @returns {Promise<HandshakeState>}
   */
  async #new(initiator) {
    return HandshakeState.create(PROTOCOL_NAME, {
      initiator,
      prologue: prologue(this.#o.roomId),
      s: this.#static,
      e: await newKeyPair(this.#o.drawKeys),
      psks: [this.#psk],
    });
  }

  /**
   * The live handshake and the Noise message; no handshake for a stale message
   * (one whose id is not the one in progress: an abandoned attempt, or a replay).
   * @param {Uint8Array} body
   * @returns {[HandshakeState | null, Uint8Array]}
   */
  #current(body) {
    const hsId = readHsId(body);
    if (this.#hs === null || hsId !== this.#hsId) return [null, new Uint8Array(0)];
    return [this.#hs, body.subarray(HS_ID)];
  }

  /**
   * Nothing on first contact or the pinned key; the change, with its words, else.
   * @param {HandshakeState} hs
   * @returns {Promise<PeerKeyChanged | null>}
   */
  async #checkPin(hs) {
    const rs = /** @type {Bytes} */ (hs.remoteStatic);
    const pinned = await this.#o.keys.loadPeer(this.#o.roomId, this.#o.seat);
    if (pinned === null || equal(pinned, rs)) return null;
    this.#changedKey = rs;
    return new PeerKeyChanged(pinned, rs, await this.words(rs));
  }

  /**
   * @param {HandshakeState} hs
   * @param {Readonly<TransportPair>} pair
   * @param {Hello} hello
   * @param {bigint} oldSent
   * @param {number} now
   * @returns {Promise<Established>}
   */
  async #install(hs, pair, hello, oldSent, now) {
    const rs = /** @type {Bytes} */ (hs.remoteStatic);
    const first = (await this.#o.keys.loadPeer(this.#o.roomId, this.#o.seat)) === null;
    if (first) await this.#o.keys.savePeer(this.#o.roomId, this.#o.seat, rs);
    this.#send = pair.send;
    this.#recv = pair.recv;
    const fresh = !this.#renew;
    this.#hs = null;
    this.#pending = null;
    this.#sessionId = this.#hsId;
    this.#failures = 0;
    this.#resetId = 0;
    this.#keyedAt = now;
    this.#sealed = 0;
    return new Established(hello, rs, first, fresh, oldSent, await this.words(rs));
  }
}

/**
 * A key pair: drawn from `draw` when given (in the twin's order), else made
 * by WebCrypto so that no private key byte exists outside it.
 * @param {((n: number) => Bytes) | null} draw
 * @returns {Promise<Readonly<KeyPair>>}
 */
async function newKeyPair(draw) {
  return draw === null ? generateKeyPair() : keyPairFromPrivate(draw(32));
}

/**
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
