// The end-to-end session machine that both m42 clients run (sans-IO).
// Python twin: m42d/session/machine.py.
//
// Why ~750 lines: it is the package's one public class, and most of it is
// documented entry points that hand off to a part in a line or two; what
// stays here needs the phase and several parts at once (as machine.py).
//
// The relay only ever sees the bytes this machine produces. Session takes
// what the glue reports (the peer came or went, a CONTROL or BULK payload
// arrived, the user wants to send a text or a file, time passed) and answers
// with CONTROL payloads to send and events for the user interface. Each part
// (records, texts, files, handshake, phases) states and keeps its own rules;
// these are the machine's (the twin's):
// * Records are sealed the moment they are made while ESTABLISHED, and held
//   in order otherwise; they go out after the next handshake completes (B's
//   HELLO first, for key confirmation). After a *fresh* handshake every
//   unacknowledged text and unfinished offer is made again from the outbox
//   and the transfers, and their held copies are dropped.
// * A DATA record that fails to decrypt means the lane was tampered with,
//   reordered, dropped from or replayed into: the session is torn down and
//   re-handshaken, never continued. Nothing the peer or the relay sends is
//   thrown to the glue: a remote fault is a SessionFailed event.
// * While anything is outstanding and nothing decrypted from the peer for
//   `probeAfter` seconds, a PING exposes a lost *last* record; no answer
//   within as long again is a failure.
// * An unsent handshake message or RESET that a newer one makes pointless is
//   dropped (SUPERSEDES), so a relay that stops reading us while replaying
//   HS1 cannot grow our output.
//
// Ordering (what async changes, and what it does not):
// * WebCrypto is asynchronous, so every method that may touch a key returns
//   a promise. All of them run through one queue (serial.js): each call
//   starts only after every call made before it has settled, and runs to
//   completion without interleaving, exactly as the twin's synchronous
//   methods do. A caller may fire calls without awaiting them (a WebSocket
//   message handler, say) and they still take effect in call order.
// * When a call's promise settles, everything it caused is in place:
//   dataToSend() holds its CONTROL payloads in order and events() its
//   events. Those two, and the getters, are synchronous and read the state
//   as of the last settled call.
// * A call that fails because of this side (LocalProtocolError: a text over
//   the cap, an unknown file id) rejects its own promise and leaves the
//   queue running; sendText() and offerFile() check their arguments before
//   queueing and throw synchronously, so nothing is numbered or drawn.

import { readU64 } from "../bytes.js";
import { DecryptError, HandshakeError, LocalProtocolError, RemoteProtocolError } from "../errors.js";
import { Serial } from "../serial.js";
import { HandshakeComplete, PeerKeyChanged, SessionFailed } from "./events.js";
import { IncomingFiles, OutgoingFiles } from "./files.js";
import { Handshake, SUPERSEDES } from "./handshake.js";
import { Phase, Phases, Trigger } from "./phases.js";
import {
  DEFAULT_MAX_TEXT,
  Envelope,
  Hello,
  MAX_TEXT,
  RecordType,
  ResetReason,
  SessionError,
  VersionMismatch,
  decodeRecord,
  encodeRecord,
} from "./records.js";
import { Inbox, Outbox } from "./texts.js";

/** @typedef {import("../bytes.js").Bytes} Bytes */
/** @typedef {import("../sas.js").Wordlist} Wordlist */
/** @typedef {import("../ticket.js").Seat} Seat */
/** @typedef {import("./events.js").Event} Event */
/** @typedef {import("./handshake.js").Outcome} Outcome */
/** @typedef {import("./keys.js").KeyStore} KeyStore */

/** @type {ReadonlySet<number>} records made again from the outbox and the transfers */
const REGENERATED = new Set([RecordType.TEXT, RecordType.FILE_OFFER]);

/**
 * @typedef {object} SessionOptions
 * @property {Seat} seat which seat this client holds; A initiates handshakes
 * @property {Uint8Array} roomId the 16-byte room id from the ticket
 * @property {Uint8Array} secret the room secret R from the link
 * @property {KeyStore} keys where the static key pair and the pinned peer key live
 * @property {Wordlist} wordlist the EFF word list, for the safety words
 * @property {number} [maxText] largest text accepted from the peer (and
 *   sent), in bytes; at most the protocol's MAX_TEXT
 * @property {number} [handshakeTimeout] seconds a handshake may take before it is retried
 * @property {number} [rehandshakeRecords] records sent under one set of keys
 *   before A renews them (B asks A to)
 * @property {number} [rehandshakeSeconds] age of a session after which its keys are renewed
 * @property {number} [probeAfter] seconds of silence from the peer, while
 *   something is unacknowledged, before a PING checks the session is alive
 * @property {number} [stallAfter] seconds without progress on an incoming
 *   file before the receiver asks again from its first missing chunk
 * @property {(n: number) => Bytes} [random] source of every random value
 *   (keys, ids); given only to make known-answer transcripts reproducible,
 *   and then the X25519 keys are drawn from it too (in the twin's order)
 */

/** @param {number} n */
function cryptoRandom(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

/** One seat's end of the end-to-end session. Make it with Session.create(). */
export class Session {
  #serial = new Serial();
  #phases = new Phases();
  #now = 0;
  #peerOnline = false;
  #lastHeard = 0;
  /** @type {number | null} */ #probeSent = null;

  /** @type {Bytes[]} records held until the next handshake completes */ #queue = [];
  /** @type {Bytes[]} */ #outgoing = [];
  /** @type {Event[]} */ #events = [];

  /** @type {Handshake} */ #handshake;
  /** @type {Outbox} */ #outbox;
  /** @type {Inbox} */ #inbox;
  /** @type {OutgoingFiles} */ #outFiles;
  /** @type {IncomingFiles} */ #inFiles;

  /**
   * Use Session.create().
   * @param {Required<Omit<SessionOptions, "keys" | "wordlist" | "secret">>} config
   * @param {Handshake} handshake
   * @param {Outbox} outbox
   * @param {Inbox} inbox
   * @param {OutgoingFiles} outFiles
   * @param {IncomingFiles} inFiles
   */
  constructor(config, handshake, outbox, inbox, outFiles, inFiles) {
    this.config = Object.freeze(config);
    this.seat = config.seat;
    this.roomId = config.roomId;
    this.#handshake = handshake;
    this.#outbox = outbox;
    this.#inbox = inbox;
    this.#outFiles = outFiles;
    this.#inFiles = inFiles;
  }

  /**
   * A session for one seat: loads (or makes) its static key first.
   * @param {SessionOptions} options
   * @returns {Promise<Session>}
   * @throws {LocalProtocolError} a bad room id, secret or maxText
   */
  static async create(options) {
    const { seat, roomId, secret, keys, wordlist } = options;
    if (secret.length !== 32) throw new LocalProtocolError("room secret must be 32 bytes");
    if (roomId.length !== 16) throw new LocalProtocolError("room id must be 16 bytes");
    if (seat !== "A" && seat !== "B") throw new LocalProtocolError("seat must be A or B");
    const maxText = options.maxText ?? DEFAULT_MAX_TEXT;
    if (!(Number.isInteger(maxText) && maxText > 0 && maxText <= MAX_TEXT)) {
      // Above the protocol's cap a peer would refuse what this side sends.
      throw new LocalProtocolError(`max_text must be 1 to ${MAX_TEXT} bytes`);
    }
    const random = options.random ?? cryptoRandom;
    const config = {
      seat,
      roomId: roomId.slice(),
      maxText,
      handshakeTimeout: options.handshakeTimeout ?? 30,
      rehandshakeRecords: options.rehandshakeRecords ?? 10_000,
      rehandshakeSeconds: options.rehandshakeSeconds ?? 3600,
      probeAfter: options.probeAfter ?? 15,
      stallAfter: options.stallAfter ?? 30,
      random,
    };
    /** @type {Session | null} */
    let session = null;
    const sendRecord = (/** @type {number} */ type, /** @type {Uint8Array} */ body) =>
      /** @type {Session} */ (session).#emitRecord(type, body);
    const emit = (/** @type {Event} */ event) => /** @type {Session} */ (session).#event(event);
    // The order of the random draws (static key, then instance) is part of
    // the known-answer transcript.
    const handshake = await Handshake.create({
      seat,
      roomId: config.roomId,
      secret,
      keys,
      wordlist,
      drawKeys: options.random === undefined ? null : random,
      random,
      hello: (oldCount) => /** @type {Session} */ (session).#hello(oldCount),
    });
    const instance = readU64(random(8));
    session = new Session(
      config,
      handshake,
      new Outbox(sendRecord, emit, maxText, instance),
      new Inbox(sendRecord, emit, maxText),
      new OutgoingFiles(sendRecord, emit, random),
      new IncomingFiles(sendRecord, emit),
    );
    return session;
  }

  // -- what the glue reads ---------------------------------------------------------

  /** True while texts and files can flow. */
  get established() {
    return this.#phases.phase === Phase.ESTABLISHED;
  }

  /** True while a changed peer key waits for trustPeerKey(). */
  get blocked() {
    return this.#phases.phase === Phase.BLOCKED;
  }

  /** The phase (for a status line and for tests). */
  get phase() {
    return this.#phases.phase;
  }

  get staticPublic() {
    return this.#handshake.staticPublic;
  }

  /** The random number naming this session's text numbering (HELLO's instance). */
  get instance() {
    return this.#outbox.instance;
  }

  /**
   * The safety words with the pinned peer key (empty before first contact).
   * @returns {Promise<ReadonlyArray<string>>}
   */
  safetyWords() {
    return this.#serial.run(() => this.#handshake.pinnedWords());
  }

  get unackedTexts() {
    return this.#outbox.count;
  }

  /** Payloads made but not yet taken by dataToSend(). */
  get queuedPayloads() {
    return this.#outgoing.length;
  }

  /**
   * CONTROL payloads to send, in order (each one CONTROL frame). File chunks
   * come from encryptChunk(), which the glue calls for the bulk lane.
   * @returns {Bytes[]}
   */
  dataToSend() {
    const out = this.#outgoing;
    this.#outgoing = [];
    return out;
  }

  /**
   * Events since the last call, oldest first.
   * @returns {Event[]}
   */
  events() {
    const out = this.#events;
    this.#events = [];
    return out;
  }

  // -- connection events -----------------------------------------------------------

  /**
   * The relay says the peer is present (JOINED with the peer, or PEER_UP).
   * Every new presence is a new connection on some side: whatever keys we
   * had may be stale, so a fresh handshake starts and unacked items are
   * re-sent once it completes.
   * @param {number} now seconds, on the glue's monotonic clock
   * @returns {Promise<void>}
   */
  peerOnline(now) {
    return this.#serial.run(() => this.#peerOnlineNow(now));
  }

  /** @param {number} now */
  async #peerOnlineNow(now) {
    this.#now = now;
    this.#peerOnline = true;
    this.#dropKeys();
    this.#handshake.forgetReset();
    if (this.#phases.fire(Trigger.PEER_ONLINE) === Phase.HANDSHAKE && this.seat === "A") {
      await this.#startHandshake();
    }
  }

  /**
   * The peer left (PEER_DOWN) or our own connection dropped.
   * @returns {Promise<void>}
   */
  peerOffline() {
    return this.#serial.run(async () => {
      this.#peerOnline = false;
      this.#dropKeys();
      // A changed key waiting to be trusted is forgotten: whoever comes next
      // shows their key in a fresh handshake (see phases.js, BLOCKED).
      if (this.blocked) this.#handshake.forgetChangedKey();
      this.#phases.fire(Trigger.PEER_OFFLINE);
    });
  }

  /** Our own connection to the relay ended: the same as the peer leaving. */
  connectionLost() {
    return this.peerOffline();
  }

  /**
   * Let time pass: retries, timeouts, liveness probes, renewals. The glue
   * calls this about once a second; nothing needs more precision than that.
   * @param {number} now
   * @returns {Promise<void>}
   */
  tick(now) {
    return this.#serial.run(async () => {
      this.#now = now;
      const phase = this.#phases.phase;
      const hs = this.#handshake;
      if (phase === Phase.BLOCKED || !this.#peerOnline) return;
      if (hs.timedOut(now, this.config.handshakeTimeout)) {
        if (this.seat === "B" && phase === Phase.ESTABLISHED) {
          hs.abandon(); // an unfinished (perhaps forged) HS1: our session stands
        } else {
          await this.#fail("handshake timed out (wrong room secret, or someone in the middle?)");
        }
        return;
      }
      if (phase === Phase.HANDSHAKE && !hs.inProgress) {
        if (this.seat === "A" && hs.retryDue(now)) await this.#startHandshake();
        else if (this.seat === "B" && hs.resetDue(now)) this.#push(hs.reset(now));
        return;
      }
      if (phase === Phase.ESTABLISHED) await this.#tickEstablished(now);
    });
  }

  /** @param {number} now */
  async #tickEstablished(now) {
    if (this.#probeSent !== null) {
      if (now - this.#probeSent >= this.config.probeAfter) {
        await this.#fail("the peer stopped answering");
        return;
      }
    } else if (this.#outstanding() && now - this.#lastHeard >= this.config.probeAfter) {
      // Loss of the *last* record on a lane shows in no later record: a PING
      // makes one, and its PONG proves the other direction.
      this.#probeSent = now;
      await this.#emitRecord(RecordType.PING, new Uint8Array(0));
    }
    await this.#inFiles.tick(now, this.config.stallAfter);
    if (this.#handshake.renewalDue(now, this.config.rehandshakeRecords, this.config.rehandshakeSeconds)) {
      await this.#renew();
    }
  }

  #outstanding() {
    return this.#outbox.count > 0 || this.#outFiles.active || this.#inFiles.receiving;
  }

  // -- user actions ------------------------------------------------------------------

  /**
   * Queue a text; resolves to its seq, which TextDelivered reports later.
   * @param {string} text
   * @returns {Promise<bigint>}
   * @throws {LocalProtocolError} (synchronously) the text is over maxText
   *   bytes or not UTF-8; nothing was queued
   */
  sendText(text) {
    this.#outbox.check(text);
    return this.#serial.run(() => this.#outbox.send(text)); // held until established
  }

  /**
   * Offer a file; resolves to its id. Chunks flow after the peer accepts.
   * No hash of the file is needed: its STREAM key is fresh and reaches only
   * the peer, so the final chunk's authentication covers every byte.
   * @param {string} name
   * @param {bigint} size
   * @returns {Promise<bigint>}
   * @throws {LocalProtocolError} (synchronously) a bad name or size
   */
  offerFile(name, size) {
    this.#outFiles.check(name, size);
    return this.#serial.run(() => this.#outFiles.offer(name, size));
  }

  /**
   * The BULK payload for chunk `index` of an outgoing file (random access).
   * @param {bigint} fileId
   * @param {bigint} index
   * @param {Uint8Array} data
   * @returns {Promise<Bytes>}
   */
  encryptChunk(fileId, index, data) {
    return this.#serial.run(() => this.#outFiles.encryptChunk(fileId, index, data));
  }

  /**
   * How many chunks an outgoing file has.
   * @param {bigint} fileId
   * @returns {bigint}
   */
  fileChunks(fileId) {
    return this.#outFiles.chunks(fileId);
  }

  /**
   * Accept an offered file; chunks start arriving as FileChunk events.
   * @param {bigint} fileId
   * @returns {Promise<void>}
   */
  acceptFile(fileId) {
    return this.#serial.run(() => this.#inFiles.accept(fileId, this.#now));
  }

  /**
   * The glue stored a completed file: now the sender may hear "delivered".
   * @param {bigint} fileId
   * @returns {Promise<void>}
   */
  confirmSaved(fileId) {
    return this.#serial.run(() => this.#inFiles.confirmSaved(fileId));
  }

  /**
   * Refuse an offered file, abort one being received, or report that a
   * completed one could not be saved; the sender is told why.
   * @param {bigint} fileId
   * @param {number} code a FileCode
   * @param {string} [reason]
   * @returns {Promise<void>}
   */
  rejectFile(fileId, code, reason = "") {
    return this.#serial.run(() => this.#inFiles.reject(fileId, code, reason));
  }

  /**
   * Stop sending one of our files.
   * @param {bigint} fileId
   * @param {string} [reason]
   * @returns {Promise<void>}
   */
  cancelFile(fileId, reason = "cancelled by sender") {
    return this.#serial.run(() => this.#outFiles.cancel(fileId, reason));
  }

  /**
   * Accept the changed peer key after the users compared the safety words.
   * @returns {Promise<void>}
   */
  trustPeerKey() {
    return this.#serial.run(async () => {
      const blockedHs = await this.#handshake.trust();
      this.#phases.fire(Trigger.TRUST);
      if (this.#peerOnline) {
        await this.#peerOnlineNow(this.#now);
        if (this.seat === "B" && blockedHs) {
          // A still waits for the HELLO we withheld: let it retry now
          // instead of after its handshake timeout.
          this.#handshake.oweReset(blockedHs);
          this.#push(this.#handshake.reset(this.#now));
        }
      }
    });
  }

  // -- incoming payloads ------------------------------------------------------------

  /**
   * Feed one CONTROL payload from the relay. Tampering, replays and anything
   * out of order end the current session with a SessionFailed event (and a
   * fresh handshake where this seat can start one); nothing is thrown for
   * remote misbehaviour, so a hostile relay cannot crash the client.
   * @param {Uint8Array} payload
   * @returns {Promise<void>}
   */
  receiveControl(payload) {
    const copy = payload.slice();
    return this.#serial.run(async () => {
      if (copy.length === 0) {
        await this.#fail("empty control payload");
        return;
      }
      const kind = copy[0];
      try {
        await this.#receiveEnvelope(kind, copy.subarray(1));
      } catch (exc) {
        if (exc instanceof VersionMismatch) {
          await this.#fail(exc.message, { why: ResetReason.VERSION });
        } else if (exc instanceof HandshakeError || exc instanceof DecryptError) {
          const why = kind === Envelope.HS3 ? ResetReason.AUTHENTICATION : ResetReason.UNSPECIFIED;
          await this.#fail(exc.message, { why });
        } else if (exc instanceof RemoteProtocolError) {
          await this.#fail(exc.message);
        } else {
          throw exc;
        }
      }
    });
  }

  /**
   * Feed one BULK payload (a file chunk) from the relay. Chunks are
   * authenticated by their file key, not by the session, so a bad one costs
   * at most a re-request of that file; it never tears down the session.
   * @param {Uint8Array} payload
   * @returns {Promise<void>}
   */
  receiveBulk(payload) {
    const copy = payload.slice();
    return this.#serial.run(() => this.#inFiles.receiveChunk(copy, this.#now));
  }

  /**
   * @param {number} kind
   * @param {Bytes} body
   */
  async #receiveEnvelope(kind, body) {
    const hs = this.#handshake;
    switch (kind) {
      case Envelope.DATA:
        await this.#receiveData(body);
        return;
      case Envelope.HS1: {
        if (this.seat !== "B") throw new SessionError("handshake message 1 sent to the initiator");
        if (this.#phases.phase === Phase.BLOCKED) return;
        const reply = await hs.respond(body, this.#now, { established: this.established });
        if (reply !== null) {
          this.#phases.fire(Trigger.HS1);
          this.#push(reply);
        }
        return;
      }
      case Envelope.HS2: {
        if (this.seat !== "A") throw new SessionError("handshake message 2 sent to the responder");
        const reply = await hs.receiveHs2(body);
        if (reply !== null) this.#push(reply);
        return;
      }
      case Envelope.HS3:
        if (this.seat !== "B") throw new SessionError("handshake message 3 sent to the initiator");
        await this.#complete(await hs.receiveHs3(body, this.#now));
        return;
      case Envelope.RESET: {
        if (this.seat !== "A") throw new SessionError("RESET sent to the responder");
        const why = hs.resetReason(body);
        if (why !== null) await this.#fail(hs.resetSentence(body) ?? "", { tellPeer: false, why });
        return;
      }
      default:
        throw new SessionError(`unknown control envelope ${kind}`);
    }
  }

  /** @param {Bytes} body */
  async #receiveData(body) {
    const hs = this.#handshake;
    let plaintext;
    if (hs.confirming) {
      // A, after HS3: old-key records first (renewal), then B's HELLO.
      plaintext = await hs.openOld(body);
      if (plaintext === null) {
        await this.#complete(await hs.confirm(body, this.#now));
        return;
      }
    } else if (!hs.keyed) {
      // A record of a session already torn down, still in flight; if the
      // peer still believes in it, tell it (B) -- A retries anyway.
      if (this.seat === "B" && hs.resetDue(this.#now)) this.#push(hs.reset(this.#now));
      return;
    } else {
      plaintext = await hs.open(body);
    }
    this.#lastHeard = this.#now;
    this.#probeSent = null;
    const { type, body: recordBody } = decodeRecord(plaintext);
    await this.#handleRecord(type, recordBody);
  }

  /**
   * @param {number} type
   * @param {Bytes} body
   */
  async #handleRecord(type, body) {
    switch (type) {
      case RecordType.TEXT:
        return this.#inbox.onText(body);
      case RecordType.ACK:
        return this.#outbox.onAck(body);
      case RecordType.TEXT_REFUSED:
        return this.#outbox.onRefused(body);
      case RecordType.PING:
        return this.#emitRecord(RecordType.PONG, new Uint8Array(0));
      case RecordType.PONG:
        return; // hearing it was the point
      case RecordType.FILE_OFFER:
        return this.#inFiles.onOffer(body, this.#now);
      case RecordType.FILE_ACCEPT:
        return this.#outFiles.onAccept(body);
      case RecordType.FILE_ACK:
        return this.#outFiles.onAck(body);
      case RecordType.FILE_DONE:
        return this.#outFiles.onDone(body);
      case RecordType.FILE_REJECT:
        return this.#outFiles.onReject(body);
      case RecordType.FILE_CANCEL:
        return this.#inFiles.onCancel(body);
      case RecordType.REHANDSHAKE:
        if (this.seat === "A" && this.established) await this.#renew();
        return;
      case RecordType.HELLO:
        throw new SessionError("unexpected HELLO");
      default:
        throw new SessionError(`unknown control record type ${type}`);
    }
  }

  // -- handshakes --------------------------------------------------------------------

  /** A: a fresh session (nothing assumed about the old one). */
  async #startHandshake() {
    this.#dropKeys();
    this.#phases.fire(Trigger.START);
    this.#push(await this.#handshake.start(this.#now, { renew: false }));
  }

  /** Fresh keys on a live session (A starts; B asks A to). */
  async #renew() {
    if (this.seat === "B") {
      await this.#emitRecord(RecordType.REHANDSHAKE, new Uint8Array(0));
      this.#handshake.restartPeriod(this.#now);
      return;
    }
    // From here A holds back its records until the new keys are confirmed.
    this.#phases.fire(Trigger.RENEW);
    this.#push(await this.#handshake.start(this.#now, { renew: true }));
  }

  /**
   * The padded HELLO record: our instance, records sent on the old keys,
   * and the first seq we still hold (everything before was acked).
   * @param {bigint} oldCount
   */
  #hello(oldCount) {
    return new Hello(this.instance, oldCount, this.#outbox.firstUnacked).encode();
  }

  /**
   * Act on a HS3 (B) or on B's HELLO (A): new keys, or a changed peer key.
   * @param {Outcome} outcome
   */
  async #complete(outcome) {
    if (outcome === null) return;
    if (outcome instanceof PeerKeyChanged) {
      this.#dropKeys();
      this.#phases.fire(Trigger.KEY_CHANGED);
      this.#event(outcome);
      return;
    }
    if (this.seat === "B" && outcome.fresh) {
      // B drops what it held back: its texts and offers are made again
      // below, and A's re-offers and the stall timer make up the rest.
      this.#queue = [];
    }
    this.#inbox.onHello(outcome.peerHello);
    this.#phases.fire(Trigger.ESTABLISH);
    this.#lastHeard = this.#now;
    this.#probeSent = null;
    this.#event(new HandshakeComplete(outcome.words, outcome.peerKey, outcome.firstContact));
    if (this.seat === "B") {
      // Key confirmation for A: must be the first record on the new keys.
      await this.#emitRaw(this.#hello(outcome.oldSent));
    }
    let queued = this.#queue;
    this.#queue = [];
    if (outcome.fresh) {
      // Texts and offers are regenerated from the outbox, in order; drop
      // their queued copies so the peer does not get them twice.
      queued = queued.filter((record) => !REGENERATED.has(record[0]));
      await this.#outbox.resend();
      await this.#outFiles.reofferAll();
    }
    for (const record of queued) await this.#emitRaw(record);
  }

  // -- output ------------------------------------------------------------------------

  /** @param {Event} event */
  #event(event) {
    this.#events.push(event);
  }

  /**
   * Send now if established, else hold until the next handshake completes.
   * @param {number} type
   * @param {Uint8Array} body
   */
  async #emitRecord(type, body) {
    await this.#emitRaw(encodeRecord(type, body));
  }

  /** @param {Bytes} record */
  async #emitRaw(record) {
    if (!this.#handshake.keyed || !this.established) {
      this.#queue.push(record);
      return;
    }
    // Sealed first, then the *current* queue read: `this.#outgoing.push(await ...)`
    // would read the queue before the await, and a dataToSend() meanwhile
    // (the glue calls it whenever its writer runs) would take that array
    // away, losing the record.
    const sealed = await this.#handshake.seal(record);
    this.#outgoing.push(sealed);
  }

  /**
   * Queue a handshake message or RESET, dropping unsent ones it makes
   * pointless: each side holds one handshake at a time, so an older message
   * still waiting to be written can only fail on arrival.
   * @param {Bytes} payload
   */
  #push(payload) {
    const moot = /** @type {ReadonlySet<number>} */ (SUPERSEDES.get(payload[0]));
    if (this.#outgoing.length) this.#outgoing = this.#outgoing.filter((item) => !moot.has(item[0]));
    this.#outgoing.push(payload);
  }

  // -- failure -----------------------------------------------------------------------

  /** Forget the session and any handshake; unacked items go again later. */
  #dropKeys() {
    this.#handshake.drop();
    this.#queue = [];
    this.#inbox.dropPartial();
    this.#probeSent = null;
  }

  /**
   * @param {string} reason
   * @param {{tellPeer?: boolean, why?: number}} [options]
   */
  async #fail(reason, { tellPeer = true, why = ResetReason.UNSPECIFIED } = {}) {
    this.#event(new SessionFailed(reason, why));
    const blocked = this.blocked;
    this.#handshake.failed(why, { blocked });
    this.#dropKeys();
    this.#phases.fire(this.#peerOnline ? Trigger.FAIL : Trigger.FAIL_OFFLINE);
    if (blocked || !this.#peerOnline) return;
    if (this.seat === "B") {
      // Only A can start a handshake; tell it at once (and again later, in
      // case this is lost). RESET is unauthenticated on purpose: all it can
      // do is cause a handshake, which a relay can cause anyway.
      if (tellPeer && this.#handshake.owesReset) this.#push(this.#handshake.reset(this.#now));
    } else if (this.#handshake.retryAtOnce(this.#now)) {
      await this.#startHandshake();
    }
  }
}
