// Files in the browser: ours read by slices and sealed ahead of the writer,
// the peer's written into a sink as chunks arrive. Python twins:
// m42d/client/outgoing.py and m42d/client/incoming.py.
//
// Rules and invariants:
// * Nothing of a file is read before the peer accepts it, and never all of
//   it: a reader takes READ_BATCH chunks per File.slice(), and keeps at most
//   READ_AHEAD sealed chunks per file ahead of the writer.
// * Every SendChunks bumps the file's generation: the old reader stops and
//   queued chunks of the old generation are dropped, so a resume from chunk
//   `start` never interleaves with stale chunks. A lost connection bumps
//   every generation (the peer asks again after the next handshake).
// * The writer takes chunks in the order they were sealed, one at a time,
//   only within relay credit (takeChunk).
// * Incoming: every write to a sink, its close and its abort run through one
//   queue per file, in the order the session reported them; a sink that
//   fails makes the transfer fail (WRITE_FAILED), and the sender is told.
// * Every transfer ends in exactly one file_done or file_failed.
// * Names shown are the peer's cleaned by safeFileName; rates count from the
//   peer's acceptance, not from the offer.

import { CHUNK_SIZE, encryptedSize } from "../lib/stream.js";
import { LocalProtocolError } from "../lib/errors.js";
import { safeFileName } from "../lib/names.js";
import { Serial } from "../lib/serial.js";
import { BULK_HEADER, FileCode } from "../lib/session/index.js";
import { MAX_PAYLOAD } from "../lib/wire.js";

/** @typedef {import("../lib/session/machine.js").Session} Session */
/** @typedef {import("../ui/engine.js").FileSink} FileSink */
/** @typedef {import("../ui/engine.js").EngineEvents} EngineEvents */

/** Sealed chunks per outgoing file not yet taken by the writer (2 MiB). */
export const READ_AHEAD = (2 * 1024 * 1024) / CHUNK_SIZE;
/** Chunks read per File.slice() (1 MiB): one await per megabyte, not per chunk. */
export const READ_BATCH = (1024 * 1024) / CHUNK_SIZE;

/**
 * How a part of the engine reports to the page.
 * @typedef {<K extends keyof EngineEvents>(type: K, detail: EngineEvents[K]) => void} Emit
 */

/** A transfer's rate and ETA from its start time (twin: m42d/client/transfer.py). */
class Transfer {
  /**
   * @param {bigint} fileId
   * @param {string} name
   * @param {number} size
   * @param {number} started ms
   */
  constructor(fileId, name, size, started) {
    this.fileId = fileId;
    this.name = name;
    this.size = size;
    this.started = started;
  }

  /**
   * @param {boolean} outgoing
   * @param {number} done
   * @param {number} now ms
   * @returns {EngineEvents["file_progress"]}
   */
  progress(outgoing, done, now) {
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 ? (this.size - done) / rate : null;
    return { fileId: this.fileId, outgoing, name: this.name, done, size: this.size, rate, eta };
  }
}

class OutFile extends Transfer {
  generation = 0;
  queued = 0;
  accepted = false;
  /** @type {(() => void) | null} a reader waiting for room in the read-ahead */
  wakeReader = null;

  /**
   * @param {bigint} fileId
   * @param {File} file
   * @param {number} now
   */
  constructor(fileId, file, now) {
    super(fileId, file.name, file.size, now);
    this.file = file;
  }
}

export class OutgoingFiles {
  /** @type {Map<bigint, OutFile>} */ #files = new Map();
  /** @type {{fileId: bigint, generation: number, payload: Uint8Array}[]} */ #chunks = [];

  /**
   * @param {Session} session
   * @param {{emit: Emit, changed: () => void, wakeWriter: () => void, now: () => number}} hooks
   */
  constructor(session, hooks) {
    this.session = session;
    this.hooks = hooks;
    /** The relay's cap on a BULK payload (set by the engine at each JOINED). */
    this.maxPayload = MAX_PAYLOAD;
  }

  /** Some file of ours is neither confirmed nor failed yet. */
  get inFlight() {
    return this.#files.size > 0;
  }

  /**
   * Offer `file`; resolves to its id. Nothing of it is read yet.
   * @param {File} file
   * @returns {Promise<bigint>}
   */
  async offer(file) {
    const fileId = await this.session.offerFile(file.name, BigInt(file.size));
    this.#files.set(fileId, new OutFile(fileId, file, this.hooks.now()));
    this.hooks.changed();
    return fileId;
  }

  /**
   * Stop sending one of our files.
   * @param {bigint} fileId
   */
  async cancel(fileId) {
    const out = this.#files.get(fileId);
    if (out === undefined) throw new LocalProtocolError(`no outgoing file ${fileId}`);
    this.#files.delete(fileId);
    this.#stop(out);
    await this.session.cancelFile(fileId, "cancelled by sender");
    this.hooks.emit("file_failed", { fileId, outgoing: true, name: out.name, code: FileCode.CANCELLED, reason: "cancelled" });
    this.hooks.changed();
  }

  /**
   * The peer wants chunks from `start` on: a new generation reads them.
   * @param {bigint} fileId
   * @param {bigint} start
   */
  sendFrom(fileId, start) {
    const out = this.#files.get(fileId);
    if (out === undefined) return;
    const largest = BULK_HEADER + Number(encryptedSize(BigInt(Math.min(out.size, CHUNK_SIZE))));
    if (largest > this.maxPayload) {
      // The relay would answer the first chunk with 413 and close the
      // connection, texts and all: fail this file instead, and say why.
      void this.#abort(
        out,
        `the relay takes frames of at most ${this.maxPayload} bytes and this file's chunks are ${largest}: ` +
          "texts get through, files cannot (ask whoever runs the relay to remove limits.max_payload)",
      );
      return;
    }
    this.#stop(out);
    if (!out.accepted) {
      out.accepted = true;
      out.started = this.hooks.now();
    }
    void this.#read(out, Number(start), out.generation);
  }

  /**
   * @param {bigint} fileId
   * @param {bigint} done
   * @returns {EngineEvents["file_progress"] | null}
   */
  progress(fileId, done) {
    const out = this.#files.get(fileId);
    return out === undefined ? null : out.progress(true, Number(done), this.hooks.now());
  }

  /** @param {bigint} fileId the peer saved it */
  delivered(fileId) {
    const out = this.#files.get(fileId);
    if (out === undefined) return;
    this.#files.delete(fileId);
    this.#stop(out);
    this.hooks.emit("file_done", { fileId, outgoing: true, name: out.name, size: out.size, file: null });
  }

  /**
   * The peer refused or aborted it, or the session gave it up.
   * @param {bigint} fileId
   * @param {number} code
   * @param {string} reason
   */
  failed(fileId, code, reason) {
    const out = this.#files.get(fileId);
    if (out === undefined) return;
    this.#files.delete(fileId);
    this.#stop(out);
    this.hooks.emit("file_failed", { fileId, outgoing: true, name: out.name, code, reason });
  }

  /** Every reader stops and queued chunks go: the next handshake says where to resume. */
  connectionLost() {
    for (const out of this.#files.values()) this.#stop(out);
    this.#chunks = [];
  }

  /**
   * The writer's side: the next chunk's payload if it fits in `credit` bytes.
   * @param {number} credit
   * @returns {Uint8Array | null}
   */
  takeChunk(credit) {
    while (this.#chunks.length > 0) {
      const item = this.#chunks[0];
      const out = this.#files.get(item.fileId);
      if (out === undefined || out.generation !== item.generation) {
        this.#chunks.shift();
        continue;
      }
      if (credit < item.payload.length) return null;
      this.#chunks.shift();
      out.queued -= 1;
      if (out.queued <= READ_AHEAD - READ_BATCH) out.wakeReader?.();
      return item.payload;
    }
    return null;
  }

  /** @param {OutFile} out */
  #stop(out) {
    out.generation += 1;
    out.queued = 0;
    const wake = out.wakeReader;
    out.wakeReader = null;
    wake?.();
  }

  /**
   * @param {OutFile} out
   * @param {number} start first chunk index
   * @param {number} generation
   */
  async #read(out, start, generation) {
    const count = Number(this.session.fileChunks(out.fileId));
    for (let first = start; first < count; first += READ_BATCH) {
      while (out.queued > READ_AHEAD - READ_BATCH && out.generation === generation) {
        await new Promise((resolve) => (out.wakeReader = () => resolve(undefined)));
      }
      if (out.generation !== generation) return;
      const end = Math.min(first + READ_BATCH, count);
      const offset = first * CHUNK_SIZE;
      let data;
      try {
        data = new Uint8Array(await out.file.slice(offset, Math.min(end * CHUNK_SIZE, out.size)).arrayBuffer());
      } catch {
        await this.#abort(out, "cannot read the file (was it moved or changed?)");
        return;
      }
      if (out.generation !== generation) return;
      for (let index = first; index < end; index++) {
        const at = (index - first) * CHUNK_SIZE;
        let payload;
        try {
          payload = await this.session.encryptChunk(out.fileId, BigInt(index), data.subarray(at, at + CHUNK_SIZE));
        } catch (exc) {
          if (exc instanceof LocalProtocolError) return; // cancelled, rejected or done meanwhile
          throw exc;
        }
        if (out.generation !== generation) return;
        this.#chunks.push({ fileId: out.fileId, generation, payload });
        out.queued += 1;
      }
      this.hooks.wakeWriter();
    }
  }

  /**
   * @param {OutFile} out
   * @param {string} reason
   */
  async #abort(out, reason) {
    this.#files.delete(out.fileId);
    this.#stop(out);
    try {
      await this.session.cancelFile(out.fileId, reason);
    } catch (exc) {
      if (!(exc instanceof LocalProtocolError)) throw exc;
    }
    this.hooks.emit("file_failed", { fileId: out.fileId, outgoing: true, name: out.name, code: FileCode.CANCELLED, reason });
    this.hooks.changed();
  }
}

class InFile extends Transfer {
  /** @type {FileSink | null} */ sink = null;
  queue = new Serial();
  failed = false;
}

export class IncomingFiles {
  /** @type {Map<bigint, InFile>} */ #files = new Map();

  /**
   * @param {Session} session
   * @param {{emit: Emit, changed: () => void, now: () => number}} hooks
   */
  constructor(session, hooks) {
    this.session = session;
    this.hooks = hooks;
  }

  /**
   * The peer offers a file: tell the page, under a name safe to show and save.
   * @param {bigint} fileId
   * @param {string} name
   * @param {bigint} size
   */
  offered(fileId, name, size) {
    const safe = safeFileName(name);
    this.#files.set(fileId, new InFile(fileId, safe, Number(size), this.hooks.now()));
    this.hooks.emit("file_offer", { fileId, name: safe, size: Number(size) });
  }

  /**
   * Receive an offered file into `sink`.
   * @param {bigint} fileId
   * @param {FileSink} sink
   */
  async accept(fileId, sink) {
    const file = this.#files.get(fileId);
    if (file === undefined || file.sink !== null) throw new LocalProtocolError(`no file offer ${fileId} to accept`);
    file.sink = sink;
    file.started = this.hooks.now();
    await this.session.acceptFile(fileId);
    this.hooks.changed();
  }

  /**
   * Refuse an offer or stop receiving.
   * @param {bigint} fileId
   * @param {number} code
   * @param {string} reason
   */
  async reject(fileId, code, reason) {
    const file = this.#files.get(fileId);
    if (file === undefined) throw new LocalProtocolError(`no incoming file ${fileId}`);
    await this.session.rejectFile(fileId, code, reason);
    this.#fail(file, code, reason);
    this.hooks.changed();
  }

  /**
   * One chunk, written where it belongs (a resume may rewrite from an earlier boundary).
   * @param {bigint} fileId
   * @param {bigint} offset
   * @param {Uint8Array} data
   */
  write(fileId, offset, data) {
    const file = this.#files.get(fileId);
    const sink = file?.sink;
    if (file === undefined || sink === null || sink === undefined || file.failed) return;
    void file.queue.run(async () => {
      if (file.failed) return;
      try {
        await sink.write(Number(offset), data);
      } catch {
        await this.#writeFailed(file, "cannot write the file here (out of space, or the browser refused)");
      }
    });
  }

  /**
   * @param {bigint} fileId
   * @param {bigint} done
   * @returns {EngineEvents["file_progress"] | null}
   */
  progress(fileId, done) {
    const file = this.#files.get(fileId);
    return file === undefined || file.failed ? null : file.progress(false, Number(done), this.hooks.now());
  }

  /**
   * Every chunk arrived and verified: close the sink, then tell the sender.
   * @param {bigint} fileId
   */
  completed(fileId) {
    const file = this.#files.get(fileId);
    const sink = file?.sink;
    if (file === undefined || sink === null || sink === undefined) return;
    void file.queue.run(async () => {
      if (file.failed) return;
      let saved;
      try {
        saved = await sink.close();
      } catch {
        await this.#writeFailed(file, "cannot save the file here");
        return;
      }
      this.#files.delete(fileId);
      await this.session.confirmSaved(fileId);
      this.hooks.emit("file_done", { fileId, outgoing: false, name: file.name, size: file.size, file: saved ?? null });
      this.hooks.changed();
    });
  }

  /**
   * The sender cancelled, or the session gave the transfer up.
   * @param {bigint} fileId
   * @param {number} code
   * @param {string} reason
   */
  failed(fileId, code, reason) {
    const file = this.#files.get(fileId);
    if (file !== undefined) this.#fail(file, code, reason);
  }

  /** The page goes away: every unfinished sink is discarded. */
  abortAll() {
    for (const file of this.#files.values()) this.#fail(file, FileCode.CANCELLED, "the page was closed");
  }

  /**
   * @param {InFile} file
   * @param {string} reason
   */
  async #writeFailed(file, reason) {
    try {
      await this.session.rejectFile(file.fileId, FileCode.WRITE_FAILED, reason);
    } catch (exc) {
      if (!(exc instanceof LocalProtocolError)) throw exc;
    }
    this.#fail(file, FileCode.WRITE_FAILED, reason);
    this.hooks.changed();
  }

  /**
   * End a transfer once: abort its sink after the writes queued before.
   * @param {InFile} file
   * @param {number} code
   * @param {string} reason
   */
  #fail(file, code, reason) {
    if (file.failed) return;
    file.failed = true;
    this.#files.delete(file.fileId);
    const sink = file.sink;
    if (sink !== null) {
      void file.queue.run(async () => {
        try {
          await sink.abort();
        } catch {
          // Nothing more can be done with a sink that cannot even discard.
        }
      });
    }
    this.hooks.emit("file_failed", { fileId: file.fileId, outgoing: false, name: file.name, code, reason });
  }
}
