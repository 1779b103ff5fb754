// The OPFS file sink's worker (lib/sink.js, opfsSink): one file per worker.
//
// createSyncAccessHandle exists only in dedicated workers; its writes are
// synchronous and positioned, which is what a resumable transfer needs.
//
// Rules:
// * Requests are {id, op, ...}; each gets {id, ok, value} or {id, ok: false,
//   name, message}, in order: a queue runs them one at a time, so a write
//   never overtakes the open before it.
// * open creates the entry (truncated), write(offset, bytes) writes all the
//   bytes at offset, close flushes and releases the handle, abort releases it
//   and removes the entry.

/**
 * @typedef {object} SyncAccessHandle
 * @property {(buffer: Uint8Array, options: {at: number}) => number} write
 * @property {(size: number) => void} truncate
 * @property {() => void} flush
 * @property {() => void} close
 */

/** @type {SyncAccessHandle | null} */
let handle = null;
/** @type {FileSystemDirectoryHandle | null} */
let directory = null;
let entry = "";
let queue = Promise.resolve();

/** The worker's scope, typed by hand (the checker sees a window here). */
const scope = /** @type {{onmessage: ((event: MessageEvent) => void) | null, postMessage: (message: unknown) => void}} */ (
  /** @type {unknown} */ (globalThis)
);

/**
 * @param {{op: string, directory?: string, entry?: string, offset?: number, bytes?: Uint8Array}} request
 * @returns {Promise<unknown>}
 */
async function run(request) {
  switch (request.op) {
    case "open": {
      const root = await navigator.storage.getDirectory();
      directory = await root.getDirectoryHandle(String(request.directory), { create: true });
      entry = String(request.entry);
      const file = await directory.getFileHandle(entry, { create: true });
      handle = /** @type {SyncAccessHandle} */ (
        /** @type {unknown} */ (await /** @type {any} */ (file).createSyncAccessHandle())
      );
      handle.truncate(0);
      return null;
    }
    case "write": {
      const open = opened();
      const bytes = /** @type {Uint8Array} */ (request.bytes);
      const offset = Number(request.offset);
      for (let written = 0; written < bytes.length; ) {
        const n = open.write(bytes.subarray(written), { at: offset + written });
        if (n <= 0) throw new DOMException("the file sink wrote nothing", "InvalidStateError");
        written += n;
      }
      return null;
    }
    case "close": {
      const open = opened();
      open.flush();
      open.close();
      handle = null;
      return null;
    }
    case "abort": {
      handle?.close();
      handle = null;
      if (directory !== null && entry) await directory.removeEntry(entry);
      return null;
    }
    default:
      throw new DOMException(`unknown request ${request.op}`, "NotSupportedError");
  }
}

/** @returns {SyncAccessHandle} */
function opened() {
  if (handle === null) throw new DOMException("the file is not open", "InvalidStateError");
  return handle;
}

scope.onmessage = (/** @type {MessageEvent} */ event) => {
  const { id, ...request } = event.data;
  queue = queue.then(async () => {
    try {
      scope.postMessage({ id, ok: true, value: await run(request) });
    } catch (exc) {
      const name = exc instanceof DOMException || exc instanceof Error ? exc.name : "Error";
      const message = exc instanceof Error || exc instanceof DOMException ? exc.message : String(exc);
      scope.postMessage({ id, ok: false, name, message });
    }
  });
};
