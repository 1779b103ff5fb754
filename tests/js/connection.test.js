// m42d/web/engine/connection.js against a scripted WebSocket: the twin's
// rules (tests/test_client_engine.py covers them for m42d/client/connection.py)
// in a browser's event-driven terms, with a fake clock for the liveness rules.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BUFFER_HIGH,
  ConnectionLost,
  RelayConnection,
  RelayGoingAway,
  RelayRefused,
  retryable,
  roomUrl,
} from "../../m42d/web/engine/connection.js";
import { WireError } from "../../m42d/web/lib/errors.js";
import { Link } from "../../m42d/web/lib/link.js";
import {
  Bulk,
  Control,
  Credit,
  ErrorCode,
  ErrorFrame,
  GoAway,
  Join,
  Joined,
  Ping,
  Pong,
  PeerDown,
  PeerUp,
  decode,
  encode,
} from "../../m42d/web/lib/wire.js";

const TICKET = Uint8Array.from({ length: 42 }, (_, i) => (i === 0 ? 1 : i));
const ROOM_ID = TICKET.slice(2, 18);

/** @param {string} [relay] */
function link(relay = "http://127.0.0.1:8042") {
  return new Link({ relay, seat: "B", ticket: TICKET, token: new Uint8Array(16).fill(7), secret: new Uint8Array(32).fill(9) });
}

/** A WebSocket the test drives: what the connection sends is decoded into `sent`. */
class FakeSocket {
  binaryType = "blob";
  bufferedAmount = 0;
  readyState = 0;
  /** @type {((event: unknown) => void) | null} */ onopen = null;
  /** @type {((event: {data: unknown}) => void) | null} */ onmessage = null;
  /** @type {((event: {code: number, reason: string}) => void) | null} */ onclose = null;
  /** @type {((event: unknown) => void) | null} */ onerror = null;
  /** @type {import("../../m42d/web/lib/wire.js").Frame[]} */ sent = [];
  /** @type {number | null} */ closedWith = null;

  /** @param {string} url */
  constructor(url) {
    this.url = url;
  }

  /** @param {Uint8Array} data */
  send(data) {
    this.sent.push(decode(data));
  }

  /** @param {number} [code] */
  close(code) {
    this.closedWith = code ?? 1005;
  }

  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** @param {import("../../m42d/web/lib/wire.js").Frame} frame */
  deliver(frame) {
    const bytes = encode(frame);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
  }
}

/** Microtasks and the promise chains of the reader run to the end. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A connection over a FakeSocket with recording hooks and a fake clock.
 * @param {{payload?: (frame: Control | Bulk) => Promise<void>, chunks?: Uint8Array[], records?: Uint8Array[]}} [script]
 */
function harness(script = {}) {
  let clock = 1_000;
  /** @type {FakeSocket[]} */ const sockets = [];
  /** @type {import("../../m42d/web/engine/connection.js").ConnectionEnd[]} */ const ends = [];
  /** @type {(Control | Bulk)[]} */ const payloads = [];
  /** @type {boolean[]} */ const peer = [];
  /** @type {boolean[]} */ const joined = [];
  const records = script.records ?? [];
  const chunks = script.chunks ?? [];
  const conn = new RelayConnection(
    link(),
    {
      joined: (online) => joined.push(online),
      peerChanged: (online) => peer.push(online),
      payload: script.payload ?? (async (frame) => void payloads.push(frame)),
      controlPayloads: () => records.splice(0),
      takeChunk: (credit) => (chunks.length > 0 && chunks[0].length <= credit ? /** @type {Uint8Array} */ (chunks.shift()) : null),
      ended: (end) => ends.push(end),
    },
    {
      openSocket: (url) => {
        const socket = new FakeSocket(url);
        sockets.push(socket);
        return socket;
      },
      now: () => clock,
      joinTimeout: 60_000,
      pingAfter: 20_000,
      deadAfter: 45_000,
      tickMs: 1e9,
    },
  );
  return {
    conn,
    sockets,
    ends,
    payloads,
    peer,
    joined,
    records,
    chunks,
    /** @param {number} ms */
    advance(ms) {
      clock += ms;
      conn.tick(clock);
    },
    get socket() {
      return /** @type {FakeSocket} */ (sockets.at(-1));
    },
    async join(peerOnline = true) {
      conn.open(roomUrl(conn.link, ROOM_ID));
      this.socket.open();
      this.socket.deliver(new Joined({ peerOnline, maxPayload: 65600, bulkWindow: 1 << 20 }));
      await settle();
    },
  };
}

test("the room URL is the link's relay over ws(s), with the room path after its prefix", () => {
  assert.equal(roomUrl(link("http://relay.example/m42/"), ROOM_ID), `ws://relay.example/m42/m42/v1/room/${Buffer.from(ROOM_ID).toString("hex")}`);
  assert.equal(roomUrl(link("https://[::1]:8443"), ROOM_ID), `wss://[::1]:8443/m42/v1/room/${Buffer.from(ROOM_ID).toString("hex")}`);
  assert.match(roomUrl(link("wss://h"), ROOM_ID), /^wss:\/\/h\/m42\/v1\/room\/[0-9a-f]{32}$/);
  assert.throws(() => roomUrl(link("tls://h:8043"), ROOM_ID), /cannot reach a tls:\/\/ relay/);
});

test("JOIN goes out on open, and nothing else until JOINED", async () => {
  const h = harness({ records: [Uint8Array.of(1)] });
  h.conn.open(roomUrl(h.conn.link, ROOM_ID));
  assert.equal(h.socket.binaryType, "arraybuffer");
  h.conn.wake();
  h.socket.open();
  await settle();
  assert.equal(h.socket.sent.length, 1);
  const join = /** @type {Join} */ (h.socket.sent[0]);
  assert.ok(join instanceof Join);
  assert.equal(join.seat, "B");
  assert.deepEqual(join.token, new Uint8Array(16).fill(7));
  h.socket.deliver(new Joined({ peerOnline: false, maxPayload: 65600, bulkWindow: 1 << 20 }));
  await settle();
  assert.deepEqual(h.joined, [false]);
  assert.ok(h.socket.sent[1] instanceof Control, "the waiting record follows JOINED");
  h.conn.close();
});

test("BULK waits for credit, takes no more than it, and control frames go first", async () => {
  const chunk = new Uint8Array(40_000).fill(3);
  const h = harness({ chunks: [chunk, chunk] });
  await h.join();
  assert.equal(h.socket.sent.filter((f) => f instanceof Bulk).length, 0, "no credit yet");
  h.socket.deliver(new Credit(50_000));
  h.records.push(Uint8Array.of(42));
  await settle();
  const after = h.socket.sent.slice(1);
  assert.ok(after[0] instanceof Control, "the record before the chunk");
  assert.equal(after.filter((f) => f instanceof Bulk).length, 1, "one chunk fits in 50,000");
  assert.equal(h.conn.credit, 10_000);
  h.socket.deliver(new Credit(30_000));
  await settle();
  assert.equal(h.socket.sent.filter((f) => f instanceof Bulk).length, 2);
  assert.equal(h.conn.credit, 0);
  h.conn.close();
});

test("no chunk joins a full socket buffer, while records still go out", async () => {
  const h = harness({ chunks: [new Uint8Array(1000)] });
  await h.join();
  h.socket.bufferedAmount = BUFFER_HIGH;
  h.socket.deliver(new Credit(10_000));
  h.records.push(Uint8Array.of(5));
  await settle();
  assert.equal(h.socket.sent.filter((f) => f instanceof Bulk).length, 0);
  assert.equal(h.socket.sent.filter((f) => f instanceof Control).length, 1);
  h.socket.bufferedAmount = 0;
  h.conn.wake();
  await settle();
  assert.equal(h.socket.sent.filter((f) => f instanceof Bulk).length, 1);
  h.conn.close();
});

test("payloads reach the session in arrival order even when one is slow to handle", async () => {
  /** @type {number[]} */ const seen = [];
  /** @type {() => void} */ let release = () => {};
  const gate = new Promise((resolve) => (release = () => resolve(undefined)));
  const h = harness({
    payload: async (frame) => {
      if (frame.payload[0] === 1) await gate;
      seen.push(frame.payload[0]);
    },
  });
  await h.join();
  h.socket.deliver(new Control(Uint8Array.of(1)));
  h.socket.deliver(new Bulk(Uint8Array.of(2)));
  h.socket.deliver(new Control(Uint8Array.of(3)));
  await settle();
  assert.deepEqual(seen, []);
  release();
  await settle();
  assert.deepEqual(seen, [1, 2, 3]);
  h.conn.close();
});

test("the relay's PINGs get one PONG with the latest data; PEER_UP and PEER_DOWN are reported", async () => {
  const h = harness();
  await h.join();
  h.socket.deliver(new Ping(Uint8Array.of(1)));
  h.socket.deliver(new Ping(Uint8Array.of(2)));
  h.socket.deliver(new PeerDown());
  h.socket.deliver(new PeerUp());
  await settle();
  const pongs = h.socket.sent.filter((f) => f instanceof Pong);
  assert.equal(pongs.length, 1);
  assert.deepEqual(/** @type {Pong} */ (pongs[0]).data, Uint8Array.of(2));
  assert.deepEqual(h.peer, [false, true]);
  h.conn.close();
});

test("an ERROR ends the connection; whether to retry follows the code", async () => {
  /** @type {[number, boolean][]} */
  const cases = [[ErrorCode.SEAT_TAKEN, false], [ErrorCode.UNAVAILABLE, true], [ErrorCode.EXPIRED, false]];
  for (const [code, retry] of cases) {
    const h = harness();
    await h.join();
    h.socket.deliver(ErrorFrame.fromCode(code));
    assert.equal(h.ends.length, 1);
    const end = h.ends[0];
    assert.ok(end.error instanceof RelayRefused);
    assert.equal(/** @type {RelayRefused} */ (end.error).code, code);
    assert.equal(end.retry, retry);
    assert.equal(end.wasJoined, true);
    assert.equal(h.socket.closedWith, 1000);
    assert.equal(retryable(code), retry);
  }
});

test("GOAWAY, a malformed frame, a text message and a payload before JOINED each end it once", async () => {
  const h1 = harness();
  await h1.join();
  h1.socket.deliver(new GoAway(1000, "restart"));
  assert.ok(h1.ends[0].error instanceof RelayGoingAway);
  assert.equal(h1.ends[0].retry, true);

  const h2 = harness();
  await h2.join();
  h2.socket.onmessage?.({ data: Uint8Array.of(0xee).buffer });
  h2.socket.onmessage?.({ data: "text" });
  assert.equal(h2.ends.length, 1, "ended once, later input ignored");
  assert.ok(h2.ends[0].error instanceof WireError);

  const h3 = harness();
  h3.conn.open(roomUrl(h3.conn.link, ROOM_ID));
  h3.socket.open();
  h3.socket.deliver(new Control(Uint8Array.of(1)));
  assert.ok(h3.ends[0].error instanceof WireError);
  assert.match(h3.ends[0].error.message, /CONTROL before JOINED/);
  assert.equal(h3.ends[0].wasJoined, false);
});

test("a silent relay is pinged, then counted as gone", async () => {
  const h = harness();
  await h.join();
  h.advance(20_001);
  await settle();
  assert.equal(h.socket.sent.filter((f) => f instanceof Ping).length, 1);
  h.advance(5_000);
  await settle();
  assert.equal(h.socket.sent.filter((f) => f instanceof Ping).length, 1, "one PING in flight is enough");
  h.advance(20_000);
  assert.equal(h.ends.length, 1);
  assert.ok(h.ends[0].error instanceof ConnectionLost);
  assert.match(h.ends[0].error.message, /went silent/);
  assert.equal(h.ends[0].retry, true);
});

test("a relay that talks but reads nothing of ours is counted as gone", async () => {
  const h = harness();
  await h.join();
  h.records.push(Uint8Array.of(1));
  h.conn.wake();
  await settle();
  h.socket.bufferedAmount = 5000;
  for (let t = 0; t < 50; t++) {
    h.socket.deliver(new Ping(Uint8Array.of(t)));
    h.advance(1_000);
    if (h.ends.length > 0) break;
  }
  assert.equal(h.ends.length, 1);
  assert.match(h.ends[0].error.message, /stopped reading/);
});

test("readAll resolves when the relay answers the PING sent after everything else", async () => {
  const h = harness();
  await h.join();
  let done = false;
  const barrier = h.conn.readAll().then(() => (done = true));
  await settle();
  const ping = /** @type {Ping} */ (h.socket.sent.filter((f) => f instanceof Ping).at(-1));
  h.socket.deliver(new Pong(Uint8Array.of(0)));
  await settle();
  assert.equal(done, false, "another PONG does not count");
  h.socket.deliver(new Pong(ping.data));
  await barrier;
  assert.equal(done, true);
  h.conn.close();
});

test("the browser closing the socket ends it as retryable; open() again makes a new socket", async () => {
  const h = harness();
  await h.join();
  h.socket.onclose?.({ code: 1006, reason: "" });
  assert.equal(h.ends.length, 1);
  assert.match(h.ends[0].error.message, /broke/);
  assert.equal(h.conn.connected, false);
  await h.join();
  assert.equal(h.sockets.length, 2);
  assert.equal(h.conn.connected, true);
  h.conn.close();
  assert.equal(h.ends.length, 2);
  assert.equal(h.ends[1].retry, false);
});
