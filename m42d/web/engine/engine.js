// The client engine of one seat in the browser: the page's Engine
// (ui/engine.js) over the session machine, the relay connection and files.
// Python twin: m42d/client/engine.py.
//
// Why a little over 500 lines: it is the facade over the parts in their own
// modules (connection.js, files.js, rooms.js); half of it is the page's
// Engine methods, each a few lines; what remains needs several parts at once.
//
// Rules and invariants:
// * One Serial queue (#work) runs everything that touches the session's
//   results: after each session call its events are handled in order, then
//   the connection's writer is woken. A WebSocket message, a timer and a
//   click may all arrive at once; their effects never interleave.
// * Reconnects forever with capped, jittered exponential backoff, until
//   close() or a relay ERROR that retrying cannot fix (bad token, expired,
//   burned, seat taken...), which is a fatal `error` event with its code.
//   After a drop nothing is lost: the session re-sends unacknowledged texts
//   and resumes files from the first unacknowledged chunk after the next
//   handshake.
// * Texts and outgoing files get their number here, synchronously (the page
//   needs it at once); the session's own numbers are mapped to them, so a
//   text's `sent` and `delivered`, and a file's events, carry the page's.
// * `sent` means the text's record was handed to the WebSocket while the
//   session was established: it left this browser.
// * Only the user's own burn() forgets the room's keys: an ERROR is not
//   authenticated, and a relay that could make a seat drop its key and pin
//   could swap in its own.
// * Texts and names in events are the peer's own, not escaped (the page
//   shows them with textContent); file names are cleaned (lib/names.js).

import { Burn, Bulk, Control, ErrorCode } from "../lib/wire.js";
import { Serial } from "../lib/serial.js";
import {
  FileChunk,
  FileCode,
  FileCompleted,
  FileDelivered,
  FileFailed,
  FileOffered,
  FileProgress,
  HandshakeComplete,
  MemoryKeyStore,
  PeerKeyChanged,
  ResetReason,
  SendChunks,
  Session,
  SessionFailed,
  TextDelivered,
  TextReceived,
  TextRefused,
  TextRejected,
} from "../lib/session/index.js";
import { Emitter, MAX_TEXT_BYTES } from "../ui/engine.js";
import { ConnectionLost, RelayConnection, RelayRefused, roomUrl } from "./connection.js";
import { IncomingFiles, OutgoingFiles } from "./files.js";

/** Said once per side when the handshake shows the two links' room secrets differ (as m42 says it). */
export const WRONG_SECRET =
  "this link's secret does not match the other person's: was the link changed? (or someone in the middle runs their own handshake)";
export const WRONG_SECRET_CAUSE = "wrong_secret";

/** @typedef {import("../lib/link.js").Link} Link */
/** @typedef {import("../lib/sas.js").Wordlist} Wordlist */
/** @typedef {import("../lib/session/keys.js").KeyStore} KeyStore */
/** @typedef {import("../ui/engine.js").EngineEvents} EngineEvents */
/** @typedef {import("../ui/engine.js").FileSink} FileSink */
/** @typedef {import("./connection.js").ConnectionEnd} ConnectionEnd */
/** @typedef {import("./connection.js").ConnectionOptions} ConnectionOptions */

/**
 * A KeyStore that may also remember when the safety words were compared.
 * @typedef {KeyStore & {
 *   loadComparedAt?: (roomId: Uint8Array, seat: "A" | "B") => Promise<number | null>,
 *   markCompared?: (roomId: Uint8Array, seat: "A" | "B", at: number) => Promise<void>,
 *   forget?: (roomId: Uint8Array, seat: "A" | "B") => Promise<void>,
 * }} EngineKeyStore
 */

/**
 * @typedef {object} EngineOptions
 * @property {() => Promise<Wordlist>} loadWordlist the EFF list for the safety words
 * @property {() => Promise<{store: EngineKeyStore, persistent: boolean}>} [openKeyStore]
 *   default: memory only (not persistent)
 * @property {ConnectionOptions} [connection] passed on (tests: a fake socket and clock)
 * @property {() => number} [now] ms, monotonic (default performance.now)
 * @property {() => number} [wallClock] ms since the epoch (default Date.now)
 * @property {number} [backoffBase] ms before the first retry (default 1 s)
 * @property {number} [backoffCap] ms at most between retries (default 30 s)
 * @property {number} [tickMs] how often timers run (default 1 s)
 * @property {Partial<import("../lib/session/machine.js").SessionOptions>} [session] tuning
 */

export class BrowserEngine {
  #emitter = new Emitter();
  #work = new Serial();
  /** @type {Session | null} */ #session = null;
  /** @type {RelayConnection | null} */ #relay = null;
  /** @type {OutgoingFiles | null} */ #outgoing = null;
  /** @type {IncomingFiles | null} */ #incoming = null;
  /** @type {EngineKeyStore | null} */ #keys = null;
  #started = false;
  #closing = false;
  #peer = false;
  #failures = 0;
  #burnRequested = false;
  /** The secrets differ, said once: every retry of the handshake fails alike. */
  #saidWrongSecret = false;
  /** @type {number | null} */ #comparedAt = null;
  /** @type {ReturnType<typeof setInterval> | null} */ #ticker = null;
  /** @type {ReturnType<typeof setTimeout> | null} */ #retry = null;
  #nextText = 0n;
  #nextFile = 0n;
  /** @type {Map<bigint, bigint>} session seq -> our seq */ #textIds = new Map();
  /** @type {bigint[]} our seqs not yet handed to the socket */ #unsent = [];
  /** @type {Map<bigint, bigint>} session file id -> ours */ #fileIds = new Map();
  /** @type {Map<bigint, Promise<bigint | null>>} ours -> the session's, once offered */ #offers = new Map();
  /** @type {Set<() => void>} */ #burnWaiters = new Set();

  /**
   * @param {Link} link
   * @param {EngineOptions} options
   */
  constructor(link, options) {
    this.link = link;
    this.seat = link.seat;
    this.options = options;
    this.now = options.now ?? (() => performance.now());
    this.wallClock = options.wallClock ?? (() => Date.now());
    this.backoffBase = options.backoffBase ?? 1_000;
    this.backoffCap = options.backoffCap ?? 30_000;
    this.roomId = link.parsedTicket.roomId;
  }

  /**
   * @template {keyof EngineEvents} K
   * @param {K} type
   * @param {import("../ui/engine.js").Listener<K>} listener
   */
  on(type, listener) {
    return this.#emitter.on(type, listener);
  }

  /** Connect and keep reconnecting until close(); `error` events say what fails. */
  start() {
    if (this.#started) return;
    this.#started = true;
    void this.#work.run(() => this.#init()).catch((exc) => this.#fatal(exc, null));
  }

  /**
   * @param {string} text
   * @returns {bigint} its number in `sent` and `delivered`
   */
  sendText(text) {
    const session = this.#ready();
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      throw new RangeError(`a text is at most ${MAX_TEXT_BYTES} bytes`);
    }
    const queued = session.sendText(text); // throws (synchronously) for a text the session refuses
    const seq = ++this.#nextText;
    void this.#work.run(async () => {
      const sessionSeq = await queued;
      this.#textIds.set(sessionSeq, seq);
      this.#unsent.push(seq);
      await this.#process();
    });
    return seq;
  }

  /**
   * Offer a file; it is read by slices once the peer accepts.
   * @param {File} file
   * @returns {bigint}
   */
  sendFile(file) {
    this.#ready();
    const outgoing = /** @type {OutgoingFiles} */ (this.#outgoing);
    const id = ++this.#nextFile;
    const offered = this.#work.run(async () => {
      let sessionId;
      try {
        sessionId = await outgoing.offer(file);
      } catch (exc) {
        const reason = exc instanceof Error ? exc.message : String(exc);
        this.#emit("file_failed", { fileId: id, outgoing: true, name: file.name, code: FileCode.BAD_NAME, reason });
        return null;
      }
      this.#fileIds.set(sessionId, id);
      await this.#process();
      return sessionId;
    });
    this.#offers.set(id, offered);
    return id;
  }

  /**
   * @param {bigint} fileId
   * @param {FileSink} sink
   */
  acceptFile(fileId, sink) {
    this.#ready();
    const incoming = /** @type {IncomingFiles} */ (this.#incoming);
    void this.#work.run(async () => {
      await incoming.accept(fileId, sink);
      await this.#process();
    });
  }

  /**
   * @param {bigint} fileId
   * @param {number} code
   * @param {string} reason
   */
  rejectFile(fileId, code, reason) {
    this.#ready();
    const incoming = /** @type {IncomingFiles} */ (this.#incoming);
    void this.#work.run(async () => {
      await incoming.reject(fileId, code, reason);
      await this.#process();
    });
  }

  /** @param {bigint} fileId one of ours, as sendFile() numbered it */
  cancelFile(fileId) {
    this.#ready();
    const outgoing = /** @type {OutgoingFiles} */ (this.#outgoing);
    const offered = this.#offers.get(fileId);
    if (offered === undefined) throw new RangeError(`no outgoing file ${fileId}`);
    void this.#work.run(async () => {
      const sessionId = await offered;
      if (sessionId === null) return;
      try {
        await outgoing.cancel(sessionId);
      } catch {
        return; // finished meanwhile: its file_done or file_failed already went out
      }
      await this.#process();
    });
  }

  /** Accept the changed peer key (after the people compared the new words). */
  trust() {
    const session = this.#ready();
    void this.#work.run(async () => {
      await session.trustPeerKey();
      await this.#process();
    });
  }

  /** Remember that the words were compared now; a `safety_words` event follows. */
  async markCompared() {
    const session = this.#ready();
    const at = this.wallClock();
    this.#comparedAt = at;
    await this.#keys?.markCompared?.(this.roomId, this.seat, at);
    const words = await session.safetyWords();
    this.#emit("safety_words", { words: [...words], firstContact: false, comparedAt: at });
  }

  /** Burn the room on the relay; resolves once the relay confirmed it (or the engine stopped). */
  async burn() {
    this.#ready();
    const relay = /** @type {RelayConnection} */ (this.#relay);
    this.#burnRequested = true;
    const done = new Promise((resolve) => this.#burnWaiters.add(() => resolve(undefined)));
    relay.queue(new Burn());
    await done;
  }

  /** Leave; the seat stays valid. */
  close() {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#retry !== null) clearTimeout(this.#retry);
    if (this.#ticker !== null) clearInterval(this.#ticker);
    this.#incoming?.abortAll();
    this.#relay?.close("you left");
    this.#wakeBurners();
  }

  // -- the parts ---------------------------------------------------------------------

  #ready() {
    if (this.#session === null) throw new RangeError("the room is still opening");
    return this.#session;
  }

  async #init() {
    const [wordlist, opened] = await Promise.all([
      this.options.loadWordlist(),
      (this.options.openKeyStore ?? memoryKeys)(),
    ]);
    this.#keys = opened.store;
    this.#emit("keystore", { persistent: opened.persistent });
    this.#comparedAt = (await opened.store.loadComparedAt?.(this.roomId, this.seat)) ?? null;
    const link = this.link;
    const session = await Session.create({
      ...this.options.session,
      seat: link.seat,
      roomId: this.roomId,
      secret: link.secret,
      keys: opened.store,
      wordlist,
    });
    this.#session = session;
    const hooks = {
      emit: /** @type {import("./files.js").Emit} */ ((type, detail) => this.#emitFile(type, detail)),
      changed: () => this.#kick(),
      wakeWriter: () => this.#relay?.wake(),
      now: this.now,
    };
    this.#outgoing = new OutgoingFiles(session, hooks);
    this.#incoming = new IncomingFiles(session, hooks);
    this.#relay = new RelayConnection(
      link,
      {
        joined: (peerOnline, maxPayload) => {
          /** @type {OutgoingFiles} */ (this.#outgoing).maxPayload = maxPayload;
          this.#joined(peerOnline);
        },
        peerChanged: (online) => void this.#work.run(() => this.#peerChanged(online)),
        payload: (frame) => this.#payload(frame),
        controlPayloads: () => this.#takeRecords(),
        takeChunk: (credit) => /** @type {OutgoingFiles} */ (this.#outgoing).takeChunk(credit),
        ended: (end) => void this.#work.run(() => this.#ended(end)),
      },
      this.options.connection,
    );
    this.#ticker = setInterval(() => this.#tick(), this.options.tickMs ?? 1_000);
    if (!this.#closing) this.#connect();
  }

  #connect() {
    this.#retry = null;
    if (this.#closing) return;
    /** @type {RelayConnection} */ (this.#relay).open(roomUrl(this.link, this.roomId));
  }

  /** @param {boolean} peerOnline */
  #joined(peerOnline) {
    this.#failures = 0;
    this.#emit("connected", { relay: this.link.relay });
    if (peerOnline) void this.#work.run(() => this.#peerChanged(true));
  }

  /** @param {boolean} online */
  async #peerChanged(online) {
    const session = /** @type {Session} */ (this.#session);
    if (online) {
      await session.peerOnline(this.now() / 1000);
      if (!this.#peer) {
        this.#saidWrongSecret = false; // they may have come back with the right link
        this.#emit("peer_up", {});
      }
    } else {
      await session.peerOffline();
      if (this.#peer) this.#emit("peer_down", {});
    }
    this.#peer = online;
    await this.#process();
  }

  /**
   * The peer's payload, in order (the connection's reader waits for this).
   * @param {Control | Bulk} frame
   */
  async #payload(frame) {
    await this.#work.run(async () => {
      const session = /** @type {Session} */ (this.#session);
      if (frame instanceof Control) await session.receiveControl(frame.payload);
      else await session.receiveBulk(frame.payload);
      await this.#process();
    });
  }

  /** What the writer sends on the control side: the session's records. */
  #takeRecords() {
    const session = /** @type {Session} */ (this.#session);
    const records = session.dataToSend();
    if (records.length > 0 && session.established && this.#unsent.length > 0) {
      // Whatever texts were queued are sealed in these (or earlier) records.
      const sent = this.#unsent;
      this.#unsent = [];
      queueMicrotask(() => {
        for (const seq of sent) this.#emit("sent", { seq });
      });
    }
    return records;
  }

  /** @param {ConnectionEnd} end */
  async #ended(end) {
    const session = /** @type {Session} */ (this.#session);
    /** @type {OutgoingFiles} */ (this.#outgoing).connectionLost();
    if (end.wasJoined || this.#peer) {
      await session.connectionLost();
      if (this.#peer) {
        this.#peer = false;
        this.#emit("peer_down", {});
      }
    }
    await this.#process();
    if (this.#closing) return;
    const error = end.error;
    if (!end.retry) {
      const code = error instanceof RelayRefused ? error.code : null;
      if (code === ErrorCode.BURNED && this.#burnRequested) await this.#keys?.forget?.(this.roomId, this.seat);
      this.#fatal(error, code);
      return;
    }
    this.#failures = end.wasJoined ? 1 : this.#failures + 1;
    const delay = Math.min(this.backoffCap, this.backoffBase * 2 ** (this.#failures - 1)) * (0.5 + Math.random() / 2);
    this.#emit("reconnecting", { delay: delay / 1000, reason: error.message });
    this.#retry = setTimeout(() => this.#connect(), delay);
  }

  #tick() {
    void this.#work.run(async () => {
      if (this.#closing || this.#session === null) return;
      await this.#session.tick(this.now() / 1000);
      await this.#process();
    });
  }

  #kick() {
    void this.#work.run(() => this.#process());
  }

  /** Handle every event the session has, in order, then wake the writer. Runs on #work. */
  async #process() {
    const session = this.#session;
    if (session === null) return;
    for (let events = session.events(); events.length > 0; events = session.events()) {
      for (const event of events) await this.#handle(event);
    }
    this.#relay?.wake();
  }

  /** @param {import("../lib/session/events.js").Event} event */
  async #handle(event) {
    const outgoing = /** @type {OutgoingFiles} */ (this.#outgoing);
    const incoming = /** @type {IncomingFiles} */ (this.#incoming);
    if (event instanceof TextReceived) {
      this.#emit("text", { seq: event.seq, text: event.text });
    } else if (event instanceof TextDelivered) {
      const seq = this.#textIds.get(event.seq);
      if (seq !== undefined) {
        this.#textIds.delete(event.seq);
        this.#emit("delivered", { seq });
      }
    } else if (event instanceof TextRefused) {
      this.#emit("error", { message: `refused a text from the other person: ${event.reason} (not shown)`, fatal: false, code: null });
    } else if (event instanceof TextRejected) {
      this.#emit("error", { message: `the other person could not take a text of yours: ${event.reason}`, fatal: false, code: null });
    } else if (event instanceof HandshakeComplete) {
      this.#saidWrongSecret = false;
      this.#emit("safety_words", { words: [...event.words], firstContact: event.firstContact, comparedAt: this.#comparedAt });
    } else if (event instanceof PeerKeyChanged) {
      this.#comparedAt = null;
      this.#emit("key_changed", { words: [...event.words] });
    } else if (event instanceof SessionFailed && event.why === ResetReason.AUTHENTICATION) {
      if (!this.#saidWrongSecret) {
        this.#saidWrongSecret = true;
        this.#emit("error", { message: WRONG_SECRET, fatal: false, code: null, cause: WRONG_SECRET_CAUSE });
      }
    } else if (event instanceof SessionFailed) {
      this.#emit("error", { message: `the secure session broke and is being set up again: ${event.reason}`, fatal: false, code: null });
    } else if (event instanceof FileChunk) {
      incoming.write(event.fileId, event.offset, event.data);
    } else if (event instanceof FileProgress) {
      const progress = event.outgoing ? outgoing.progress(event.fileId, event.done) : incoming.progress(event.fileId, event.done);
      if (progress !== null) this.#emitFile("file_progress", progress);
    } else if (event instanceof SendChunks) {
      outgoing.sendFrom(event.fileId, event.start);
    } else if (event instanceof FileOffered) {
      incoming.offered(event.fileId, event.name, event.size);
    } else if (event instanceof FileCompleted) {
      incoming.completed(event.fileId);
    } else if (event instanceof FileDelivered) {
      outgoing.delivered(event.fileId);
    } else if (event instanceof FileFailed) {
      if (event.outgoing) outgoing.failed(event.fileId, event.code, event.reason);
      else incoming.failed(event.fileId, event.code, event.reason);
    }
  }

  /**
   * A file event, with our own number for outgoing files.
   * @template {keyof EngineEvents} K
   * @param {K} type
   * @param {EngineEvents[K]} detail
   */
  #emitFile(type, detail) {
    const d = /** @type {{fileId?: bigint, outgoing?: boolean}} */ (detail);
    if (d.outgoing === true && d.fileId !== undefined) {
      const ours = this.#fileIds.get(d.fileId);
      if (ours === undefined) return;
      if (type === "file_done" || type === "file_failed") this.#fileIds.delete(d.fileId);
      this.#emit(type, /** @type {EngineEvents[K]} */ ({ ...detail, fileId: ours }));
      return;
    }
    this.#emit(type, detail);
  }

  /**
   * @template {keyof EngineEvents} K
   * @param {K} type
   * @param {EngineEvents[K]} detail
   */
  #emit(type, detail) {
    this.#emitter.emit(type, detail);
  }

  /**
   * The engine stops: say why once.
   * @param {unknown} exc
   * @param {number | null} code
   */
  #fatal(exc, code) {
    const message = exc instanceof RelayRefused ? refusal(exc, this.seat) : exc instanceof Error ? exc.message : String(exc);
    this.#emit("error", { message, fatal: true, code });
    this.#closing = true;
    if (this.#ticker !== null) clearInterval(this.#ticker);
    this.#wakeBurners();
  }

  #wakeBurners() {
    for (const wake of this.#burnWaiters) wake();
    this.#burnWaiters.clear();
  }
}

/**
 * A relay refusal in words a person understands; codes without words of
 * their own keep the relay's text (escaped by the page, like all its text).
 * @param {RelayRefused} exc
 * @param {"A" | "B"} seat
 */
function refusal(exc, seat) {
  const words = {
    [ErrorCode.BAD_TOKEN]: "this link is not valid for this room (was it changed?)",
    [ErrorCode.UNKNOWN_ROOM]: "this relay does not know the room (another relay, or its keys were reset)",
    // The person pushed out needs the next step too (twin: m42d/client/relay_words.py). The
    // page took the secret out of the address bar, so a reload cannot rejoin: the link can.
    [ErrorCode.SEAT_TAKEN]:
      `your link (seat ${seat}) was opened somewhere else, so the relay closed this page. ` +
      "If that was not you, open your link again to take it back, compare the safety words, " +
      "and move to a new room: whoever has the link can come back",
    [ErrorCode.EXPIRED]: "this room has expired",
    [ErrorCode.BURNED]: "this room was burned: its links no longer work",
    [ErrorCode.UNSUPPORTED_VERSION]: "this relay speaks another version of the protocol",
  }[exc.code];
  return words ?? `the relay refused the connection (${exc.code}): ${exc.relayMessage}`;
}

/** @returns {Promise<{store: EngineKeyStore, persistent: boolean}>} */
async function memoryKeys() {
  return { store: new MemoryKeyStore(), persistent: false };
}

export { ConnectionLost };
