// Two browser engines (m42d/web/engine/engine.js) through an in-memory relay
// that keeps the relay's rules (JOIN/JOINED, PEER_UP/DOWN, forwarding, bulk
// credit, PONG): texts both ways with delivery, files both ways into memory
// sinks with matching bytes, a cut connection that loses nothing, a seat
// taken elsewhere, burn. The real relay and a real browser are the slow
// browser tests' job; this checks the engine's logic in Node, in seconds.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { BrowserEngine, WRONG_SECRET, WRONG_SECRET_CAUSE } from "../../m42d/web/engine/engine.js";
import { Link, makeLinks } from "../../m42d/web/lib/link.js";
import { Wordlist } from "../../m42d/web/lib/sas.js";
import { memorySink } from "../../m42d/web/lib/sink.js";
import { FileCode } from "../../m42d/web/lib/session/index.js";
import {
  Burn,
  Bulk,
  Control,
  Credit,
  ErrorCode,
  ErrorFrame,
  Join,
  Joined,
  MAX_PAYLOAD,
  PeerDown,
  PeerUp,
  Ping,
  Pong,
  decode,
  encode,
} from "../../m42d/web/lib/wire.js";
import { WORDLIST_PATH } from "./support.js";

const WORDLIST = Wordlist.parse(readFileSync(WORDLIST_PATH, "utf8"));
const WINDOW = 512 * 1024;

/** One browser WebSocket, as the relay below drives it. */
class Socket {
  binaryType = "blob";
  bufferedAmount = 0;
  readyState = 0;
  /** @type {((event: unknown) => void) | null} */ onopen = null;
  /** @type {((event: {data: unknown}) => void) | null} */ onmessage = null;
  /** @type {((event: {code: number, reason: string}) => void) | null} */ onclose = null;
  /** @type {((event: unknown) => void) | null} */ onerror = null;
  /** @type {"A" | "B" | null} */ seat = null;

  /** @param {FakeRelay} relay */
  constructor(relay) {
    this.relay = relay;
    setImmediate(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }

  /** @param {Uint8Array} data */
  send(data) {
    const frame = decode(data);
    setImmediate(() => this.relay.fromClient(this, frame));
  }

  /** @param {number} [code] */
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.relay.left(this, code);
  }

  /** @param {import("../../m42d/web/lib/wire.js").Frame} frame */
  deliver(frame) {
    if (this.readyState !== 1) return;
    const bytes = encode(frame);
    setImmediate(() => {
      if (this.readyState === 1) this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
    });
  }

  /** The network cuts this connection (the browser sees 1006). */
  cut() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.relay.left(this, 1006);
    setImmediate(() => this.onclose?.({ code: 1006, reason: "" }));
  }
}

/** The relay's rules, in memory: one room, two seats. */
class FakeRelay {
  /** @type {Map<"A" | "B", Socket>} */ seats = new Map();
  burned = false;
  /** What JOINED announces as the largest payload (a relay may be set lower). */
  maxPayload = MAX_PAYLOAD;
  /** Called with each CONTROL frame relayed (a test counts handshake attempts with it). */
  onControl = () => {};

  open = () => new Socket(this);

  /**
   * @param {Socket} socket
   * @param {import("../../m42d/web/lib/wire.js").Frame} frame
   */
  fromClient(socket, frame) {
    if (socket.readyState !== 1) return;
    if (frame instanceof Join) {
      if (this.burned) {
        socket.deliver(ErrorFrame.fromCode(ErrorCode.BURNED));
        return;
      }
      const old = this.seats.get(frame.seat);
      if (old !== undefined && old !== socket) {
        // The newest connection for a seat wins; the old one hears why, then is closed.
        old.deliver(ErrorFrame.fromCode(ErrorCode.SEAT_TAKEN));
        setImmediate(() => old.cut());
      }
      socket.seat = frame.seat;
      this.seats.set(frame.seat, socket);
      const other = this.#other(frame.seat);
      socket.deliver(new Joined({ peerOnline: other !== undefined, maxPayload: this.maxPayload, bulkWindow: WINDOW }));
      socket.deliver(new Credit(WINDOW));
      other?.deliver(new PeerUp());
      return;
    }
    if (socket.seat === null) return;
    if (frame instanceof Control || frame instanceof Bulk) {
      this.#other(socket.seat)?.deliver(frame);
      if (frame instanceof Control) this.onControl();
      if (frame instanceof Bulk) socket.deliver(new Credit(frame.payload.length)); // drained at once
    } else if (frame instanceof Ping) {
      socket.deliver(new Pong(frame.data));
    } else if (frame instanceof Burn) {
      this.burned = true;
      for (const s of this.seats.values()) s.deliver(ErrorFrame.fromCode(ErrorCode.BURNED));
    }
  }

  /**
   * @param {Socket} socket
   * @param {number} code
   */
  left(socket, code) {
    void code;
    if (socket.seat !== null && this.seats.get(socket.seat) === socket) {
      this.seats.delete(socket.seat);
      this.#other(socket.seat)?.deliver(new PeerDown());
    }
  }

  /** @param {"A" | "B"} seat */
  #other(seat) {
    return this.seats.get(seat === "A" ? "B" : "A");
  }
}

function room() {
  const random = (/** @type {number} */ n) => crypto.getRandomValues(new Uint8Array(n));
  const ticket = new Uint8Array(42);
  ticket[0] = 1;
  ticket.set(random(40), 2);
  return makeLinks("http://127.0.0.1:8042", { ticket, tokenA: random(16), tokenB: random(16) }, random(32));
}

/**
 * An engine with its events recorded, and a way to wait for one.
 * @param {Link} link
 * @param {FakeRelay} relay
 */
function engine(link, relay) {
  const e = new BrowserEngine(link, {
    loadWordlist: async () => WORDLIST,
    connection: { openSocket: /** @type {any} */ (relay.open), tickMs: 1e9 },
    backoffBase: 5,
    backoffCap: 20,
  });
  /** @type {{type: string, detail: any}[]} */
  const events = [];
  /** @type {{type: string, test: (d: any) => boolean, resolve: (d: any) => void}[]} */
  let waiting = [];
  const types = /** @type {const} */ ([
    "connected", "reconnecting", "peer_up", "peer_down", "keystore", "safety_words", "key_changed", "text",
    "sent", "delivered", "file_offer", "file_progress", "file_done", "file_failed", "error",
  ]);
  for (const type of types) {
    e.on(type, (detail) => {
      events.push({ type, detail });
      waiting = waiting.filter((w) => {
        if (w.type !== type || !w.test(detail)) return true;
        w.resolve(detail);
        return false;
      });
    });
  }
  return {
    engine: e,
    events,
    /**
     * The first event of `type` (already seen or still to come) that passes `test`.
     * @param {string} type
     * @param {(d: any) => boolean} [test]
     */
    next(type, test = () => true) {
      const seen = events.find((ev) => ev.type === type && test(ev.detail));
      if (seen !== undefined) return Promise.resolve(seen.detail);
      return new Promise((resolve, reject) => {
        const seen = () => events.map((ev) => ev.type + (ev.detail.message ? `(${ev.detail.message})` : "")).join(", ");
        const timer = setTimeout(() => reject(new Error(`no ${type} event in time; seen: ${seen()}`)), 10_000);
        waiting.push({ type, test, resolve: (d) => (clearTimeout(timer), resolve(d)) });
      });
    },
    /** @param {string} type */
    all(type) {
      return events.filter((ev) => ev.type === type).map((ev) => ev.detail);
    },
  };
}

/** @param {Uint8Array | ArrayBuffer} data */
const sha256 = (data) => createHash("sha256").update(new Uint8Array(data)).digest("hex");

/** @param {number} size */
function pattern(size) {
  return Uint8Array.from({ length: size }, (_, i) => (i * 7 + (i >> 16)) % 251);
}

async function pair(relay = new FakeRelay()) {
  const [linkA, linkB] = room();
  const a = engine(linkA, relay);
  const b = engine(linkB, relay);
  a.engine.start();
  b.engine.start();
  const [wa, wb] = await Promise.all([a.next("safety_words"), b.next("safety_words")]);
  return { relay, a, b, wa, wb };
}

test("a wrong room secret is named once on each side, however often the handshake fails", async () => {
  const relay = new FakeRelay();
  const [linkA, right] = room();
  const linkB = new Link({ relay: right.relay, seat: "B", ticket: right.ticket, token: right.token, secret: new Uint8Array(32) });
  // Each attempt is HS1, HS2, HS3 and B's RESET: wait for three of them.
  let controls = 0;
  const attempts = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${controls} control frames in time`)), 20_000);
    relay.onControl = () => {
      if (++controls >= 12) resolve(clearTimeout(timer));
    };
  });
  const a = engine(linkA, relay);
  const b = engine(linkB, relay);
  a.engine.start();
  b.engine.start();
  await attempts;
  for (const side of [a, b]) {
    const errors = side.all("error");
    assert.deepEqual(errors.map((e) => e.cause), [WRONG_SECRET_CAUSE]);
    assert.equal(errors[0].message, WRONG_SECRET);
    assert.equal(side.all("safety_words").length, 0);
  }
  a.engine.close();
  b.engine.close();
});

test("both seats meet with the same eight safety words, first contact, memory-only keys", async () => {
  const { a, b, wa, wb } = await pair();
  assert.equal(wa.words.length, 8);
  assert.deepEqual(wa.words, wb.words);
  assert.equal(wa.firstContact, true);
  assert.deepEqual(a.all("keystore"), [{ persistent: false }]);
  assert.equal(a.all("peer_up").length, 1);
  assert.equal(b.all("peer_up").length, 1);
  a.engine.close();
  b.engine.close();
});

test("texts go both ways, in order, each sent then delivered, hostile text untouched", async () => {
  const { a, b } = await pair();
  const s1 = a.engine.sendText("hello <b>Bob</b>");
  const s2 = a.engine.sendText("second");
  const r1 = b.engine.sendText("hi Alice \u202e");
  assert.deepEqual([s1, s2, r1], [1n, 2n, 1n]);
  await b.next("text", (d) => d.text === "second");
  await a.next("text");
  await a.next("delivered", (d) => d.seq === 2n);
  await b.next("delivered", (d) => d.seq === 1n);
  assert.deepEqual(b.all("text").map((d) => d.text), ["hello <b>Bob</b>", "second"]);
  assert.deepEqual(a.all("text").map((d) => d.text), ["hi Alice \u202e"]);
  assert.deepEqual(a.all("sent").map((d) => d.seq), [1n, 2n]);
  assert.deepEqual(a.all("delivered").map((d) => d.seq), [1n, 2n]);
  a.engine.close();
  b.engine.close();
});

test("a file each way into a memory sink arrives whole, with progress, and is confirmed", async () => {
  const { a, b } = await pair();
  const bytesA = pattern(300_000);
  const bytesB = pattern(70_000).reverse();
  const idA = a.engine.sendFile(new File([bytesA], "../../report.pdf"));
  const idB = b.engine.sendFile(new File([bytesB], "photo.jpg"));
  const offerAtB = await b.next("file_offer");
  const offerAtA = await a.next("file_offer");
  assert.equal(offerAtB.name, "report.pdf", "the peer's name is cleaned");
  assert.equal(offerAtB.size, 300_000);
  b.engine.acceptFile(offerAtB.fileId, memorySink(offerAtB.name));
  a.engine.acceptFile(offerAtA.fileId, memorySink(offerAtA.name));
  const doneAtB = await b.next("file_done", (d) => !d.outgoing);
  const doneAtA = await a.next("file_done", (d) => !d.outgoing);
  assert.equal(sha256(await doneAtB.file.arrayBuffer()), sha256(bytesA));
  assert.equal(sha256(await doneAtA.file.arrayBuffer()), sha256(bytesB));
  const confirmed = await a.next("file_done", (d) => d.outgoing);
  assert.equal(confirmed.fileId, idA);
  await b.next("file_done", (d) => d.outgoing && d.fileId === idB);
  const progress = b.all("file_progress").filter((d) => !d.outgoing);
  assert.ok(progress.length > 0);
  assert.equal(progress.at(-1).done, 300_000);
  a.engine.close();
  b.engine.close();
});

test("a relay whose frames are too small for a chunk fails the file, not the chat", async () => {
  const relay = new FakeRelay();
  relay.maxPayload = 65600; // protocol 1's max_payload, left in an old config
  const { a, b } = await pair(relay);
  a.engine.sendFile(new File([pattern(300_000)], "big.bin"));
  const offer = await b.next("file_offer");
  b.engine.acceptFile(offer.fileId, memorySink(offer.name));
  const failed = await a.next("file_failed");
  assert.equal(failed.outgoing, true);
  assert.match(failed.reason, /the relay takes frames of at most 65600 bytes/);
  assert.match(failed.reason, /limits\.max_payload/);
  await b.next("file_failed", (d) => !d.outgoing);
  a.engine.sendText("still here");
  await b.next("text", (d) => d.text === "still here");
  assert.equal(a.all("reconnecting").length, 0);
  a.engine.close();
  b.engine.close();
});

test("a declined file fails once on both sides", async () => {
  const { a, b } = await pair();
  a.engine.sendFile(new File([pattern(1000)], "x.bin"));
  const offer = await b.next("file_offer");
  b.engine.rejectFile(offer.fileId, FileCode.DECLINED, "no thanks");
  const failed = await a.next("file_failed");
  assert.equal(failed.code, FileCode.DECLINED);
  assert.equal(failed.outgoing, true);
  assert.equal(b.all("file_failed").length, 1);
  assert.equal(a.all("file_failed").length, 1);
  a.engine.close();
  b.engine.close();
});

test("a cut connection reconnects and loses nothing: texts once, the file whole", async () => {
  const { relay, a, b } = await pair();
  const big = pattern(2_000_000);
  a.engine.sendFile(new File([big], "big.bin"));
  const offer = await b.next("file_offer");
  b.engine.acceptFile(offer.fileId, memorySink(offer.name));
  await b.next("file_progress", (d) => !d.outgoing && d.done > 0);
  /** @type {Socket} */ (relay.seats.get("A")).cut();
  a.engine.sendText("after the cut");
  await a.next("reconnecting");
  const done = await b.next("file_done", (d) => !d.outgoing);
  assert.equal(sha256(await done.file.arrayBuffer()), sha256(big));
  await b.next("text", (d) => d.text === "after the cut");
  await a.next("delivered", (d) => d.seq === 1n);
  assert.equal(b.all("text").length, 1, "exactly once");
  assert.ok(a.all("connected").length >= 2);
  a.engine.close();
  b.engine.close();
});

test("a seat opened elsewhere stops this engine with words, not a bare code", async () => {
  const { relay, a, b } = await pair();
  const [linkA] = [a.engine.link];
  const intruder = engine(linkA, relay);
  intruder.engine.start();
  const error = await a.next("error", (d) => d.fatal);
  assert.equal(error.code, ErrorCode.SEAT_TAKEN);
  assert.ok(error.message.startsWith("your link (seat A) was opened somewhere else"), error.message);
  assert.match(error.message, /open your link again to take it back, compare the safety words/);
  intruder.engine.close();
  b.engine.close();
});

test("burn ends both engines with the room burned", async () => {
  const { a, b } = await pair();
  await a.engine.burn();
  const atA = await a.next("error", (d) => d.fatal);
  const atB = await b.next("error", (d) => d.fatal);
  assert.equal(atA.code, ErrorCode.BURNED);
  assert.equal(atB.code, ErrorCode.BURNED);
  assert.match(atB.message, /burned/);
});
