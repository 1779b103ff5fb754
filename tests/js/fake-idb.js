// A small in-memory IndexedDB for the key store's Node tests: what
// lib/keystore.js uses (open with an upgrade, one object store with
// out-of-line keys, get/put/delete in transactions that commit or abort
// whole), with the browser's asynchrony (events fire in later tasks) and
// its structured clone (values are copied on put and on get).
//
// Knobs stand in for what real browsers do in private modes: `failOpen`
// (open fires an error), `hangOpen` (open never answers), `refuseCryptoKeys`
// (put of a CryptoKey throws DataCloneError).

/** @param {() => void} fn */
const later = (fn) => setTimeout(fn, 0);

class FakeRequest {
  /** @type {any} */ result = undefined;
  /** @type {DOMException | null} */ error = null;
  /** @type {(() => void) | null} */ onsuccess = null;
  /** @type {(() => void) | null} */ onerror = null;
  /** @type {(() => void) | null} */ onupgradeneeded = null;
}

class FakeTransaction {
  /** @type {(() => void) | null} */ oncomplete = null;
  /** @type {(() => void) | null} */ onerror = null;
  /** @type {(() => void) | null} */ onabort = null;
  /** @type {DOMException | null} */ error = null;
  #pending = 0;
  #ended = false;

  /** @param {FakeDatabase} db @param {string} mode */
  constructor(db, mode) {
    this.db = db;
    this.mode = mode;
    /** Writes are staged and land together at commit. */
    this.view = new Map(db.data);
    this.#finishSoon();
  }

  /** @param {string} name */
  objectStore(name) {
    if (!this.db.stores.has(name)) throw new DOMException(`no store ${name}`, "NotFoundError");
    return new FakeObjectStore(this);
  }

  /**
   * @param {() => any} work
   * @returns {FakeRequest}
   */
  request(work) {
    if (this.#ended) throw new DOMException("transaction finished", "TransactionInactiveError");
    const req = new FakeRequest();
    this.#pending += 1;
    later(() => {
      if (this.#ended) return;
      req.result = work();
      req.onsuccess?.();
      this.#pending -= 1;
      this.#finishSoon();
    });
    return req;
  }

  #finishSoon() {
    later(() => {
      if (this.#ended || this.#pending > 0) return;
      this.#ended = true;
      if (this.mode === "readwrite") this.db.data = this.view;
      this.oncomplete?.();
    });
  }

  abort() {
    if (this.#ended) return;
    this.#ended = true;
    this.error = new DOMException("aborted", "AbortError");
    later(() => this.onabort?.());
  }
}

class FakeObjectStore {
  /** @param {FakeTransaction} tx */
  constructor(tx) {
    this.tx = tx;
  }

  /** @param {string} key */
  get(key) {
    return this.tx.request(() => {
      const value = this.tx.view.get(key);
      return value === undefined ? undefined : structuredClone(value);
    });
  }

  /** @param {unknown} value @param {string} key */
  put(value, key) {
    if (this.tx.mode !== "readwrite") throw new DOMException("read-only", "ReadOnlyError");
    if (this.tx.db.factory.refuseCryptoKeys && containsCryptoKey(value)) {
      throw new DOMException("CryptoKey cannot be cloned", "DataCloneError");
    }
    const copy = structuredClone(value);
    return this.tx.request(() => {
      this.tx.view.set(key, copy);
      return key;
    });
  }

  /** @param {string} key */
  delete(key) {
    if (this.tx.mode !== "readwrite") throw new DOMException("read-only", "ReadOnlyError");
    return this.tx.request(() => {
      this.tx.view.delete(key);
      return undefined;
    });
  }
}

/** @param {unknown} value */
function containsCryptoKey(value) {
  return (
    typeof value === "object" &&
    value !== null &&
    Object.values(value).some((v) => v instanceof CryptoKey)
  );
}

/**
 * What a database holds, shared by every connection to it.
 * @typedef {{version: number, stores: Set<string>, data: Map<string, unknown>}} Backing
 */

class FakeDatabase {
  /** @type {(() => void) | null} */ onversionchange = null;
  closed = false;

  /** @param {FakeIDBFactory} factory @param {Backing} backing */
  constructor(factory, backing) {
    this.factory = factory;
    this.backing = backing;
  }

  get stores() {
    return this.backing.stores;
  }

  get data() {
    return this.backing.data;
  }

  set data(value) {
    this.backing.data = value;
  }

  get objectStoreNames() {
    return { contains: (/** @type {string} */ name) => this.backing.stores.has(name) };
  }

  /** @param {string} name */
  createObjectStore(name) {
    this.backing.stores.add(name);
  }

  /** @param {string} _store @param {string} [mode] */
  transaction(_store, mode = "readonly") {
    if (this.closed) throw new DOMException("closed", "InvalidStateError");
    return new FakeTransaction(this, mode);
  }

  close() {
    this.closed = true;
  }
}

export class FakeIDBFactory {
  failOpen = false;
  hangOpen = false;
  refuseCryptoKeys = false;
  /** @type {Map<string, Backing>} */ databases = new Map();
  /** @type {FakeDatabase[]} */ connections = [];

  /** @param {string} name @param {number} version */
  open(name, version) {
    const req = new FakeRequest();
    if (this.hangOpen) return req;
    later(() => {
      if (this.failOpen) {
        req.error = new DOMException("storage is off", "InvalidStateError");
        req.onerror?.();
        return;
      }
      let backing = this.databases.get(name);
      if (backing === undefined) {
        backing = { version: 0, stores: new Set(), data: new Map() };
        this.databases.set(name, backing);
      }
      const db = new FakeDatabase(this, backing);
      this.connections.push(db);
      req.result = db;
      if (backing.version < version) {
        req.onupgradeneeded?.();
        backing.version = version;
      }
      req.onsuccess?.();
    });
    return req;
  }

  /**
   * The committed value under `key`, as a fresh clone, for checks.
   * @param {string} key
   * @returns {any}
   */
  peek(key) {
    const value = this.databases.get("m42")?.data.get(key);
    return value === undefined ? undefined : structuredClone(value);
  }

  /**
   * Write a value directly, as another version of the page might have.
   * @param {string} key
   * @param {unknown} value
   */
  poke(key, value) {
    const backing = /** @type {Backing} */ (this.databases.get("m42"));
    backing.data = new Map(backing.data);
    backing.data.set(key, value);
  }
}
