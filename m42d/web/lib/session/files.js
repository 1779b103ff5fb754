// Files: our outgoing transfers and the peer's incoming ones (docs/protocol.md, "Files").
// Python twin: m42d/session/files.py.
//
// Why a little over 500 lines: both directions of a transfer (the twin
// m42d/session/files.py keeps them together too) share the record codecs
// and the rules of acknowledgement and resume; apart they would repeat them.
//
// Rules and invariants (the twin's):
// * An offer carries a fresh random file id, STREAM key and salt, the size
//   and the name; the sender reads nothing of the file before the receiver
//   accepts. Chunks travel on the bulk lane under that key (lib/stream.js),
//   so the relay may deliver them late relative to the control lane, and
//   bulk trouble never ends the session.
// * The sender keeps a transfer until FILE_DONE, FILE_REJECT or its own
//   cancel; after a fresh handshake it offers every one again. A FILE_ACCEPT
//   or FILE_ACK for a transfer it no longer has is answered FILE_CANCEL.
// * The receiver holds at most 64 offers pending or being received, and
//   remembers the 1,024 most recently finished transfers, so that a re-offer
//   is answered (FILE_ACCEPT from the first missing chunk, FILE_DONE,
//   FILE_REJECT with the original code, or nothing while the user decides or
//   the glue stores the file).
// * Chunks are taken in order. A duplicate is ignored; a gap, a chunk that
//   fails authentication or 30 s without progress is answered FILE_ACCEPT
//   from the first missing chunk; the fourth bad chunk ends the transfer
//   (MAX_BAD_CHUNKS = 3 are forgiven).
// * The offer's size bounds the transfer: the first chunk that would carry
//   the file past it ends it before any of its data is passed on, and so
//   does a final chunk that leaves it short (FILE_REJECT code 4).
// * A file is complete when its final chunk authenticates after an unbroken
//   run of authenticated chunks. FILE_DONE, the sender's "delivered", goes
//   only once the glue has stored it (IncomingFiles.confirmSaved).
// * File ids, sizes, chunk indexes and offsets are BigInt.

import { readU64, u64 } from "../bytes.js";
import { LocalProtocolError, StreamError } from "../errors.js";
import { CHUNK_SIZE, FileKey, StreamDecryptor, StreamEncryptor, chunkCount } from "../stream.js";
import {
  FileChunk,
  FileCompleted,
  FileDelivered,
  FileFailed,
  FileOffered,
  FileProgress,
  SendChunks,
} from "./events.js";
import {
  BULK_HEADER,
  FileCode,
  MAX_FILE_NAME,
  Offer,
  RecordType,
  SessionError,
  codeText,
  decodeIdIndex,
  decodeOffer,
  decodeReason,
  decodeU64Body,
  encodeUtf8,
  idIndexBody,
  reasonBody,
} from "./records.js";

/** @typedef {import("../bytes.js").Bytes} Bytes */
/** @typedef {import("./records.js").RecordSender} RecordSender */
/** @typedef {import("./events.js").EventSink} EventSink */

/** Chunks (1 MiB) between progress acks. */
export const FILE_ACK_EVERY = 4;
/** Chunks failing authentication that a transfer survives. */
export const MAX_BAD_CHUNKS = 3;
/** Offers pending or being received at once. */
export const MAX_OPEN_INCOMING = 64;
/** Finished transfers remembered (to answer re-offers). */
export const MAX_FINISHED_INCOMING = 1024;

const CHUNK = BigInt(CHUNK_SIZE);

/** @param {bigint} a @param {bigint} b */
const min = (a, b) => (a < b ? a : b);

/**
 * @typedef {object} Outgoing
 * @property {Offer} offer
 * @property {StreamEncryptor} encryptor
 * @property {bigint} chunks
 * @property {"offered" | "sending"} state
 * @property {bigint} acked chunks the receiver confirmed
 */

/** Our transfers, from offer() until the peer has them (or one side gives up). */
export class OutgoingFiles {
  /** @type {Map<bigint, Outgoing>} */ #files = new Map();

  /**
   * @param {RecordSender} sendRecord
   * @param {EventSink} emit
   * @param {(n: number) => Bytes} random
   */
  constructor(sendRecord, emit, random) {
    this.sendRecord = sendRecord;
    this.emit = emit;
    this.random = random;
  }

  /** Some transfer still waits for the peer's FILE_DONE. */
  get active() {
    return this.#files.size > 0;
  }

  /**
   * Refuse, before anything is drawn or queued, an offer this side must not make.
   * @param {string} name
   * @param {bigint} size
   * @throws {LocalProtocolError}
   */
  check(name, size) {
    if (typeof size !== "bigint" || size < 0n || size >= 1n << 64n) {
      throw new LocalProtocolError("file size must be a BigInt in 0 .. 2^64-1");
    }
    const raw = encodeUtf8(name, "the file name");
    if (!(raw.length > 0 && raw.length <= MAX_FILE_NAME)) {
      throw new LocalProtocolError("file name must be 1 to 1024 bytes of UTF-8");
    }
  }

  /**
   * Offer a file; resolves to its id.
   * @param {string} name
   * @param {bigint} size
   * @returns {Promise<bigint>}
   */
  async offer(name, size) {
    this.check(name, size);
    const fileId = readU64(this.random(8));
    const key = new FileKey(this.random(32), this.random(32));
    const offer = new Offer(fileId, size, key.key, key.salt, name);
    const encryptor = await StreamEncryptor.create(key);
    this.#files.set(fileId, { offer, encryptor, chunks: chunkCount(size), state: "offered", acked: 0n });
    await this.sendRecord(RecordType.FILE_OFFER, offer.encode());
    return fileId;
  }

  /** After a fresh handshake: every unfinished transfer is offered again. */
  async reofferAll() {
    for (const out of [...this.#files.values()]) await this.sendRecord(RecordType.FILE_OFFER, out.offer.encode());
  }

  /**
   * The BULK payload for chunk `index` of a file being sent (random access).
   * @param {bigint} fileId
   * @param {bigint} index
   * @param {Uint8Array} data
   * @returns {Promise<Bytes>}
   */
  async encryptChunk(fileId, index, data) {
    const out = this.#files.get(fileId);
    if (out === undefined || out.state !== "sending") throw new LocalProtocolError("file is not being sent");
    if (!(index >= 0n && index < out.chunks)) throw new LocalProtocolError("chunk index out of range");
    const last = index === out.chunks - 1n;
    const expected = last ? out.offer.size - index * CHUNK : CHUNK;
    if (BigInt(data.length) !== expected) {
      throw new LocalProtocolError(`chunk ${index} must be ${expected} bytes, got ${data.length}`);
    }
    const sealed = await out.encryptor.encryptChunk(index, data, { last });
    const payload = new Uint8Array(BULK_HEADER + sealed.length);
    payload.set(u64(fileId), 0);
    payload.set(u64(index), 8);
    payload.set(sealed, BULK_HEADER);
    return payload;
  }

  /**
   * @param {bigint} fileId
   * @returns {bigint}
   */
  chunks(fileId) {
    const out = this.#files.get(fileId);
    if (out === undefined) throw new LocalProtocolError("no outgoing file with that id");
    return out.chunks;
  }

  /**
   * @param {bigint} fileId
   * @param {string} reason
   */
  async cancel(fileId, reason) {
    if (!this.#files.delete(fileId)) throw new LocalProtocolError("no outgoing file with that id");
    await this.sendRecord(RecordType.FILE_CANCEL, reasonBody(fileId, FileCode.CANCELLED, reason));
  }

  /** @param {Uint8Array} body */
  async onAccept(body) {
    const [fileId, start] = decodeIdIndex(body, "FILE_ACCEPT");
    await this.#accept(fileId, start);
  }

  /** @param {Uint8Array} body */
  async onAck(body) {
    const [fileId, upto] = decodeIdIndex(body, "FILE_ACK");
    const out = this.#files.get(fileId);
    if (out === undefined) {
      await this.#accept(fileId, 0n); // answers with FILE_CANCEL
      return;
    }
    if (upto > out.acked) {
      out.acked = min(upto, out.chunks);
      this.emit(new FileProgress(fileId, true, min(out.acked * CHUNK, out.offer.size), out.offer.size));
    }
  }

  /** @param {Uint8Array} body */
  onDone(body) {
    const fileId = decodeU64Body(body, "FILE_DONE");
    const out = this.#files.get(fileId);
    if (out !== undefined) {
      this.#files.delete(fileId);
      this.emit(new FileProgress(fileId, true, out.offer.size, out.offer.size));
      this.emit(new FileDelivered(fileId));
    }
  }

  /** @param {Uint8Array} body */
  onReject(body) {
    const { fileId, code, reason } = decodeReason(body);
    if (this.#files.delete(fileId)) this.emit(new FileFailed(fileId, true, code, reason || codeText(code)));
  }

  /**
   * @param {bigint} fileId
   * @param {bigint} start
   */
  async #accept(fileId, start) {
    const out = this.#files.get(fileId);
    if (out === undefined) {
      // Finished or cancelled here; the cancel may have been lost.
      await this.sendRecord(RecordType.FILE_CANCEL, reasonBody(fileId, FileCode.CANCELLED, "no such transfer"));
      return;
    }
    if (start > out.chunks) throw new SessionError("FILE_ACCEPT starts past the end of the file");
    out.state = "sending";
    if (start > out.acked) out.acked = start;
    this.emit(new SendChunks(fileId, start));
  }
}

/**
 * @typedef {"pending" | "receiving" | "saving" | "done" | "rejected"} InState
 * pending: the user decides; saving: the final chunk authenticated and the
 * glue stores the file (FILE_DONE waits for it)
 */

/**
 * @typedef {object} Incoming
 * @property {bigint} fileId
 * @property {bigint} size
 * @property {FileKey} key
 * @property {bigint} chunks
 * @property {InState} state
 * @property {StreamDecryptor | null} decryptor
 * @property {number} rejectCode
 * @property {bigint} gapRequestedAt
 * @property {number} badChunks
 * @property {number} lastProgress
 */

/** @param {InState} state */
const isOpen = (state) => state === "pending" || state === "receiving";
/** @param {InState} state */
const isFinished = (state) => state === "done" || state === "rejected";

/** The peer's transfers: offers, the chunks of accepted ones, and finished ones (bounded). */
export class IncomingFiles {
  /** @type {Map<bigint, Incoming>} */ #files = new Map();

  /**
   * @param {RecordSender} sendRecord
   * @param {EventSink} emit
   */
  constructor(sendRecord, emit) {
    this.sendRecord = sendRecord;
    this.emit = emit;
  }

  /** Some accepted transfer is still arriving. */
  get receiving() {
    for (const inc of this.#files.values()) if (inc.state === "receiving") return true;
    return false;
  }

  /**
   * @param {bigint} fileId
   * @param {number} now
   */
  async accept(fileId, now) {
    const inc = this.#files.get(fileId);
    if (inc === undefined || inc.state !== "pending") throw new LocalProtocolError("no pending offer with that id");
    inc.state = "receiving";
    inc.decryptor = await StreamDecryptor.create(inc.key);
    inc.lastProgress = now;
    await this.sendRecord(RecordType.FILE_ACCEPT, idIndexBody(fileId, 0n));
  }

  /** @param {bigint} fileId */
  async confirmSaved(fileId) {
    const inc = this.#files.get(fileId);
    if (inc === undefined || inc.state !== "saving") {
      throw new LocalProtocolError("no completed file waiting to be saved with that id");
    }
    inc.state = "done";
    await this.sendRecord(RecordType.FILE_DONE, u64(fileId));
  }

  /**
   * @param {bigint} fileId
   * @param {number} code
   * @param {string} reason
   */
  async reject(fileId, code, reason) {
    const inc = this.#files.get(fileId);
    if (inc === undefined || isFinished(inc.state)) throw new LocalProtocolError("no offer or transfer with that id");
    this.#close(inc, code);
    await this.sendRecord(RecordType.FILE_REJECT, reasonBody(fileId, code, reason));
  }

  /**
   * Ask again for a transfer that made no progress for `stallAfter` seconds.
   * @param {number} now
   * @param {number} stallAfter
   */
  async tick(now, stallAfter) {
    for (const inc of [...this.#files.values()]) {
      if (inc.state === "receiving" && now - inc.lastProgress >= stallAfter) await this.#requestFrom(inc, now);
    }
  }

  /**
   * @param {Uint8Array} body
   * @param {number} now
   */
  async onOffer(body, now) {
    const offer = decodeOffer(body);
    const inc = this.#files.get(offer.fileId);
    if (inc === undefined) await this.#newOffer(offer);
    else if (inc.state === "receiving") await this.#requestFrom(inc, now);
    else if (inc.state === "done") await this.sendRecord(RecordType.FILE_DONE, u64(offer.fileId));
    else if (inc.state === "rejected") {
      await this.sendRecord(RecordType.FILE_REJECT, reasonBody(offer.fileId, inc.rejectCode, ""));
    }
    // pending: the user is still deciding; the first offer's event stands.
    // saving: FILE_DONE or FILE_REJECT follows when the glue has decided.
  }

  /** @param {Uint8Array} body */
  onCancel(body) {
    const { fileId, code, reason } = decodeReason(body);
    const inc = this.#files.get(fileId);
    if (inc !== undefined && isOpen(inc.state)) {
      this.#close(inc, code);
      this.emit(new FileFailed(fileId, false, code, reason || codeText(code)));
    }
  }

  /**
   * One BULK payload: a chunk to check, pass on, acknowledge or ask again for.
   * @param {Uint8Array} payload
   * @param {number} now
   */
  async receiveChunk(payload, now) {
    if (payload.length < BULK_HEADER) return; // not from an honest peer; nothing to resume from it
    const fileId = readU64(payload);
    const index = readU64(payload, 8);
    const inc = this.#files.get(fileId);
    if (inc === undefined || inc.state !== "receiving" || inc.decryptor === null) return; // stale
    const dec = inc.decryptor;
    if (index < dec.nextIndex) return; // duplicate after a resume
    if (index > dec.nextIndex) {
      // A chunk went missing (dropped by the relay or lost in a reconnect):
      // ask for a restart from the gap, once per gap.
      if (inc.gapRequestedAt !== dec.nextIndex) await this.#requestFrom(inc, now);
      return;
    }
    let data;
    try {
      data = await dec.decryptNext(payload.subarray(BULK_HEADER));
    } catch (exc) {
      if (!(exc instanceof StreamError)) throw exc;
      inc.badChunks += 1;
      if (inc.badChunks > MAX_BAD_CHUNKS) {
        await this.#abort(inc, FileCode.CANCELLED, `file chunk rejected: ${exc.message}`);
        return;
      }
      inc.decryptor = await StreamDecryptor.create(inc.key, { start: dec.nextIndex });
      await this.#requestFrom(inc, now);
      return;
    }
    if (await this.#pastTheOffer(inc, dec, index, data)) return;
    inc.lastProgress = now;
    this.emit(new FileChunk(fileId, index, index * CHUNK, data));
    await this.#progress(inc, dec);
  }

  /**
   * End the transfer if this authenticated chunk does not fit the offer.
   * @param {Incoming} inc
   * @param {StreamDecryptor} dec
   * @param {bigint} index
   * @param {Uint8Array} data
   * @returns {Promise<boolean>}
   */
  async #pastTheOffer(inc, dec, index, data) {
    const end = index * CHUNK + BigInt(data.length);
    if (end > inc.size || (!dec.done && dec.nextIndex >= inc.chunks)) {
      // The offer's size is the receiver's only bound: the first byte past
      // it, or a chunk that says more follow when none may, ends the
      // transfer before anything of it is stored.
      await this.#abort(
        inc,
        FileCode.MISMATCH,
        `file size does not match the offer: more than the ${inc.size} bytes offered`,
      );
      return true;
    }
    if (dec.done && end !== inc.size) {
      await this.#abort(inc, FileCode.MISMATCH, "file size does not match the offer");
      return true;
    }
    return false;
  }

  /**
   * @param {Incoming} inc
   * @param {StreamDecryptor} dec
   */
  async #progress(inc, dec) {
    const received = min(dec.nextIndex * CHUNK, inc.size);
    if (dec.done || dec.nextIndex % BigInt(FILE_ACK_EVERY) === 0n) {
      this.emit(new FileProgress(inc.fileId, false, received, inc.size));
      if (!dec.done) await this.sendRecord(RecordType.FILE_ACK, idIndexBody(inc.fileId, dec.nextIndex));
    }
    if (dec.done) {
      // FILE_DONE tells the sender "delivered": only once the glue has the
      // file safely stored (confirmSaved), never before.
      this.#close(inc, 0, "saving");
      this.emit(new FileCompleted(inc.fileId));
    }
  }

  /** @param {Offer} offer */
  async #newOffer(offer) {
    let active = 0;
    for (const inc of this.#files.values()) if (isOpen(inc.state)) active++;
    if (active >= MAX_OPEN_INCOMING) {
      const body = reasonBody(offer.fileId, FileCode.DECLINED, "too many transfers open at once");
      await this.sendRecord(RecordType.FILE_REJECT, body);
      return;
    }
    this.#files.set(offer.fileId, {
      fileId: offer.fileId,
      size: offer.size,
      key: new FileKey(offer.key, offer.salt),
      chunks: chunkCount(offer.size),
      state: "pending",
      decryptor: null,
      rejectCode: 0,
      gapRequestedAt: -1n,
      badChunks: 0,
      lastProgress: 0,
    });
    this.#forgetFinished();
    this.emit(new FileOffered(offer.fileId, offer.name, offer.size));
  }

  /** Keep the memory of finished transfers bounded (oldest go first). */
  #forgetFinished() {
    const finished = [...this.#files.values()].filter((inc) => isFinished(inc.state));
    for (const inc of finished.slice(0, Math.max(0, finished.length - MAX_FINISHED_INCOMING))) {
      this.#files.delete(inc.fileId);
    }
  }

  /**
   * @param {Incoming} inc
   * @param {number} now
   */
  async #requestFrom(inc, now) {
    const dec = /** @type {StreamDecryptor} */ (inc.decryptor);
    inc.gapRequestedAt = dec.nextIndex;
    inc.lastProgress = now;
    await this.sendRecord(RecordType.FILE_ACCEPT, idIndexBody(inc.fileId, dec.nextIndex));
  }

  /**
   * @param {Incoming} inc
   * @param {number} code
   * @param {InState} [state]
   */
  #close(inc, code, state = "rejected") {
    inc.state = state;
    inc.rejectCode = code;
    inc.decryptor = null;
  }

  /**
   * @param {Incoming} inc
   * @param {number} code
   * @param {string} reason
   */
  async #abort(inc, code, reason) {
    this.#close(inc, code);
    this.emit(new FileFailed(inc.fileId, false, code, reason));
    await this.sendRecord(RecordType.FILE_REJECT, reasonBody(inc.fileId, code, reason));
  }
}
