// Where a received file goes while it arrives: one writer interface, three
// places. Python twin: the part of m42d/client/engine.py that writes
// incoming files to a temporary file and moves it into place.
//
// Rules:
// * A FileSink takes write(offset, bytes) in order, except that a transfer
//   resumed after a reconnect starts again at an earlier chunk boundary and
//   overwrites what follows (docs/protocol.md, "Files", step 7). close()
//   commits the file; abort() discards everything written.
// * Nothing holds a whole large file in memory where the browser can write
//   to disk as chunks arrive. In order of preference:
//   1. File System Access API (showSaveFilePicker): the person picks where
//      the file goes and chunks are written straight there; the browser
//      keeps them in a temporary file (Chromium: "<name>.crswap") and moves
//      it into place on close(), so an aborted transfer leaves nothing.
//      Desktop Chromium only (Chrome, Edge, Opera 86+); not Firefox, not
//      Safari, not Chrome on Android. Needs a click (user activation).
//   2. Origin private file system from a dedicated worker
//      (createSyncAccessHandle, lib/sink-worker.js): chunks go to disk in
//      the browser's storage for this origin; close() hands back a
//      disk-backed File that the page offers for saving. Chrome/Edge 102+,
//      Firefox 111+, Safari 16.4+ (iOS too). Not in Firefox private windows,
//      and only within the origin's storage quota, checked before accepting.
//   3. Memory, up to MEMORY_SINK_CAP, for everything else: larger offers are
//      refused *before* accepting, with a message saying why and what works.
// * Failures are SinkError (a write that fails, storage full) or
//   SinkRefused (before accepting), each with the FileCode to tell the peer.

import { M42Error } from "./errors.js";

/** The largest file received into memory (when nothing can write to disk). */
export const MEMORY_SINK_CAP = 256 * 1024 * 1024;

/** Where OPFS sinks keep their files; entries older than STALE_MS are removed at start. */
export const OPFS_DIRECTORY = "m42-incoming";
export const STALE_MS = 24 * 3600 * 1000;

/** The one Trusted Types policy the page creates (m42d.web.pages.TRUSTED_TYPES_POLICY). */
export const TRUSTED_TYPES_POLICY = "m42-worker-url";

/** File codes this module gives (docs/protocol.md, "Records"). */
const TOO_LARGE = 2;
const NO_SPACE = 3;
const WRITE_FAILED = 6;

/**
 * @typedef {object} FileSink
 * @property {(offset: number, bytes: Uint8Array) => Promise<void>} write
 * @property {() => Promise<File | void>} close a File to offer for saving, or
 *   nothing when the file is already where the person chose
 * @property {() => Promise<void>} abort
 */

/** @typedef {"file-picker" | "opfs" | "memory"} SinkKind */

/** A sink could not be made: the offer should be refused with `code`. */
export class SinkRefused extends M42Error {
  /**
   * @param {string} message one sentence for the person, with what would work
   * @param {number} code the FileCode for the peer
   */
  constructor(message, code) {
    super(message);
    /** @readonly */
    this.code = code;
  }
}

/** Writing failed (storage full, the file went away): the transfer ends with `code`. */
export class SinkError extends M42Error {
  /**
   * @param {string} message
   * @param {number} code the FileCode for the peer
   * @param {ErrorOptions} [options]
   */
  constructor(message, code, options) {
    super(message, options);
    /** @readonly */
    this.code = code;
  }
}

/**
 * Wrap a browser error from a write in SinkError with the right code.
 * @param {unknown} exc
 * @returns {SinkError}
 */
function writeError(exc) {
  if (exc instanceof SinkError) return exc;
  const name = exc instanceof Error || exc instanceof DOMException ? exc.name : "";
  if (name === "QuotaExceededError") {
    return new SinkError("the browser's storage is full", NO_SPACE, { cause: exc });
  }
  return new SinkError(`the file could not be written (${name || "error"})`, WRITE_FAILED, {
    cause: exc,
  });
}

// ---------------------------------------------------------------------------
// Memory

/**
 * Keep the file in memory, refusing to grow past `cap`.
 * @param {string} name
 * @param {number} [cap]
 * @returns {FileSink}
 */
export function memorySink(name, cap = MEMORY_SINK_CAP) {
  /** @type {Uint8Array<ArrayBuffer>[]} */
  let parts = [];
  let length = 0;
  let finished = false;
  return {
    async write(offset, bytes) {
      if (finished) throw new SinkError("the file is already closed", WRITE_FAILED);
      if (!Number.isSafeInteger(offset) || offset < 0 || offset > length) {
        throw new SinkError(`write at ${offset} leaves a gap after ${length} bytes`, WRITE_FAILED);
      }
      if (offset + bytes.length > cap) {
        throw new SinkError(`the file grew past the ${cap}-byte memory cap`, TOO_LARGE);
      }
      if (offset < length) [parts, length] = truncate(parts, offset);
      parts.push(bytes.slice());
      length += bytes.length;
    },
    async close() {
      finished = true;
      const file = new File(parts, name);
      parts = [];
      return file;
    },
    async abort() {
      finished = true;
      parts = [];
      length = 0;
    },
  };
}

/**
 * The parts cut to their first `at` bytes.
 * @param {Uint8Array<ArrayBuffer>[]} parts
 * @param {number} at
 * @returns {[Uint8Array<ArrayBuffer>[], number]}
 */
function truncate(parts, at) {
  /** @type {Uint8Array<ArrayBuffer>[]} */
  const kept = [];
  let length = 0;
  for (const part of parts) {
    if (length + part.length <= at) {
      kept.push(part);
      length += part.length;
    } else {
      if (at > length) kept.push(part.subarray(0, at - length));
      return [kept, at];
    }
  }
  return [kept, length];
}

// ---------------------------------------------------------------------------
// File System Access API

/**
 * @typedef {object} SaveFilePicker
 * @property {(options: {suggestedName: string}) => Promise<FileSystemFileHandle>} showSaveFilePicker
 */

/**
 * Ask where to save, then write there as chunks arrive.
 * @param {string} name suggested to the person
 * @param {SaveFilePicker} picker the window (showSaveFilePicker)
 * @returns {Promise<FileSink | null>} null if the person closed the picker
 */
export async function fileSystemAccessSink(name, picker) {
  /** @type {FileSystemFileHandle} */
  let handle;
  try {
    handle = await picker.showSaveFilePicker({ suggestedName: name });
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === "AbortError") return null;
    throw exc;
  }
  const writable = await handle.createWritable({ keepExistingData: false });
  return {
    async write(offset, bytes) {
      try {
        await writable.write({ type: "write", position: offset, data: copy(bytes) });
      } catch (exc) {
        throw writeError(exc);
      }
    },
    async close() {
      try {
        await writable.close();
      } catch (exc) {
        throw writeError(exc);
      }
    },
    async abort() {
      await writable.abort();
    },
  };
}

/**
 * A copy in a buffer of its own, as the stream and postMessage want it.
 * @param {Uint8Array} bytes
 * @returns {Uint8Array<ArrayBuffer>}
 */
function copy(bytes) {
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------
// Origin private file system, from a worker

/** @type {{createScriptURL: (url: string) => unknown} | null} */
let workerUrlPolicy = null;

/**
 * The worker's URL, through the page's Trusted Types policy where the
 * browser enforces them (the CSP says require-trusted-types-for 'script'):
 * the policy lets exactly this one URL through.
 * @returns {string | URL}
 */
function sinkWorkerUrl() {
  const url = new URL("./sink-worker.js", import.meta.url).href;
  const tt = /** @type {any} */ (globalThis).trustedTypes;
  if (!tt || typeof tt.createPolicy !== "function") return url;
  workerUrlPolicy ??= tt.createPolicy(TRUSTED_TYPES_POLICY, {
    /** @param {string} value */
    createScriptURL(value) {
      if (value !== url) throw new TypeError("only the file sink worker may be started");
      return value;
    },
  });
  // A TrustedScriptURL, which Worker() takes where a string is typed.
  return /** @type {string} */ (/** @type {{createScriptURL: (u: string) => unknown}} */ (workerUrlPolicy).createScriptURL(url));
}

/**
 * One request/answer channel to the sink worker; answers come in order.
 */
class WorkerChannel {
  /** @type {Map<number, {resolve: (value: any) => void, reject: (reason: unknown) => void}>} */
  #pending = new Map();
  #next = 1;
  /** @type {Worker} */
  #worker;

  /** @param {Worker} worker */
  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = (event) => {
      const { id, ok, name, message, value } = event.data;
      const waiter = this.#pending.get(id);
      if (!waiter) return;
      this.#pending.delete(id);
      if (ok) waiter.resolve(value);
      else waiter.reject(new DOMException(message, name));
    };
    worker.onerror = (event) => {
      event.preventDefault();
      this.#failAll(new DOMException("the file sink worker failed", "InvalidStateError"));
    };
  }

  /**
   * @param {object} request
   * @returns {Promise<any>}
   */
  call(request) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, ...request });
    });
  }

  /** @param {unknown} reason */
  #failAll(reason) {
    for (const waiter of this.#pending.values()) waiter.reject(reason);
    this.#pending.clear();
  }

  terminate() {
    this.#worker.terminate();
    this.#failAll(new DOMException("the file sink was closed", "InvalidStateError"));
  }
}

/**
 * The browser's storage for this origin has room for `size` more bytes
 * (navigator.storage.estimate; true where the browser does not say).
 * @param {number} size
 * @returns {Promise<boolean>}
 */
async function storageHasRoom(size) {
  if (typeof navigator.storage?.estimate !== "function") return true;
  const { quota, usage } = await navigator.storage.estimate();
  if (quota === undefined || usage === undefined) return true;
  return quota - usage >= size;
}

/**
 * A random name for the OPFS entry: never the peer's name (it may not be a
 * valid entry name, and two offers may share one).
 * @returns {string}
 */
function entryName() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `${Date.now()}-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Write into the origin private file system from a worker.
 * @param {string} name the file's name when offered for saving
 * @param {number} size checked against the storage quota first
 * @returns {Promise<FileSink>}
 * @throws {SinkRefused} not enough room in the browser's storage
 * @throws {DOMException} OPFS or its sync access handles are unavailable here
 */
export async function opfsSink(name, size) {
  if (!(await storageHasRoom(size))) {
    throw new SinkRefused(
      "Not enough room in this browser's storage for this file: free some space, or receive it with the m42 command line tool.",
      NO_SPACE,
    );
  }
  const entry = entryName();
  const channel = new WorkerChannel(
    new Worker(sinkWorkerUrl(), { type: "module", name: "m42 file sink" }),
  );
  try {
    await channel.call({ op: "open", directory: OPFS_DIRECTORY, entry });
  } catch (exc) {
    channel.terminate();
    throw exc;
  }
  let finished = false;
  return {
    async write(offset, bytes) {
      if (finished) throw new SinkError("the file is already closed", WRITE_FAILED);
      try {
        await channel.call({ op: "write", offset, bytes: copy(bytes) });
      } catch (exc) {
        throw writeError(exc);
      }
    },
    async close() {
      finished = true;
      try {
        await channel.call({ op: "close" });
      } catch (exc) {
        throw writeError(exc);
      } finally {
        channel.terminate();
      }
      const root = await navigator.storage.getDirectory();
      const directory = await root.getDirectoryHandle(OPFS_DIRECTORY);
      const stored = await (await directory.getFileHandle(entry)).getFile();
      // A File made of a disk-backed File refers to it; nothing is read here.
      return new File([stored], name, { lastModified: stored.lastModified });
    },
    async abort() {
      finished = true;
      try {
        await channel.call({ op: "abort" });
      } finally {
        channel.terminate();
      }
    },
  };
}

/**
 * Remove files that earlier visits left in the OPFS directory (received and
 * offered for saving, or cut off by a closed tab). Entries another tab is
 * still writing are locked by their sync access handle and stay.
 * @param {number} [now]
 * @returns {Promise<number>} how many were removed
 */
export async function removeStaleOpfsFiles(now = Date.now()) {
  if (typeof navigator.storage?.getDirectory !== "function") return 0;
  let removed = 0;
  try {
    const root = await navigator.storage.getDirectory();
    const directory = await root.getDirectoryHandle(OPFS_DIRECTORY, { create: false });
    const entries = /** @type {AsyncIterable<[string, FileSystemHandle]>} */ (
      /** @type {any} */ (directory).entries()
    );
    for await (const [entryName, handle] of entries) {
      if (handle.kind !== "file") continue;
      const file = await /** @type {FileSystemFileHandle} */ (handle).getFile();
      if (now - file.lastModified < STALE_MS) continue;
      try {
        await directory.removeEntry(entryName);
        removed++;
      } catch {
        // Locked by a tab still writing it.
      }
    }
  } catch {
    // No such directory, or no OPFS in this window (private mode): nothing to do.
  }
  return removed;
}

// ---------------------------------------------------------------------------
// The chooser

/**
 * @typedef {object} SinkChoice
 * @property {FileSink} sink
 * @property {SinkKind} kind
 */

/**
 * The best sink this browser offers for an incoming file of `size` bytes.
 * Call it from the click that accepts the offer: the save picker needs that
 * user activation.
 * @param {{name: string, size: number}} offer
 * @param {{picker?: SaveFilePicker | null, opfs?: boolean, memoryCap?: number}} [options]
 *   what to try (defaults: what this window has)
 * @returns {Promise<SinkChoice | null>} null if the person closed the save picker
 * @throws {SinkRefused} nothing here can take a file this large
 */
export async function chooseSink({ name, size }, options = {}) {
  const picker =
    options.picker === undefined ? defaultPicker() : options.picker;
  const opfs = options.opfs ?? typeof navigator.storage?.getDirectory === "function";
  const memoryCap = options.memoryCap ?? MEMORY_SINK_CAP;
  if (picker !== null) {
    try {
      const sink = await fileSystemAccessSink(name, picker);
      return sink === null ? null : { sink, kind: "file-picker" };
    } catch (exc) {
      // No user activation, or the picker is blocked: the next place will do.
      if (!(exc instanceof DOMException)) throw exc;
    }
  }
  if (opfs) {
    try {
      return { sink: await opfsSink(name, size), kind: "opfs" };
    } catch (exc) {
      if (exc instanceof SinkRefused && size > memoryCap) throw exc;
      // OPFS unusable here (a private window): memory, if the file fits.
    }
  }
  if (size > memoryCap) {
    throw new SinkRefused(
      `This browser cannot write incoming files to disk, and keeps at most ${Math.floor(memoryCap / (1024 * 1024))} MiB in memory: receive this file in Chrome or Edge, or with the m42 command line tool.`,
      TOO_LARGE,
    );
  }
  return { sink: memorySink(name, memoryCap), kind: "memory" };
}

/**
 * The window's save picker, if it has one.
 * @returns {SaveFilePicker | null}
 */
function defaultPicker() {
  const scope = /** @type {Partial<SaveFilePicker>} */ (globalThis);
  return typeof scope.showSaveFilePicker === "function"
    ? /** @type {SaveFilePicker} */ (scope)
    : null;
}
