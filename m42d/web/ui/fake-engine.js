// A scripted stand-in for the client engine, for the UI tests only.
//
// The UI tests' server answers /ui/backend.js with this file (the relay never
// serves it: m42d.web.pages.NOT_SERVED), so the real page runs against an
// engine the test drives from outside through globalThis.m42fake:
//
//   m42fake.engine.emit("text", {seq: 1n, text: "<b>hi</b>"})   any event
//   m42fake.peerText("hi")          a text from the peer (seq counted here)
//   m42fake.offerFile("a.bin", 70000) -> "id"   an offer; then
//   m42fake.feed("id", [1, 2, 3])   bytes into the sink the page accepted with
//   m42fake.finishIncoming("id")    close the sink, emit file_done
//   m42fake.deliver("2")            our text 2 was acknowledged
//
// Options, set before the page loads (Playwright's add_init_script):
//   globalThis.m42fakeOptions = {persistent: false, peerOnline: true, autoSend: false}
//
// Every method call of the page is recorded in m42fake.engine.calls, with
// BigInts as strings, so a test reads them with page.evaluate().

import { Link, makeLinks } from "../lib/link.js";
import { Emitter } from "./engine.js";

/** @typedef {import("./engine.js").Engine} Engine */
/** @typedef {import("./engine.js").FileSink} FileSink */
/** @typedef {import("./engine.js").EngineEvents} EngineEvents */

/**
 * @typedef {object} FakeOptions
 * @property {boolean} [persistent] what `keystore` reports (default true)
 * @property {boolean} [peerOnline] the peer is there at start, with safety words
 * @property {boolean} [autoSend] emit `sent` right after sendText (default true)
 */

/** @returns {FakeOptions} */
function options() {
  return /** @type {any} */ (globalThis).m42fakeOptions ?? {};
}

export const FAKE_WORDS = Object.freeze([
  "acorn", "bagpipe", "candle", "dolphin", "ember", "fjord", "gazebo", "harbor",
]);

/**
 * @param {unknown} value
 * @returns {unknown}
 */
function plain(value) {
  if (typeof value === "bigint") return String(value);
  if (value instanceof File) return { file: value.name, size: value.size };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

/** @implements {Engine} */
export class FakeEngine extends Emitter {
  /** @type {{method: string, args: unknown[]}[]} */
  calls = [];
  /** @type {Map<bigint, {sink: FileSink, offset: number, name: string, size: number}>} */
  accepted = new Map();
  /** @type {Map<bigint, File>} */
  outgoing = new Map();
  /** @type {Map<bigint, {name: string, size: number}>} offers the test made */
  offers = new Map();
  /** @type {"A" | "B"} */
  seat;
  #seq = 0n;
  #fileId = 0n;
  /** @type {number | null} */
  comparedAt = null;
  /** @type {string[]} */
  words = [...FAKE_WORDS];

  /** @param {Link} link */
  constructor(link) {
    super();
    this.seat = link.seat;
  }

  /**
   * @param {string} method
   * @param {unknown[]} args
   */
  #record(method, args) {
    this.calls.push({ method, args: args.map(plain) });
  }

  start() {
    this.#record("start", []);
    const opts = options();
    queueMicrotask(() => {
      this.emit("keystore", { persistent: opts.persistent ?? true });
      this.emit("connected", { relay: location.origin });
      if (opts.peerOnline) {
        this.emit("peer_up", {});
        this.emit("safety_words", { words: this.words, firstContact: true, comparedAt: this.comparedAt });
      }
    });
  }

  /** @param {string} text */
  sendText(text) {
    this.#record("sendText", [text]);
    const seq = ++this.#seq;
    if (options().autoSend ?? true) queueMicrotask(() => this.emit("sent", { seq }));
    return seq;
  }

  /** @param {File} file */
  sendFile(file) {
    this.#record("sendFile", [file]);
    const fileId = ++this.#fileId;
    this.outgoing.set(fileId, file);
    return fileId;
  }

  /**
   * @param {bigint} fileId
   * @param {FileSink} sink
   */
  acceptFile(fileId, sink) {
    this.#record("acceptFile", [fileId]);
    const offer = this.offers.get(fileId);
    this.accepted.set(fileId, { sink, offset: 0, name: offer?.name ?? "", size: offer?.size ?? 0 });
  }

  /**
   * @param {bigint} fileId
   * @param {number} code
   * @param {string} reason
   */
  rejectFile(fileId, code, reason) {
    this.#record("rejectFile", [fileId, code, reason]);
  }

  /** @param {bigint} fileId */
  cancelFile(fileId) {
    this.#record("cancelFile", [fileId]);
  }

  trust() {
    this.#record("trust", []);
  }

  async markCompared() {
    this.#record("markCompared", []);
    this.comparedAt = Date.now();
    this.emit("safety_words", { words: this.words, firstContact: false, comparedAt: this.comparedAt });
  }

  async burn() {
    this.#record("burn", []);
  }

  close() {
    this.#record("close", []);
  }
}

/** The test's handle on the page (globalThis.m42fake). */
const control = {
  /** @type {FakeEngine | null} */
  engine: null,
  /** @type {{linkA: string, linkB: string}[]} */
  created: [],
  /** @type {string[]} links the page opened */
  opened: [],
  peerSeq: 0n,
  nextOffer: 1000n,

  /** @returns {FakeEngine} */
  get current() {
    if (this.engine === null) throw new Error("the page has opened no room");
    return this.engine;
  },

  /** @param {string} text */
  peerText(text) {
    this.current.emit("text", { seq: ++this.peerSeq, text });
  },

  peerJoins() {
    const engine = this.current;
    engine.emit("peer_up", {});
    engine.emit("safety_words", { words: engine.words, firstContact: true, comparedAt: engine.comparedAt });
  },

  /**
   * @template {keyof EngineEvents} K
   * @param {K} type
   * @param {EngineEvents[K]} detail
   */
  emit(type, detail) {
    this.current.emit(type, detail);
  },

  /** @param {string | number} seq */
  deliver(seq) {
    this.current.emit("delivered", { seq: BigInt(seq) });
  },

  /**
   * @param {string} name
   * @param {number} size
   * @returns {string} the file id
   */
  offerFile(name, size) {
    const fileId = ++this.nextOffer;
    this.current.offers.set(fileId, { name, size });
    this.current.emit("file_offer", { fileId, name, size });
    return String(fileId);
  },

  /**
   * Write bytes into the accepted sink at its current end and report progress.
   * @param {string} id
   * @param {number[] | Uint8Array} bytes
   * @param {{rate?: number, eta?: number | null}} [rates]
   */
  async feed(id, bytes, { rate = 1 << 20, eta = null } = {}) {
    const fileId = BigInt(id);
    const entry = this.current.accepted.get(fileId);
    if (!entry) throw new Error(`file ${id} was not accepted`);
    const data = Uint8Array.from(bytes);
    await entry.sink.write(entry.offset, data);
    entry.offset += data.length;
    this.current.emit("file_progress", {
      fileId, outgoing: false, name: entry.name, done: entry.offset, size: entry.size, rate, eta,
    });
  },

  /** @param {string} id */
  async finishIncoming(id) {
    const fileId = BigInt(id);
    const entry = this.current.accepted.get(fileId);
    if (!entry) throw new Error(`file ${id} was not accepted`);
    const file = (await entry.sink.close()) ?? null;
    this.current.emit("file_done", { fileId, outgoing: false, name: entry.name, size: entry.size, file });
  },

  /**
   * Progress of one of our files, as the engine would report it.
   * @param {string | number} id
   * @param {number} done
   * @param {number} rate
   * @param {number | null} eta
   */
  progressOut(id, done, rate, eta) {
    const fileId = BigInt(id);
    const file = this.current.outgoing.get(fileId);
    if (!file) throw new Error(`no outgoing file ${id}`);
    this.current.emit("file_progress", { fileId, outgoing: true, name: file.name, done, size: file.size, rate, eta });
  },

  /** @returns {unknown[]} the page's calls, JSON-ready */
  calls() {
    return /** @type {unknown[]} */ (plain(this.current.calls));
  },
};

/** @type {any} */ (globalThis).m42fake = control;

/**
 * Random bytes.
 * @param {number} n
 * @returns {Uint8Array<ArrayBuffer>}
 */
function random(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}

/**
 * A room as the relay would make it: a structurally valid ticket (version 1,
 * a week from now) with random id and MAC, random tokens and secret.
 * @param {string} relayUrl
 * @returns {Promise<{linkA: string, linkB: string}>}
 */
export async function createRoom(relayUrl) {
  const ticket = new Uint8Array(42);
  ticket[0] = 1;
  ticket[1] = 1;
  ticket.set(random(16), 2);
  const expires = BigInt(Math.floor(Date.now() / 1000) + 7 * 86400);
  new DataView(ticket.buffer).setBigUint64(18, expires);
  ticket.set(random(16), 26);
  const [a, b] = makeLinks(relayUrl, { ticket, tokenA: random(16), tokenB: random(16) }, random(32));
  const room = { linkA: a.format(), linkB: b.format() };
  control.created.push(room);
  return room;
}

/**
 * @param {string} link
 * @returns {FakeEngine}
 */
export function openRoom(link) {
  const parsed = Link.parse(link);
  control.opened.push(link);
  control.engine = new FakeEngine(parsed);
  return control.engine;
}
