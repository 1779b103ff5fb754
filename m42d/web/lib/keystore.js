// The browser client's only state at rest: per room and seat, its static
// key pair, the peer's pinned public key and when the two people last
// compared their safety words. Python twin: m42d/client/keystore.py.
//
// Where: IndexedDB, database "m42", object store "seats", one record per
// (room, seat) under the key "<room id hex>/<seat>":
//
//     {version: 1, privateKey: CryptoKey | null, publicKey: Uint8Array | null,
//      peer: Uint8Array | null, comparedAt: number | null}
//
// Rules:
// * The private key is an X25519 CryptoKey made non-extractable and usable
//   for deriveBits only (noise.js never needs more). IndexedDB keeps it by
//   structured clone, so its bytes never reach JS, this page's or an
//   injected script's: at worst a script can use the key while the page is
//   open, never carry it away. An extractable key is refused.
// * A stored static key is never replaced by another (the peer would see an
//   impostor); forget() and a new one is the only way, after a burn.
// * Re-pinning a different peer key clears comparedAt: the comparison was of
//   words made from the old key.
// * A record that does not parse is an error, never silently replaced (that
//   would re-pin whatever key the next handshake offers).
// * Each change is one readwrite transaction (read, check, write), resolved
//   when it commits: two tabs of one room cannot interleave half-updates.
// * Where IndexedDB is missing, refuses to open (private modes), cannot store
//   a CryptoKey, or does not answer within OPEN_TIMEOUT_MS, openKeyStore()
//   returns a MemoryKeyStore: the same API, kept for this tab only, with
//   `persistent` false and a `reason` the page shows. Coming back later then
//   looks like a changed key to the other person.
// * Nothing but keys and that one timestamp is stored: no message, name or
//   address. Messages of errors never contain key bytes.
//
// The KeyStore interface that lib/session/ uses (loadStatic, saveStatic,
// loadPeer, savePeer) is implemented by both stores; the rest is for the UI.

import { toHex } from "./bytes.js";
import { M42Error } from "./errors.js";

/** @typedef {import("./noise.js").KeyPair} KeyPair */
/** @typedef {import("./ticket.js").Seat} Seat */

export const DB_NAME = "m42";
export const DB_VERSION = 1;
export const STORE_NAME = "seats";
export const RECORD_VERSION = 1;
/** How long opening IndexedDB may take before the page falls back to memory. */
export const OPEN_TIMEOUT_MS = 5000;
const KEY_SIZE = 32;
const ROOM_ID_SIZE = 16;
const PROBE_KEY = "probe";

/** A key record is damaged, a key is unfit to store, or IndexedDB failed. */
export class KeyStoreError extends M42Error {}

/**
 * What is kept for one room and seat.
 * @typedef {object} SeatRecord
 * @property {number} version
 * @property {CryptoKey | null} privateKey
 * @property {Uint8Array | null} publicKey
 * @property {Uint8Array | null} peer
 * @property {number | null} comparedAt milliseconds since the epoch
 */

/** @returns {SeatRecord} */
function emptyRecord() {
  return { version: RECORD_VERSION, privateKey: null, publicKey: null, peer: null, comparedAt: null };
}

/**
 * @param {Uint8Array} roomId
 * @param {Seat} seat
 * @returns {string}
 */
export function recordKey(roomId, seat) {
  if (!(roomId instanceof Uint8Array) || roomId.length !== ROOM_ID_SIZE) {
    throw new KeyStoreError(`a room id is ${ROOM_ID_SIZE} bytes`);
  }
  if (seat !== "A" && seat !== "B") throw new KeyStoreError("the seat is A or B");
  return `${toHex(roomId)}/${seat}`;
}

/**
 * @param {unknown} value
 * @param {string} key
 * @returns {SeatRecord}
 */
function checkRecord(value, key) {
  const r = /** @type {Partial<SeatRecord> | null} */ (value);
  const bytesOrNull = (/** @type {unknown} */ v) =>
    v === null || (v instanceof Uint8Array && v.length === KEY_SIZE);
  const ok =
    typeof r === "object" &&
    r !== null &&
    r.version === RECORD_VERSION &&
    (r.privateKey === null || r.privateKey instanceof CryptoKey) &&
    bytesOrNull(r.publicKey) &&
    (r.privateKey === null) === (r.publicKey === null) &&
    bytesOrNull(r.peer) &&
    (r.comparedAt === null || Number.isFinite(r.comparedAt));
  if (!ok) throw new KeyStoreError(`the stored keys of ${key} are damaged; burn the room or forget it`);
  return /** @type {SeatRecord} */ (r);
}

/**
 * @param {Readonly<KeyPair>} keyPair
 */
function checkStaticKey(keyPair) {
  const { privateKey, publicKey } = keyPair;
  if (
    !(privateKey instanceof CryptoKey) ||
    privateKey.type !== "private" ||
    privateKey.algorithm.name !== "X25519" ||
    !privateKey.usages.includes("deriveBits")
  ) {
    throw new KeyStoreError("a static key is an X25519 private CryptoKey for deriveBits");
  }
  if (privateKey.extractable) throw new KeyStoreError("a static key must be non-extractable");
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== KEY_SIZE) {
    throw new KeyStoreError(`a public key is ${KEY_SIZE} bytes`);
  }
}

/**
 * @param {Uint8Array | null} a
 * @param {Uint8Array | null} b
 */
function sameKey(a, b) {
  return a !== null && b !== null && a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * The operations both stores share, over two primitives: read a record and
 * change one atomically.
 * @abstract
 */
class SeatKeyStore {
  /**
   * @param {string} _key
   * @returns {Promise<SeatRecord | null>}
   * @protected
   */
  async readRecord(_key) {
    throw new Error("abstract");
  }

  /**
   * Replace the record at `key` with `change(current)`; null deletes it.
   * @param {string} _key
   * @param {(current: SeatRecord | null) => SeatRecord | null} _change may throw to change nothing
   * @returns {Promise<void>}
   * @protected
   */
  async updateRecord(_key, _change) {
    throw new Error("abstract");
  }

  /**
   * Delete the record at `key`, damaged or not.
   * @param {string} _key
   * @returns {Promise<void>}
   * @protected
   */
  async deleteRecord(_key) {
    throw new Error("abstract");
  }

  /**
   * This seat's static key pair for the room, or null on first use.
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @returns {Promise<Readonly<KeyPair> | null>}
   */
  async loadStatic(roomId, seat) {
    const record = await this.readRecord(recordKey(roomId, seat));
    if (record === null || record.privateKey === null || record.publicKey === null) return null;
    return Object.freeze({ privateKey: record.privateKey, publicKey: record.publicKey.slice() });
  }

  /**
   * Keep `keyPair` as this seat's static key for the room. Saving the key
   * already stored is a no-op; another one is refused (forget() first).
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @param {Readonly<KeyPair>} keyPair non-extractable (noise.js generateKeyPair())
   * @returns {Promise<void>}
   */
  async saveStatic(roomId, seat, keyPair) {
    checkStaticKey(keyPair);
    const key = recordKey(roomId, seat);
    await this.updateRecord(key, (current) => {
      const record = current ?? emptyRecord();
      if (record.publicKey !== null && !sameKey(record.publicKey, keyPair.publicKey)) {
        throw new KeyStoreError(`${key} already has a static key; forget the room to replace it`);
      }
      return { ...record, privateKey: keyPair.privateKey, publicKey: keyPair.publicKey.slice() };
    });
  }

  /**
   * The pinned public key of the other seat, or null before first contact.
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @returns {Promise<Uint8Array | null>}
   */
  async loadPeer(roomId, seat) {
    const record = await this.readRecord(recordKey(roomId, seat));
    return record?.peer?.slice() ?? null;
  }

  /**
   * Pin (or re-pin, once the person trusted it) the other seat's public key.
   * A different key than the one pinned clears comparedAt.
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @param {Uint8Array} publicKey
   * @returns {Promise<void>}
   */
  async savePeer(roomId, seat, publicKey) {
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== KEY_SIZE) {
      throw new KeyStoreError(`a public key is ${KEY_SIZE} bytes`);
    }
    await this.updateRecord(recordKey(roomId, seat), (current) => {
      const record = current ?? emptyRecord();
      const comparedAt = sameKey(record.peer, publicKey) ? record.comparedAt : null;
      return { ...record, peer: publicKey.slice(), comparedAt };
    });
  }

  /**
   * When the two people last said their safety words match, or null.
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @returns {Promise<number | null>} milliseconds since the epoch
   */
  async loadComparedAt(roomId, seat) {
    const record = await this.readRecord(recordKey(roomId, seat));
    return record?.comparedAt ?? null;
  }

  /**
   * Note that the safety words of the pinned peer key were compared.
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @param {number} [when] milliseconds since the epoch (default: now)
   * @returns {Promise<void>}
   */
  async markCompared(roomId, seat, when = Date.now()) {
    if (!Number.isFinite(when)) throw new KeyStoreError("comparedAt is a time in milliseconds");
    const key = recordKey(roomId, seat);
    await this.updateRecord(key, (current) => {
      if (current === null || current.peer === null) {
        throw new KeyStoreError(`${key} has no peer key to have compared`);
      }
      return { ...current, comparedAt: when };
    });
  }

  /**
   * Delete everything kept for the room and seat (after a burn).
   * @param {Uint8Array} roomId
   * @param {Seat} seat
   * @returns {Promise<void>}
   */
  async forget(roomId, seat) {
    await this.deleteRecord(recordKey(roomId, seat));
  }
}

/** Keys for this tab only: for private modes, and wherever IndexedDB fails. */
export class MemoryKeyStore extends SeatKeyStore {
  /** @type {Map<string, SeatRecord>} */ #records = new Map();
  /** Whether the keys outlive the tab: never, here. */
  persistent = false;
  /** Why the keys are not kept (shown by the page), or null for a test store. */
  reason;

  /** @param {string | null} [reason] */
  constructor(reason = null) {
    super();
    this.reason = reason;
  }

  /** @override @protected @param {string} key */
  async readRecord(key) {
    return this.#records.get(key) ?? null;
  }

  /**
   * @override
   * @protected
   * @param {string} key
   * @param {(current: SeatRecord | null) => SeatRecord | null} change
   */
  async updateRecord(key, change) {
    const next = change(this.#records.get(key) ?? null);
    if (next === null) this.#records.delete(key);
    else this.#records.set(key, next);
  }

  /** @override @protected @param {string} key */
  async deleteRecord(key) {
    this.#records.delete(key);
  }
}

/**
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
function settled(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new KeyStoreError(`IndexedDB: ${request.error?.name ?? "error"}`));
  });
}

/**
 * @param {IDBTransaction} tx
 * @returns {Promise<void>}
 */
function committed(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(new KeyStoreError(`IndexedDB: ${tx.error?.name ?? "error"}`));
    tx.onabort = () => reject(new KeyStoreError(`IndexedDB: ${tx.error?.name ?? "aborted"}`));
  });
}

/** Keys kept across visits, in this origin's IndexedDB. */
export class IndexedDBKeyStore extends SeatKeyStore {
  /** @type {IDBDatabase} */ #db;
  persistent = true;
  /** @type {string | null} */ reason = null;

  /** @param {IDBDatabase} db an open database with the object store (see open()) */
  constructor(db) {
    super();
    this.#db = db;
    // Another tab upgrading the schema: let it, this tab's next use fails loudly.
    db.onversionchange = () => db.close();
  }

  /**
   * Open (and on first use create) the database, and check that it can
   * keep a CryptoKey: some engines refuse to clone one into storage.
   * @param {IDBFactory} factory
   * @returns {Promise<IndexedDBKeyStore>}
   */
  static async open(factory) {
    const request = factory.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE_NAME)) db.createObjectStore(STORE_NAME);
    };
    const db = await settled(request);
    const store = new IndexedDBKeyStore(db);
    try {
      const probe = /** @type {CryptoKeyPair} */ (
        await globalThis.crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"])
      );
      await store.updateRecord(PROBE_KEY, () => ({
        ...emptyRecord(),
        privateKey: probe.privateKey,
        publicKey: new Uint8Array(KEY_SIZE),
      }));
      await store.deleteRecord(PROBE_KEY);
    } catch (exc) {
      db.close();
      throw exc;
    }
    return store;
  }

  close() {
    this.#db.close();
  }

  /** @override @protected @param {string} key */
  async readRecord(key) {
    const tx = this.#db.transaction(STORE_NAME, "readonly");
    const value = await settled(tx.objectStore(STORE_NAME).get(key));
    return value === undefined ? null : checkRecord(value, key);
  }

  /**
   * @override
   * @protected
   * @param {string} key
   * @param {(current: SeatRecord | null) => SeatRecord | null} change
   */
  async updateRecord(key, change) {
    const tx = this.#db.transaction(STORE_NAME, "readwrite");
    const done = committed(tx);
    const objects = tx.objectStore(STORE_NAME);
    /** @type {unknown} */
    let failure = null;
    const read = objects.get(key);
    read.onsuccess = () => {
      try {
        const current = read.result === undefined ? null : checkRecord(read.result, key);
        const next = change(current);
        if (next === null) objects.delete(key);
        else objects.put(next, key); // throws DataCloneError where a CryptoKey cannot be kept
      } catch (exc) {
        failure = exc;
        tx.abort();
      }
    };
    try {
      await done;
    } catch (exc) {
      throw failure ?? exc;
    }
  }

  /** @override @protected @param {string} key */
  async deleteRecord(key) {
    const tx = this.#db.transaction(STORE_NAME, "readwrite");
    const done = committed(tx);
    tx.objectStore(STORE_NAME).delete(key);
    await done;
  }
}

/**
 * The key store the page uses: IndexedDB where it works, else memory with
 * the reason to show.
 * @param {{indexedDB?: IDBFactory | undefined, timeoutMs?: number}} [options]
 *   the factory (default: the page's) and how long opening may take
 * @returns {Promise<IndexedDBKeyStore | MemoryKeyStore>}
 */
export async function openKeyStore(options = {}) {
  const factory = "indexedDB" in options ? options.indexedDB : globalThis.indexedDB;
  const timeoutMs = options.timeoutMs ?? OPEN_TIMEOUT_MS;
  if (factory === undefined || factory === null) {
    return new MemoryKeyStore("this browser keeps no storage here (a private window?)");
  }
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), timeoutMs);
  });
  try {
    const opened = IndexedDBKeyStore.open(factory);
    const store = await Promise.race([opened, timeout]);
    if (store === null) {
      // Close it if it opens after all, so it does not block a later upgrade.
      opened.then((late) => late.close()).catch(() => {});
      return new MemoryKeyStore("the browser's storage did not answer");
    }
    return /** @type {IndexedDBKeyStore} */ (store);
  } catch (exc) {
    const clone = exc instanceof Error && exc.name === "DataCloneError";
    return new MemoryKeyStore(
      clone
        ? "this browser cannot keep keys in its storage"
        : "the browser's storage refused to open (a private window?)",
    );
  } finally {
    clearTimeout(timer);
  }
}
