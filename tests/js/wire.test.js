// m42d/web/lib/wire.js against the rules of docs/protocol.md, "Relay wire
// format", and the Python twin's tests (tests/test_wire.py): pinned numbers,
// the spec's worked examples, round trips of every kind at its size edges,
// every body rule with the twin's message, encode-side validation, and
// decoding that only ever fails with WireError.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { concat, fromHex, toHex, u32 } from "../../m42d/web/lib/bytes.js";
import { LocalProtocolError, RemoteProtocolError, WireError } from "../../m42d/web/lib/errors.js";
import {
  BODY_LIMITS,
  Bulk,
  Burn,
  Control,
  CreateRoom,
  Credit,
  ERROR_SENTENCES,
  ErrorCode,
  ErrorFrame,
  FROM_RELAY,
  FrameKind,
  FrameTooLargeError,
  GoAway,
  Join,
  Joined,
  Lane,
  MAX_FRAME,
  MAX_PAYLOAD,
  MAX_TEXT,
  PeerDown,
  PeerUp,
  Ping,
  Pong,
  RoomCreated,
  WIRE_VERSION,
  decode,
  decodeFromRelay,
  encode,
  encodeStream,
  errorCodeFor,
  kindName,
  laneOf,
} from "../../m42d/web/lib/wire.js";
import { ROOT } from "./support.js";

/** @typedef {import("../../m42d/web/lib/wire.js").Frame} Frame */

const T = new Uint8Array(42).fill(0x74);
const K = new Uint8Array(16).fill(0x6b);
const enc = new TextEncoder();

/** @param {number} n @param {number} [byte] */
const filled = (n, byte = 0xa5) => new Uint8Array(n).fill(byte);

/** @param {number} kind @param {Uint8Array} [body] */
const msg = (kind, body = new Uint8Array(0)) => concat(Uint8Array.of(kind), body);

/**
 * Every field a frame shows, tokens and secrets included, for comparisons.
 * @param {Frame} frame
 */
function fields(frame) {
  /** @type {Record<string, unknown>} */
  const out = { cls: frame.constructor.name, kind: frame.kind };
  for (const key of Object.keys(frame)) out[key] = /** @type {any} */ (frame)[key];
  if (frame instanceof CreateRoom) out.creationSecret = frame.creationSecret;
  if (frame instanceof RoomCreated) Object.assign(out, { tokenA: frame.tokenA, tokenB: frame.tokenB });
  if (frame instanceof Join) out.token = frame.token;
  return out;
}

/** A deterministic PRNG (xorshift32), so that a failure can be replayed. */
function prng(seed = 0x2545f491) {
  let x = seed;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  /** @param {number} lo @param {number} hi inclusive */
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  /** @param {number} n */
  const bytes = (n) => Uint8Array.from({ length: n }, () => int(0, 255));
  return { int, bytes };
}

/** Frames of every kind, at both ends of every size range. */
function edgeFrames() {
  const euro = "\u20ac".repeat(341) + "x"; // 1024 UTF-8 bytes
  return /** @type {Frame[]} */ ([
    new CreateRoom(),
    new CreateRoom({ version: 0, creationSecret: filled(255) }),
    new CreateRoom({ version: 255, creationSecret: Uint8Array.of(1) }),
    new RoomCreated({ ticket: T, tokenA: K, tokenB: filled(16, 1) }),
    new Join({ seat: "A", ticket: T, token: K }),
    new Join({ seat: "B", ticket: T, token: K, version: 0 }),
    new Joined({ peerOnline: true, maxPayload: MAX_PAYLOAD, bulkWindow: 1 << 20 }),
    new Joined({ peerOnline: false, maxPayload: 0, bulkWindow: 0xffffffff }),
    new PeerUp(),
    new PeerDown(),
    new Burn(),
    new Control(Uint8Array.of(0)),
    new Control(filled(MAX_PAYLOAD)),
    new Bulk(Uint8Array.of(7)),
    new Bulk(filled(MAX_PAYLOAD)),
    new Credit(1),
    new Credit(0xffffffff),
    new Ping(),
    new Ping(filled(32)),
    new Pong(),
    new Pong(filled(32, 3)),
    new ErrorFrame(0, ""),
    new ErrorFrame(65535, euro),
    new GoAway(0),
    new GoAway(0xffffffff, euro),
    new GoAway(1500, "\ufeffbye \u00e9 \u{1f600}"), // a BOM stays: Python keeps it too
  ]);
}

test("pinned constants, kinds and error codes", () => {
  assert.equal(WIRE_VERSION, 2);
  assert.equal(MAX_PAYLOAD, 262208);
  assert.equal(MAX_FRAME, 262209);
  assert.deepEqual({ ...FrameKind }, {
    CREATE_ROOM: 0x01, ROOM_CREATED: 0x02, JOIN: 0x03, JOINED: 0x04, PEER_UP: 0x05, PEER_DOWN: 0x06,
    BURN: 0x07, CONTROL: 0x10, BULK: 0x11, CREDIT: 0x12, PING: 0x20, PONG: 0x21, ERROR: 0x30, GOAWAY: 0x31,
  });
  assert.deepEqual({ ...ErrorCode }, {
    BAD_FRAME: 400, BAD_TOKEN: 401, CREDIT_EXCEEDED: 402, FORBIDDEN: 403, UNKNOWN_ROOM: 404,
    JOIN_TIMEOUT: 408, SEAT_TAKEN: 409, EXPIRED: 410, BURNED: 411, TOO_LARGE: 413,
    UNSUPPORTED_VERSION: 415, RATE_LIMITED: 429, INTERNAL: 500, UNAVAILABLE: 503,
  });
  assert.deepEqual([...BODY_LIMITS.keys()].sort(), Object.values(FrameKind).sort());
  assert.equal(kindName(0x10), "CONTROL");
  assert.equal(kindName(0x08), null);
});

test("every error code has its sentence, as the spec's table gives it", () => {
  const spec = readFileSync(path.join(ROOT, "docs", "protocol.md"), "utf8");
  assert.deepEqual([...ERROR_SENTENCES.keys()].sort(), Object.values(ErrorCode).sort());
  for (const [code, sentence] of ERROR_SENTENCES) {
    assert.ok(sentence.length > 0 && enc.encode(sentence).length <= MAX_TEXT);
    assert.ok(spec.includes(`| ${code} | `) && spec.includes(`| ${sentence} |`), `${code} in the spec`);
  }
  assert.equal(ERROR_SENTENCES.get(ErrorCode.SEAT_TAKEN), "this seat was taken over by a newer connection");
});

test("ErrorFrame.fromCode and errorCode, a code from the future included", () => {
  const burned = ErrorFrame.fromCode(ErrorCode.BURNED);
  assert.deepEqual([burned.code, burned.message, burned.errorCode], [411, "room was burned", "BURNED"]);
  assert.equal(ErrorFrame.fromCode(ErrorCode.INTERNAL, "boom").message, "boom");
  const future = decode(encode(new ErrorFrame(499, "from the future")));
  assert.ok(future instanceof ErrorFrame);
  assert.equal(future.code, 499);
  assert.equal(future.errorCode, null);
});

// The worked examples of docs/protocol.md (tests/test_wire.py has the same).
const JOIN_EXAMPLE =
  "0000003d 03 02 41 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728 29" +
  " a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
const CONTROL_EXAMPLE = "00000006 10 68656c6c6f";
/** @param {string} spaced */
const hex = (spaced) => fromHex(spaced.replaceAll(" ", ""));

test("the spec's worked examples, in both forms", () => {
  const join = new Join({
    seat: "A",
    ticket: Uint8Array.from({ length: 42 }, (_, i) => i),
    token: Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i),
  });
  assert.equal(toHex(encodeStream(join)), toHex(hex(JOIN_EXAMPLE)));
  const control = new Control(enc.encode("hello"));
  assert.equal(toHex(encodeStream(control)), toHex(hex(CONTROL_EXAMPLE)));
  // Message form (WebSocket) is the bytes after the length prefix.
  assert.equal(toHex(encode(control)), toHex(hex(CONTROL_EXAMPLE).subarray(4)));
  assert.deepEqual(fields(decode(hex(JOIN_EXAMPLE).subarray(4))), fields(join));

  const spec = readFileSync(path.join(ROOT, "docs", "protocol.md"), "utf8");
  const blocks = new Set(
    [...spec.matchAll(/^```[a-z]*\n([\s\S]*?)^```/gm)].map((m) => m[1].replace(/\s/g, "").toLowerCase()),
  );
  for (const example of [JOIN_EXAMPLE, CONTROL_EXAMPLE]) assert.ok(blocks.has(toHex(hex(example))));
});

test("round trips of every kind at its size edges, in both forms", () => {
  for (const frame of edgeFrames()) {
    const message = encode(frame);
    assert.equal(message[0], frame.kind);
    assert.ok(message.length <= MAX_FRAME);
    assert.deepEqual(fields(decode(message)), fields(frame), String(frame));
    assert.deepEqual(fields(decode(message.buffer)), fields(frame));
    assert.deepEqual(encodeStream(frame), concat(u32(message.length), message));
  }
});

test("random frames round trip", () => {
  const r = prng();
  for (let i = 0; i < 300; i++) {
    const text = String.fromCodePoint(...Array.from({ length: r.int(0, 200) }, () => r.int(0x20, 0x2fff)));
    const frames = [
      new CreateRoom({ version: r.int(0, 255), creationSecret: r.bytes(r.int(0, 255)) }),
      new RoomCreated({ ticket: r.bytes(42), tokenA: r.bytes(16), tokenB: r.bytes(16) }),
      new Join({ seat: r.int(0, 1) ? "A" : "B", ticket: r.bytes(42), token: r.bytes(16), version: r.int(0, 255) }),
      new Joined({ peerOnline: r.int(0, 1) === 1, maxPayload: r.int(0, 0xffffffff), bulkWindow: r.int(0, 0xffffffff) }),
      new Control(r.bytes(r.int(1, 300))),
      new Bulk(r.bytes(r.int(1, 300))),
      new Credit(r.int(1, 0xffffffff)),
      new Ping(r.bytes(r.int(0, 32))),
      new Pong(r.bytes(r.int(0, 32))),
      new ErrorFrame(r.int(0, 0xffff), text),
      new GoAway(r.int(0, 0xffffffff), text),
    ];
    for (const frame of frames) assert.deepEqual(fields(decode(encode(frame))), fields(frame));
  }
});

test("lanes: BULK alone goes in the bulk lane", () => {
  for (const frame of edgeFrames()) {
    assert.equal(laneOf(frame), frame instanceof Bulk ? Lane.BULK : Lane.CONTROL);
  }
});

test("decoded frames own their bytes, and any view of a message decodes", () => {
  const source = encode(new Control(enc.encode("abc")));
  const frame = decode(source);
  source.set(enc.encode("xyz"), 1);
  assert.ok(frame instanceof Control);
  assert.equal(new TextDecoder().decode(frame.payload), "abc");
  assert.equal(frame.payload.buffer.byteLength, 3);

  const ping = encode(new Ping(enc.encode("abcd"))); // 5 bytes
  const padded = concat(Uint8Array.of(9, 9, 9), ping, Uint8Array.of(9));
  for (const view of [padded.subarray(3, 8), new DataView(padded.buffer, 3, 5)]) {
    const decoded = decode(view);
    assert.ok(decoded instanceof Ping);
    assert.equal(new TextDecoder().decode(decoded.data), "abcd");
  }
  const even = concat(encode(new Ping(enc.encode("abc")))); // 4 bytes: a Uint16Array of 2
  assert.ok(decode(new Uint16Array(even.buffer)) instanceof Ping);
});

test("other versions still decode (a relay answers 415, not 400)", () => {
  const create = decode(encode(new CreateRoom({ version: 7 })));
  assert.ok(create instanceof CreateRoom && create.version === 7);
  const join = decode(encode(new Join({ seat: "B", ticket: T, token: K, version: 0 })));
  assert.ok(join instanceof Join && join.version === 0 && join.seat === "B");
});

/** [message, the twin's error text, whether it is FrameTooLargeError] */
const BAD_MESSAGES = /** @type {[Uint8Array, string, boolean][]} */ ([
  [new Uint8Array(0), "empty message", false],
  [msg(0x00), "unknown frame kind 0x00", false],
  [msg(0x08), "unknown frame kind 0x08", false],
  [msg(0xff, enc.encode("abc")), "unknown frame kind 0xff", false],
  [msg(FrameKind.CREATE_ROOM), "CREATE_ROOM body must be at least 1 bytes, got 0", false],
  [msg(FrameKind.CREATE_ROOM, concat(Uint8Array.of(1), filled(256))), "CREATE_ROOM body must be at most 256 bytes, got 257", true],
  [msg(FrameKind.ROOM_CREATED, concat(T, K, K.subarray(1))), "ROOM_CREATED body must be 74 bytes, got 73", false],
  [msg(FrameKind.ROOM_CREATED, concat(T, K, K, K)), "ROOM_CREATED body must be 74 bytes, got 90", false],
  [msg(FrameKind.JOIN, concat(enc.encode("\x01A"), T, K, enc.encode("x"))), "JOIN body must be 60 bytes, got 61", false],
  [msg(FrameKind.JOIN, concat(enc.encode("\x01a"), T, K)), "JOIN seat byte must be ASCII 'A' or 'B'", false],
  [msg(FrameKind.JOIN, concat(enc.encode("\x01C"), T, K)), "JOIN seat byte must be ASCII 'A' or 'B'", false],
  [msg(FrameKind.JOINED, concat(Uint8Array.of(1), new Uint8Array(7))), "JOINED body must be 9 bytes, got 8", false],
  [msg(FrameKind.JOINED, concat(Uint8Array.of(2), new Uint8Array(8))), "JOINED peer_online must be 0 or 1", false],
  [msg(FrameKind.PEER_UP, Uint8Array.of(0)), "PEER_UP body must be 0 bytes, got 1", false],
  [msg(FrameKind.PEER_DOWN, Uint8Array.of(0)), "PEER_DOWN body must be 0 bytes, got 1", false],
  [msg(FrameKind.BURN, Uint8Array.of(0)), "BURN body must be 0 bytes, got 1", false],
  [msg(FrameKind.CONTROL), "CONTROL body must be at least 1 bytes, got 0", false],
  [msg(FrameKind.BULK), "BULK body must be at least 1 bytes, got 0", false],
  [msg(FrameKind.CONTROL, filled(MAX_PAYLOAD + 1)), "CONTROL body must be at most 262208 bytes, got 262209", true],
  [msg(FrameKind.BULK, filled(MAX_PAYLOAD + 1)), "BULK body must be at most 262208 bytes, got 262209", true],
  [msg(FrameKind.CREDIT, new Uint8Array(4)), "CREDIT amount must be greater than 0", false],
  [msg(FrameKind.CREDIT, new Uint8Array(3)), "CREDIT body must be 4 bytes, got 3", false],
  [msg(FrameKind.PING, filled(33)), "PING body must be at most 32 bytes, got 33", true],
  [msg(FrameKind.PONG, filled(33)), "PONG body must be at most 32 bytes, got 33", true],
  [msg(FrameKind.ERROR, Uint8Array.of(1)), "ERROR body must be at least 2 bytes, got 1", false],
  [msg(FrameKind.ERROR, concat(Uint8Array.of(1, 0x90), filled(1025, 0x6d))), "ERROR body must be at most 1026 bytes, got 1027", true],
  [msg(FrameKind.ERROR, Uint8Array.of(1, 0x90, 0xff)), "ERROR message is not valid UTF-8", false],
  [msg(FrameKind.ERROR, Uint8Array.of(1, 0x90, 0xed, 0xa0, 0x80)), "ERROR message is not valid UTF-8", false], // a surrogate
  [msg(FrameKind.ERROR, Uint8Array.of(1, 0x90, 0xc0, 0xaf)), "ERROR message is not valid UTF-8", false], // overlong '/'
  [msg(FrameKind.GOAWAY, new Uint8Array(3)), "GOAWAY body must be at least 4 bytes, got 3", false],
  [msg(FrameKind.GOAWAY, concat(new Uint8Array(4), Uint8Array.of(0xc3))), "GOAWAY reason is not valid UTF-8", false], // truncated
]);

test("every body rule is refused with the twin's message", () => {
  for (const [message, error, tooLarge] of BAD_MESSAGES) {
    assert.throws(
      () => decode(message),
      (/** @type {unknown} */ exc) =>
        exc instanceof WireError && exc instanceof RemoteProtocolError && exc.message.startsWith(error) &&
        (exc instanceof FrameTooLargeError) === tooLarge,
      error,
    );
  }
});

test("errorCodeFor: 413 for a body over its cap, 400 for the rest", () => {
  for (const [message, , tooLarge] of BAD_MESSAGES) {
    try {
      decode(message);
      assert.fail("decoded");
    } catch (exc) {
      assert.ok(exc instanceof WireError);
      assert.equal(errorCodeFor(exc), tooLarge ? ErrorCode.TOO_LARGE : ErrorCode.BAD_FRAME);
    }
  }
});

test("the payload caps are exact", () => {
  for (const kind of [FrameKind.CONTROL, FrameKind.BULK]) {
    const frame = decode(msg(kind, filled(MAX_PAYLOAD)));
    assert.ok((frame instanceof Control || frame instanceof Bulk) && frame.payload.length === MAX_PAYLOAD);
  }
  assert.throws(() => encode(new Bulk(filled(MAX_PAYLOAD + 1))), /BULK: payload must be 1\.\.262208 bytes, got 262209/);
});

test("text caps count UTF-8 bytes, not characters", () => {
  const exact = "\u20ac".repeat(341) + "x"; // 3 * 341 + 1 = 1024 bytes
  const goaway = decode(encode(new GoAway(0, exact)));
  assert.ok(goaway instanceof GoAway && goaway.reason === exact);
  assert.throws(() => encode(new ErrorFrame(500, exact + "x")), /at most 1024 UTF-8 bytes, got 1025/);
  assert.throws(() => encode(new GoAway(0, "\u{1f600}".repeat(257))), /at most 1024 UTF-8 bytes, got 1028/);
});

test("error messages do not echo the bytes they refuse", () => {
  const secretish = concat(Uint8Array.of(0xff), enc.encode("SECRETSECRET"));
  assert.throws(() => decode(msg(FrameKind.ERROR, concat(Uint8Array.of(1, 0x90), secretish))), (exc) => {
    assert.ok(exc instanceof Error && !exc.message.includes("SECRET"));
    return true;
  });
  const join = msg(FrameKind.JOIN, concat(enc.encode("\x01Z"), filled(42, 0x53), filled(16, 0x4b)));
  assert.throws(() => decode(join), (exc) => {
    assert.ok(exc instanceof Error && !exc.message.replace("JOIN", "").includes("Z"));
    assert.ok(!exc.message.includes("SSSS") && !exc.message.includes("5353"));
    return true;
  });
});

/** [frame, the twin's error text] */
const BAD_FRAMES = /** @type {[unknown, string][]} */ ([
  [new Control(new Uint8Array(0)), "cannot encode CONTROL: payload must be 1..262208 bytes, got 0"],
  [new Bulk(filled(MAX_PAYLOAD + 1)), "cannot encode BULK: payload must be 1..262208 bytes"],
  [new Control(/** @type {any} */ ("text")), "payload must be bytes"],
  [new CreateRoom({ version: 256 }), "version must be an int in 0..255"],
  [new CreateRoom({ creationSecret: filled(256) }), "creation_secret must be 0..255 bytes, got 256"],
  [new RoomCreated({ ticket: T.subarray(1), tokenA: K, tokenB: K }), "ticket must be 42 bytes, got 41"],
  [new RoomCreated({ ticket: T, tokenA: K, tokenB: concat(K, K.subarray(0, 1)) }), "token_b must be 16 bytes"],
  [new Join({ seat: "A", ticket: T, token: K.subarray(1) }), "token must be 16 bytes, got 15"],
  [new Join({ seat: /** @type {any} */ ("C"), ticket: T, token: K }), "seat must be a Seat"],
  [new Join({ seat: "A", ticket: T, token: K, version: -1 }), "version"],
  [new Joined({ peerOnline: true, maxPayload: -1, bulkWindow: 0 }), "max_payload"],
  [new Joined({ peerOnline: true, maxPayload: 0, bulkWindow: 2 ** 32 }), "bulk_window"],
  [new Credit(0), "cannot encode CREDIT: amount must be an int in 1.."],
  [new Credit(2 ** 32), "amount"],
  [new Credit(1.5), "amount"],
  [new Credit(/** @type {any} */ (1n)), "amount"],
  [new Ping(filled(33)), "cannot encode PING: data must be 0..32 bytes"],
  [new Pong(filled(33)), "cannot encode PONG: data"],
  [new ErrorFrame(65536, ""), "code must be an int in 0..65535"],
  [new ErrorFrame(400, "\ud800"), "message is not valid UTF-8"],
  [new ErrorFrame(400, "ok \udc00 then"), "message is not valid UTF-8"],
  [new ErrorFrame(400, /** @type {any} */ (enc.encode("x"))), "message must be str"],
  [new GoAway(-1), "grace_ms"],
  [new GoAway(0, "r".repeat(1025)), "reason must be at most 1024"],
]);

test("encode validates every field and blames this side", () => {
  for (const [frame, error] of BAD_FRAMES) {
    for (const encoder of [encode, encodeStream]) {
      assert.throws(
        () => encoder(/** @type {Frame} */ (frame)),
        (/** @type {unknown} */ exc) => exc instanceof LocalProtocolError && exc.message.includes(error),
        error,
      );
    }
  }
  assert.throws(() => encode(/** @type {any} */ ({ kind: 0x10, payload: Uint8Array.of(1) })), /not a relay frame/);
  // A surrogate pair is fine; only a lone one has no UTF-8 form.
  assert.ok(decode(encode(new ErrorFrame(400, "\ud83d\ude00"))) instanceof ErrorFrame);
});

test("toString and JSON hide tokens and secrets and show payloads by length", () => {
  const token = enc.encode("TOKENTOKENTOKEN!");
  const payload = enc.encode("PAYLOAD-PAYLOAD");
  const cases = /** @type {[Frame, Uint8Array][]} */ ([
    [new Join({ seat: "A", ticket: T, token }), token],
    [new RoomCreated({ ticket: T, tokenA: token, tokenB: K }), token],
    [new RoomCreated({ ticket: T, tokenA: K, tokenB: token }), token],
    [new CreateRoom({ creationSecret: enc.encode("CREATION-SECRET") }), enc.encode("CREATION-SECRET")],
    [new Control(payload), payload],
    [new Bulk(payload), payload],
  ]);
  for (const [frame, secret] of cases) {
    const texts = [String(frame), JSON.stringify(frame), JSON.stringify(Object.entries(frame))];
    for (const text of texts) {
      assert.ok(!text.includes(new TextDecoder().decode(secret)) && !text.includes(toHex(secret)), text);
      assert.ok(!text.includes("TOKEN") && !text.includes("84,79,75"), text);
    }
  }
  assert.equal(String(new Bulk(payload)), "Bulk(payload=<15 bytes>)");
  assert.equal(String(new Control(payload)), "Control(payload=<15 bytes>)");
});

test("decodeFromRelay: binary messages of kinds a relay sends, nothing else", () => {
  const joined = decodeFromRelay(encode(new Joined({ peerOnline: true, maxPayload: MAX_PAYLOAD, bulkWindow: 1 << 20 })).buffer);
  assert.ok(joined instanceof Joined && joined.peerOnline);
  assert.throws(() => decodeFromRelay("hello"), (exc) => exc instanceof WireError && /text message/.test(exc.message));
  for (const frame of [new CreateRoom(), new Join({ seat: "A", ticket: T, token: K }), new Burn()]) {
    assert.throws(
      () => decodeFromRelay(encode(frame)),
      (exc) => exc instanceof WireError && exc.message.includes("only clients send"),
    );
  }
  assert.throws(() => decodeFromRelay({ size: 3 }), LocalProtocolError);
  assert.throws(() => decodeFromRelay(new ArrayBuffer(0)), WireError);
  for (const kind of FROM_RELAY) assert.notEqual(kindName(kind), null);
});

test("mutated and random messages fail only with WireError", () => {
  const r = prng(7);
  const seeds = edgeFrames().filter((f) => encode(f).length < 2000).map(encode);
  for (let i = 0; i < 3000; i++) {
    const base = seeds[i % seeds.length];
    let message;
    switch (i % 4) {
      case 0: // flip a byte
        message = base.slice();
        message[r.int(0, message.length - 1)] ^= 1 << r.int(0, 7);
        break;
      case 1: // cut short
        message = base.slice(0, r.int(0, base.length - 1));
        break;
      case 2: // extend
        message = concat(base, r.bytes(r.int(1, 40)));
        break;
      default: // garbage
        message = r.bytes(r.int(0, 80));
    }
    try {
      const frame = decode(message);
      // What decodes encodes back to the very same bytes: one spelling per frame.
      assert.equal(toHex(encode(frame)), toHex(message));
    } catch (exc) {
      if (!(exc instanceof WireError)) throw exc;
    }
  }
});
