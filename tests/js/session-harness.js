// Two JS session machines wired back to back, with an optional middle that
// meddles: the twin of tests/session_harness.py, in the same order, so that
// the known-answer transcript comes out byte for byte.
//
// The harness plays the relay: it moves CONTROL and BULK payloads between the
// two seats in order, lets a middle drop, duplicate, reorder, tamper or
// replace them, and plays each client's file glue (streams the chunks asked
// for by SendChunks, collects FileChunk data, confirms completed files).

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { ascii, concat, u64 } from "../../m42d/web/lib/bytes.js";
import { Wordlist } from "../../m42d/web/lib/sas.js";
import { FileChunk, FileCompleted, MemoryKeyStore, SendChunks, Session } from "../../m42d/web/lib/session/index.js";
import { CHUNK_SIZE } from "../../m42d/web/lib/stream.js";
import { WORDLIST_PATH } from "./support.js";

/** @typedef {import("../../m42d/web/lib/session/index.js").Event} Event */
/** @typedef {import("../../m42d/web/lib/session/index.js").SessionOptions} SessionOptions */
/** @typedef {"A" | "B"} Seat */
/** @typedef {"CONTROL" | "BULK"} LaneName */
/** @typedef {[LaneName, Uint8Array]} Packet */
/** @typedef {(from: Seat, packet: Packet) => Packet[]} Middle */

export const WORDLIST = Wordlist.parse(readFileSync(WORDLIST_PATH, "utf8"));

/**
 * The transcript's random source: SHA-256(seed || u64be counter) blocks; each
 * draw takes whole blocks and drops what it does not use (as the Python does).
 * @param {string} seed
 * @returns {(n: number) => import("../../m42d/web/lib/bytes.js").Bytes}
 */
export function drbg(seed) {
  let counter = 0n;
  return (n) => {
    let out = new Uint8Array(0);
    while (out.length < n) {
      out = concat(out, createHash("sha256").update(concat(ascii(seed), u64(counter))).digest());
      counter += 1n;
    }
    return out.slice(0, n);
  };
}

/** @type {Middle} */
export const passthrough = (_from, packet) => [packet];

/** @param {Seat} seat @returns {Seat} */
export const other = (seat) => (seat === "A" ? "B" : "A");

export class Side {
  /** @param {Session} session */
  constructor(session) {
    this.session = session;
    /** @type {Event[]} */
    this.events = [];
    /** @type {Map<bigint, Uint8Array>} outgoing file data by id */
    this.files = new Map();
    /** @type {Map<bigint, Uint8Array[]>} */
    this.received = new Map();
    this.sentChunks = 0;
  }

  /**
   * @template T
   * @param {new (...args: any[]) => T} cls
   * @returns {T[]}
   */
  of(cls) {
    return /** @type {T[]} */ (this.events.filter((e) => e instanceof cls));
  }

  /** @param {bigint} fileId */
  receivedBytes(fileId) {
    return concat(...(this.received.get(fileId) ?? []));
  }
}

export class Pair {
  /**
   * @param {Side} a
   * @param {Side} b
   */
  constructor(a, b) {
    this.a = a;
    this.b = b;
    /** @type {Middle} */
    this.middle = passthrough;
    /** @type {[Seat, Packet][]} */
    this.wireLog = [];
    this.now = 0;
    this.autoSave = true; // the glue "stores" every completed file at once
  }

  /**
   * Two sessions of one room, with fresh random values unless given.
   * @param {{secretA?: Uint8Array, secretB?: Uint8Array, roomId?: Uint8Array,
   *   keysA?: MemoryKeyStore, keysB?: MemoryKeyStore, autoSave?: boolean,
   *   options?: Partial<SessionOptions>}} [settings]
   */
  static async make(settings = {}) {
    const roomId = settings.roomId ?? crypto.getRandomValues(new Uint8Array(16));
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const common = { roomId, wordlist: WORDLIST, ...settings.options };
    const a = await Session.create({
      seat: "A", secret: settings.secretA ?? secret, keys: settings.keysA ?? new MemoryKeyStore(), ...common,
    });
    const b = await Session.create({
      seat: "B", secret: settings.secretB ?? secret, keys: settings.keysB ?? new MemoryKeyStore(), ...common,
    });
    const pair = new Pair(new Side(a), new Side(b));
    pair.autoSave = settings.autoSave ?? true;
    return pair;
  }

  /** @param {Seat} seat */
  side(seat) {
    return seat === "A" ? this.a : this.b;
  }

  /** Both seats learn the other is online, as after JOINED/PEER_UP. */
  async connect() {
    await this.b.session.peerOnline(this.now);
    await this.a.session.peerOnline(this.now);
    await this.pump();
  }

  async disconnect() {
    await this.a.session.peerOffline();
    await this.b.session.peerOffline();
    await this.#collect();
  }

  /**
   * @param {Seat} seat
   * @param {Uint8Array} data
   * @param {string} [name]
   */
  async sendFile(seat, data, name = "file.bin") {
    const side = this.side(seat);
    const fileId = await side.session.offerFile(name, BigInt(data.length));
    side.files.set(fileId, data);
    return fileId;
  }

  /** @param {number} now */
  async tick(now) {
    this.now = now;
    await this.a.session.tick(now);
    await this.b.session.tick(now);
  }

  /** @returns {Promise<[Seat, Packet][]>} */
  async #collect() {
    /** @type {[Seat, Packet][]} */
    const out = [];
    for (const seat of /** @type {Seat[]} */ (["A", "B"])) {
      const side = this.side(seat);
      const fresh = side.session.events();
      side.events.push(...fresh);
      for (const ev of fresh) {
        if (ev instanceof SendChunks) {
          for (const packet of await this.#chunks(side, ev)) out.push([seat, packet]);
        } else if (ev instanceof FileChunk) {
          const parts = side.received.get(ev.fileId) ?? [];
          const length = parts.reduce((n, p) => n + p.length, 0);
          if (BigInt(length) !== ev.offset) throw new Error("chunks must arrive in order");
          parts.push(ev.data);
          side.received.set(ev.fileId, parts);
        } else if (ev instanceof FileCompleted && this.autoSave) {
          await side.session.confirmSaved(ev.fileId);
        }
      }
    }
    return out;
  }

  /**
   * @param {Side} side
   * @param {SendChunks} ev
   * @returns {Promise<Packet[]>}
   */
  async #chunks(side, ev) {
    const data = /** @type {Uint8Array} */ (side.files.get(ev.fileId));
    const count = side.session.fileChunks(ev.fileId);
    /** @type {Packet[]} */
    const packets = [];
    for (let i = ev.start; i < count; i++) {
      const chunk = data.subarray(Number(i) * CHUNK_SIZE, (Number(i) + 1) * CHUNK_SIZE);
      packets.push(["BULK", await side.session.encryptChunk(ev.fileId, i, chunk)]);
      side.sentChunks += 1;
    }
    return packets;
  }

  /** Deliver everything until both sides are quiet. */
  async pump(rounds = 10_000) {
    for (let round = 0; round < rounds; round++) {
      let batch = await this.#collect();
      for (const seat of /** @type {Seat[]} */ (["A", "B"])) {
        const made = this.side(seat).session.dataToSend();
        batch = [...made.map((p) => /** @type {[Seat, Packet]} */ ([seat, ["CONTROL", p]])), ...batch];
      }
      if (batch.length === 0) return;
      for (const [seat, packet] of batch) {
        this.wireLog.push([seat, packet]);
        for (const [lane, payload] of this.middle(seat, packet)) {
          const target = this.side(other(seat)).session;
          if (lane === "CONTROL") await target.receiveControl(payload);
          else await target.receiveBulk(payload);
        }
      }
    }
    throw new Error("sessions did not go quiet");
  }
}
