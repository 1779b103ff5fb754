// The JS session machine (m42d/web/lib/session/): two seats back to back,
// honest and hostile middles, and a scripted peer that breaks the rules.
// Ported from tests/test_session.py and tests/test_session_chaos.py (the
// cases that matter most for a browser), plus what async adds: calls fired
// without awaiting take effect in call order.

import assert from "node:assert/strict";
import { test } from "node:test";

import { concat, readU32, readU64, u32, u64 } from "../../m42d/web/lib/bytes.js";
import { LocalProtocolError } from "../../m42d/web/lib/errors.js";
import {
  Envelope,
  FileCode,
  FileCompleted,
  FileDelivered,
  FileFailed,
  FileOffered,
  FileProgress,
  HandshakeComplete,
  MAX_RECORD,
  MemoryKeyStore,
  PAD_BUCKET,
  PeerKeyChanged,
  RecordType,
  Session,
  SessionError,
  SessionFailed,
  TextDelivered,
  TextReceived,
  TextRefused,
  decodeRecord,
  encodeRecord,
} from "../../m42d/web/lib/session/index.js";
import { Offer, decodeOffer, decodeReason, textBodies } from "../../m42d/web/lib/session/records.js";
import { CHUNK_SIZE } from "../../m42d/web/lib/stream.js";
import { Pair, Side, WORDLIST } from "./session-harness.js";
import { ScriptedPeer, initiatorHandshake } from "./session-peer.js";

/** @typedef {import("./session-harness.js").Packet} Packet */
/** @typedef {import("./session-harness.js").Seat} Seat */

/** @param {{events: unknown[]}} side */
const texts = (side) => side.events.filter((e) => e instanceof TextReceived).map((e) => /** @type {TextReceived} */ (e).text);
/** @param {number} n */
const random = (n) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
};
const enc = new TextEncoder();

// -- records -------------------------------------------------------------------

test("records are padded to 256-byte buckets, and bad padding or length is refused", () => {
  const rec = encodeRecord(RecordType.ACK, new Uint8Array(8));
  assert.equal(rec.length, PAD_BUCKET);
  assert.deepEqual(decodeRecord(rec), { type: RecordType.ACK, body: new Uint8Array(8) });
  const bad = rec.slice();
  bad[bad.length - 1] = 1;
  assert.throws(() => decodeRecord(bad), SessionError);
  assert.throws(() => decodeRecord(rec.subarray(0, 100)), /bad length/);
  assert.throws(() => decodeRecord(concat(Uint8Array.of(2, 0xff, 0xff), new Uint8Array(253))), /bad length or padding/);
  assert.throws(() => encodeRecord(RecordType.TEXT, new Uint8Array(MAX_RECORD)), LocalProtocolError);
  assert.equal(encodeRecord(RecordType.PING, new Uint8Array(253)).length, 256); // exactly full: no extra bucket
  assert.equal(encodeRecord(RecordType.PING, new Uint8Array(254)).length, 512);
  const offer = new Offer(7n, 3n, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), "n\u00e4me");
  const back = decodeOffer(offer.encode());
  assert.deepEqual([back.fileId, back.size, back.name, back.key, back.salt], [7n, 3n, "n\u00e4me", offer.key, offer.salt]);
  assert.equal(textBodies(1n, new Uint8Array(0)).length, 1);
});

// -- honest sessions -----------------------------------------------------------------

test("a handshake gives both sides the same safety words and pins the keys", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const [ha] = pair.a.of(HandshakeComplete);
  const [hb] = pair.b.of(HandshakeComplete);
  assert.equal(pair.a.of(HandshakeComplete).length, 1);
  assert.deepEqual(ha.words, hb.words);
  assert.equal(ha.words.length, 8);
  assert.deepEqual(await pair.a.session.safetyWords(), ha.words);
  assert.deepEqual(await pair.b.session.safetyWords(), ha.words);
  assert.ok(ha.firstContact && hb.firstContact);
  assert.deepEqual(ha.peerKey, pair.b.session.staticPublic);
  assert.deepEqual(hb.peerKey, pair.a.session.staticPublic);
  assert.ok(pair.a.session.established && pair.b.session.established);
});

test("texts go both ways, are delivered and acknowledged", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const s1 = await pair.a.session.sendText("hello Bob");
  const s2 = await pair.b.session.sendText("hi Alice \u2713");
  await pair.pump();
  assert.deepEqual(texts(pair.b), ["hello Bob"]);
  assert.deepEqual(texts(pair.a), ["hi Alice \u2713"]);
  assert.deepEqual(pair.a.of(TextDelivered).map((e) => e.seq), [s1]);
  assert.deepEqual(pair.b.of(TextDelivered).map((e) => e.seq), [s2]);
  assert.equal(pair.a.session.unackedTexts, 0);
});

test("a record sealed while the glue takes dataToSend() is not lost", async () => {
  // The glue's writer calls dataToSend() whenever it runs, not only between
  // two session calls: a record whose sealing was in progress at that moment
  // must still be there on the next call (found by the engine's Node tests).
  const pair = await Pair.make();
  await pair.connect();
  let sealed = false;
  const sending = pair.a.session.sendText("sealed meanwhile").then(() => (sealed = true));
  /** @type {Uint8Array[]} */
  const taken = [];
  while (!sealed) {
    taken.push(...pair.a.session.dataToSend()); // at every turn of the event loop
    await new Promise((resolve) => setImmediate(resolve));
  }
  await sending;
  taken.push(...pair.a.session.dataToSend());
  assert.equal(taken.length, 1);
  for (const payload of taken) await pair.b.session.receiveControl(payload);
  assert.deepEqual(pair.b.session.events().filter((e) => e instanceof TextReceived).map((e) => e.text), ["sealed meanwhile"]);
});

test("a text sent before the peer comes is delivered once", async () => {
  const pair = await Pair.make();
  await pair.a.session.sendText("early");
  await pair.connect();
  assert.deepEqual(texts(pair.b), ["early"]);
});

test("calls fired without awaiting take effect in call order", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const a = pair.a.session;
  const seqs = [a.sendText("one"), a.sendText("two"), a.sendText("three")];
  assert.equal(a.dataToSend().length, 0, "nothing is sealed before the calls run");
  assert.deepEqual(await Promise.all(seqs), [1n, 2n, 3n]);
  // Deliver B's side without awaiting each call either.
  const b = pair.b.session;
  await Promise.all(a.dataToSend().map((p) => b.receiveControl(p)));
  assert.deepEqual(b.events().filter((e) => e instanceof TextReceived).map((e) => /** @type {TextReceived} */ (e).text), [
    "one", "two", "three",
  ]);
});

test("a long text is split and joined; one over the cap is refused at once", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const big = "x".repeat(1024 * 1024);
  await pair.a.session.sendText(big);
  await pair.pump();
  assert.deepEqual(texts(pair.b), [big]);
  const control = pair.wireLog.filter(([s, [lane]]) => s === "A" && lane === "CONTROL");
  assert.ok(Math.max(...control.map(([, [, p]]) => p.length)) <= 1 + MAX_RECORD + 16);
  // Synchronously, before anything is numbered or queued.
  assert.throws(() => pair.a.session.sendText("y".repeat(1024 * 1024 + 1)), /exceeds the 1048576-byte cap/);
  assert.throws(() => pair.a.session.sendText("lone \ud800"), /not valid UTF-8/);
  assert.equal(await pair.a.session.sendText("next"), 2n);
});

test("records on the wire are padded to buckets", async () => {
  const pair = await Pair.make();
  await pair.connect();
  pair.wireLog.length = 0;
  await pair.a.session.sendText("a");
  await pair.a.session.sendText("b".repeat(200));
  await pair.pump();
  assert.deepEqual(pair.wireLog.filter(([s]) => s === "A").map(([, [, p]]) => p.length - 1 - 16), [PAD_BUCKET, PAD_BUCKET]);
});

test("a file goes across with progress on both sides", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const data = random(3 * CHUNK_SIZE * 7 + 123); // 22 chunks
  const fid = await pair.sendFile("A", data, "photo.jpg");
  await pair.pump();
  assert.deepEqual(pair.b.of(FileOffered).map((o) => [o.name, o.size]), [["photo.jpg", BigInt(data.length)]]);
  await pair.b.session.acceptFile(fid);
  await pair.pump();
  assert.deepEqual(pair.b.receivedBytes(fid), data);
  assert.deepEqual(pair.b.of(FileCompleted).map((e) => e.fileId), [fid]);
  assert.deepEqual(pair.a.of(FileDelivered).map((e) => e.fileId), [fid]);
  const out = pair.a.of(FileProgress).filter((e) => e.outgoing);
  const inc = pair.b.of(FileProgress).filter((e) => !e.outgoing);
  assert.equal(out.at(-1)?.done, BigInt(data.length));
  assert.equal(inc.at(-1)?.done, BigInt(data.length));
  assert.ok(out.length >= 2 && inc.length >= 2);
});

test("files of edge sizes", async () => {
  for (const size of [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1]) {
    const pair = await Pair.make();
    await pair.connect();
    const data = random(size);
    const fid = await pair.sendFile("B", data);
    await pair.pump();
    await pair.a.session.acceptFile(fid);
    await pair.pump();
    assert.deepEqual(pair.a.receivedBytes(fid), data, `size ${size}`);
    assert.deepEqual(pair.b.of(FileDelivered).map((e) => e.fileId), [fid]);
  }
});

test("a rejected file tells the sender; a cancelled one tells the receiver", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const fid = await pair.sendFile("A", enc.encode("secret plans"));
  await pair.pump();
  await pair.b.session.rejectFile(fid, FileCode.TOO_LARGE, "over --max-size");
  await pair.pump();
  assert.deepEqual(pair.a.of(FileFailed).map((e) => [e.fileId, e.outgoing, e.code, e.reason]), [
    [fid, true, FileCode.TOO_LARGE, "over --max-size"],
  ]);
  const other = await pair.sendFile("A", enc.encode("x".repeat(10)));
  await pair.pump();
  await pair.a.session.cancelFile(other);
  await pair.pump();
  assert.deepEqual(pair.b.of(FileFailed).map((e) => e.code), [FileCode.CANCELLED]);
  await assert.rejects(pair.b.session.acceptFile(other), LocalProtocolError);
});

// -- reconnects --------------------------------------------------------------------

test("unacked texts go again after a reconnect and are shown once", async () => {
  const pair = await Pair.make();
  await pair.connect();
  pair.middle = () => []; // the connection dies: nothing arrives
  await pair.a.session.sendText("one");
  await pair.a.session.sendText("two");
  await pair.pump();
  await pair.disconnect();
  pair.middle = (_s, p) => [p];
  await pair.connect();
  assert.deepEqual(texts(pair.b), ["one", "two"]);
  assert.equal(pair.a.of(TextDelivered).length, 2);
  assert.equal(pair.a.of(HandshakeComplete).length, 2);
});

test("a text whose ACK was lost is not shown twice", async () => {
  const pair = await Pair.make();
  await pair.connect();
  pair.middle = (seat, p) => (seat === "B" ? [] : [p]);
  await pair.a.session.sendText("only once");
  await pair.pump();
  assert.equal(pair.a.session.unackedTexts, 1);
  await pair.disconnect();
  pair.middle = (_s, p) => [p];
  await pair.connect();
  assert.deepEqual(texts(pair.b), ["only once"]);
  assert.equal(pair.a.session.unackedTexts, 0);
});

test("a file resumes from its first missing chunk after a reconnect", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const data = random(40 * CHUNK_SIZE + 5);
  const fid = await pair.sendFile("A", data);
  await pair.pump();
  await pair.b.session.acceptFile(fid);
  let bulkSeen = 0;
  pair.middle = (_s, packet) => (packet[0] === "BULK" && ++bulkSeen > 25 ? [] : [packet]);
  await pair.pump();
  assert.equal(pair.b.receivedBytes(fid).length, 25 * CHUNK_SIZE);
  await pair.disconnect();
  const sentBefore = pair.a.sentChunks;
  pair.middle = (_s, p) => [p];
  await pair.connect();
  assert.deepEqual(pair.b.receivedBytes(fid), data);
  assert.equal(pair.a.sentChunks - sentBefore, 41 - 25); // resumed, not restarted
  assert.deepEqual(pair.a.of(FileDelivered).map((e) => e.fileId), [fid]);
});

test("periodic renewals keep everything, in order", async () => {
  const pair = await Pair.make({ options: { rehandshakeRecords: 5 } });
  await pair.connect();
  for (let i = 0; i < 12; i++) {
    await pair.a.session.sendText(`a${i}`);
    await pair.b.session.sendText(`b${i}`);
    await pair.pump();
    await pair.tick(pair.now);
    await pair.pump();
  }
  assert.deepEqual(texts(pair.b), Array.from({ length: 12 }, (_, i) => `a${i}`));
  assert.deepEqual(texts(pair.a), Array.from({ length: 12 }, (_, i) => `b${i}`));
  assert.ok(pair.a.of(HandshakeComplete).length > 3);
  assert.deepEqual([pair.a.of(SessionFailed), pair.b.of(SessionFailed)], [[], []]);
});

test("B asks A to renew after the session's age", async () => {
  const pair = await Pair.make({ options: { rehandshakeSeconds: 60 } });
  await pair.connect();
  pair.now = 61;
  await pair.b.session.tick(pair.now);
  await pair.pump();
  assert.equal(pair.a.of(HandshakeComplete).length, 2);
  await pair.a.session.sendText("after renew");
  await pair.pump();
  assert.deepEqual(texts(pair.b), ["after renew"]);
});

// -- keys --------------------------------------------------------------------------

test("a changed peer key stops the session until the user trusts it", async () => {
  const keysA = new MemoryKeyStore();
  const keysB = new MemoryKeyStore();
  const roomId = random(16);
  const secret = random(32);
  const first = await Pair.make({ roomId, secretA: secret, secretB: secret, keysA, keysB });
  await first.connect();
  assert.ok(first.a.session.established);
  // Bob loses his keys (new device): same room, same secret, new static key.
  const second = await Pair.make({ roomId, secretA: secret, secretB: secret, keysA });
  await second.connect();
  const changed = second.a.of(PeerKeyChanged);
  assert.equal(changed.length, 1);
  assert.deepEqual(changed[0].pinned, first.b.session.staticPublic);
  assert.deepEqual(changed[0].offered, second.b.session.staticPublic);
  assert.ok(second.a.session.blocked);
  assert.notDeepEqual(changed[0].words, first.a.of(HandshakeComplete)[0].words);
  assert.deepEqual(changed[0].words, second.b.of(HandshakeComplete)[0].words);
  await second.b.session.sendText("should not arrive yet");
  await second.pump();
  assert.deepEqual(texts(second.a), []);
  // A new presence without a leaving, and garbage, leave it blocked; A starts no handshake.
  await second.a.session.peerOnline(1);
  await second.a.session.receiveControl(Uint8Array.of(Envelope.DATA, 1, 2, 3));
  assert.ok(second.a.session.blocked);
  assert.deepEqual(second.a.session.dataToSend(), []);
  await second.a.session.trustPeerKey();
  await second.pump();
  assert.ok(second.a.session.established);
  assert.deepEqual(texts(second.a), ["should not arrive yet"]);
  assert.deepEqual(await keysA.loadPeer(roomId, "A"), second.b.session.staticPublic);
});

for (const intruded of /** @type {const} */ (["A", "B"])) {
  test(`a room recovers by itself when a device on the link of seat ${intruded} leaves`, async () => {
    const keys = { A: new MemoryKeyStore(), B: new MemoryKeyStore() };
    const roomId = random(16);
    const secret = random(32);
    const first = await Pair.make({ roomId, secretA: secret, secretB: secret, keysA: keys.A, keysB: keys.B });
    await first.connect();
    const words = first.a.of(HandshakeComplete)[0].words;
    const staysSeat = intruded === "A" ? "B" : "A";
    const stays = first.side(staysSeat);
    const pinned = await keys[staysSeat].loadPeer(roomId, staysSeat);
    /** @param {MemoryKeyStore} store */
    const visitor = async (store) => new Side(await Session.create({ seat: intruded, roomId, secret, keys: store, wordlist: WORDLIST }));
    /** @param {Side} other */
    const pairWith = (other) => (intruded === "A" ? new Pair(other, stays) : new Pair(stays, other));

    await stays.session.peerOffline(); // the relay: the real device was pushed out
    const intruder = pairWith(await visitor(new MemoryKeyStore()));
    await intruder.connect();
    assert.ok(stays.session.blocked);
    assert.equal(stays.of(PeerKeyChanged).length, 1);
    await stays.session.sendText("for the real one");
    await intruder.pump();
    assert.deepEqual(texts(intruder.side(intruded)), []);

    await stays.session.peerOffline(); // the other device left
    assert.ok(!stays.session.blocked);
    await assert.rejects(stays.session.trustPeerKey(), /no changed key waits to be trusted/);
    const back = pairWith(await visitor(keys[intruded]));
    await back.connect();
    assert.ok(stays.session.established);
    assert.deepEqual(stays.of(HandshakeComplete).at(-1)?.words, words);
    assert.deepEqual(texts(back.side(intruded)), ["for the real one"]);
    assert.deepEqual(await keys[staysSeat].loadPeer(roomId, staysSeat), pinned);
  });
}

test("a blocked B ignores HS1; its trust lets A retry at once", async () => {
  const keysB = new MemoryKeyStore();
  const roomId = random(16);
  const secret = random(32);
  const first = await Pair.make({ roomId, secretA: secret, secretB: secret, keysB });
  await first.connect();
  const second = await Pair.make({ roomId, secretA: secret, secretB: secret, keysB });
  await second.connect();
  assert.ok(second.b.session.blocked);
  assert.equal(second.b.of(PeerKeyChanged).length, 1);
  assert.ok(!second.a.session.established);
  await second.b.session.trustPeerKey();
  await second.pump();
  assert.ok(second.a.session.established && second.b.session.established);
});

test("the static key is made non-extractable and reused from the store", async () => {
  const store = new MemoryKeyStore();
  const one = await Pair.make({ keysA: store });
  const again = await Pair.make({ keysA: store, roomId: one.a.session.roomId });
  assert.deepEqual(again.a.session.staticPublic, one.a.session.staticPublic);
  // Made by WebCrypto, its private half can never be read by the page.
  const pair = await store.loadStatic(one.a.session.roomId, "A");
  assert.ok(pair !== null && pair.privateKey.extractable === false);
  assert.deepEqual(pair.publicKey, one.a.session.staticPublic);
});

test("trusting when no key changed is a local error", async () => {
  const pair = await Pair.make();
  await assert.rejects(pair.a.session.trustPeerKey(), LocalProtocolError);
});

// -- hostile middles -----------------------------------------------------------------

test("a wrong room secret fails on both sides, and A is told why", async () => {
  const pair = await Pair.make({ secretA: random(32), secretB: random(32) });
  await pair.connect();
  assert.ok(!pair.a.session.established && !pair.b.session.established);
  assert.ok(pair.b.of(SessionFailed).length, "B notices at message 3");
  assert.match(pair.a.of(SessionFailed)[0].reason, /room secrets differ/);
  assert.deepEqual([pair.a.of(HandshakeComplete), pair.b.of(HandshakeComplete)], [[], []]);
  // A retries with back-off rather than spinning: nothing more until time passes.
  assert.deepEqual(pair.a.session.dataToSend(), []);
  await pair.a.session.tick(31);
  assert.deepEqual(pair.a.session.dataToSend().map((p) => p[0]), [Envelope.HS1]);
});

test("a relay that swaps in its own keys fails on both sides", async () => {
  // The relay plays B towards A and A towards B, with sessions of its own
  // (same room, a guessed secret).
  const pair = await Pair.make();
  const realA = pair.a.session;
  const realB = pair.b.session;
  const fakeB = (await Pair.make({ roomId: realA.roomId })).b.session;
  const fakeA = (await Pair.make({ roomId: realA.roomId })).a.session;
  const routes = /** @type {[Session, Session][]} */ ([[realA, fakeB], [fakeB, realA], [fakeA, realB], [realB, fakeA]]);
  const run = async () => {
    for (let moved = true; moved; ) {
      moved = false;
      for (const [from, to] of routes) {
        for (const payload of from.dataToSend()) {
          moved = true;
          await to.receiveControl(payload);
        }
      }
    }
  };
  await Promise.all([fakeA.peerOnline(0), fakeB.peerOnline(0), realB.peerOnline(0), realA.peerOnline(0)]);
  await run();
  for (const now of [31, 62]) {
    await Promise.all([realA.tick(now), realB.tick(now)]);
    await run();
  }
  const a = realA.events();
  const b = realB.events();
  assert.ok(b.some((e) => e instanceof SessionFailed), "B cannot read message 3 without the room secret");
  assert.ok(a.some((e) => e instanceof SessionFailed), "A never gets a HELLO it can read");
  assert.ok(![...a, ...b].some((e) => e instanceof HandshakeComplete));
  assert.ok(!realA.established && !realB.established);
});

test("a tampered record is never shown and ends the session", async () => {
  const pair = await Pair.make();
  await pair.connect();
  pair.middle = (_s, [lane, payload]) => {
    if (lane === "CONTROL" && payload[0] === Envelope.DATA) {
      const copy = payload.slice();
      copy[copy.length - 1] ^= 1;
      return [[lane, copy]];
    }
    return [[lane, payload]];
  };
  await pair.a.session.sendText("pay 10 EUR");
  // Every record is tampered: the two start over, then A backs off.
  await pair.pump();
  assert.deepEqual(texts(pair.b), []);
  assert.match(pair.b.of(SessionFailed)[0].reason, /failed to decrypt/);
});

test("a dropped, duplicated or reordered record is detected and the session recovers", async () => {
  for (const attack of ["drop", "duplicate", "reorder"]) {
    const pair = await Pair.make();
    await pair.connect();
    /** @type {Packet[]} */
    const held = [];
    let done = false;
    pair.middle = (seat, packet) => {
      const [lane, payload] = packet;
      if (done || seat !== "A" || lane !== "CONTROL" || payload[0] !== Envelope.DATA) return [packet];
      if (attack === "drop") {
        done = true;
        return [];
      }
      if (attack === "duplicate") {
        done = true;
        return [packet, packet];
      }
      if (held.length === 0) {
        held.push(packet);
        return [];
      }
      done = true;
      return [packet, /** @type {Packet} */ (held.pop())];
    };
    await pair.a.session.sendText("m1");
    await pair.a.session.sendText("m2");
    await pair.pump();
    const failures = pair.b.of(SessionFailed);
    assert.ok(failures.length, `${attack} must be detected`);
    assert.match(failures[0].reason, /decrypt/);
    assert.deepEqual(texts(pair.b), ["m1", "m2"], attack);
    assert.equal(pair.a.session.unackedTexts, 0);
  }
});

test("records of an old session replayed into a new one are refused", async () => {
  const pair = await Pair.make();
  await pair.connect();
  await pair.a.session.sendText("transfer approved");
  await pair.pump();
  const old = pair.wireLog.filter(([s]) => s === "A").map(([, p]) => p);
  await pair.disconnect();
  await pair.connect();
  const before = texts(pair.b).length;
  for (const [lane, payload] of old) {
    if (lane === "CONTROL" && payload[0] === Envelope.DATA) await pair.b.session.receiveControl(payload);
  }
  pair.b.events.push(...pair.b.session.events());
  assert.equal(texts(pair.b).length, before);
  assert.ok(pair.b.of(SessionFailed).length);
});

test("a stale handshake message after a reconnect is ignored", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const hs2 = /** @type {[Seat, Packet]} */ (pair.wireLog.find(([s, [, p]]) => s === "B" && p[0] === Envelope.HS2))[1][1];
  await pair.disconnect();
  await pair.connect();
  await pair.a.session.receiveControl(hs2);
  assert.deepEqual(pair.a.session.events(), []);
  assert.deepEqual(pair.a.session.dataToSend(), []);
  await pair.a.session.sendText("still fine");
  await pair.pump();
  assert.deepEqual(texts(pair.b), ["still fine"]);
});

test("tampered chunks fail the file, not the session; a dropped chunk is asked for again", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const fid = await pair.sendFile("A", random(3 * CHUNK_SIZE));
  await pair.pump();
  await pair.b.session.acceptFile(fid);
  pair.middle = (_s, [lane, payload]) => {
    if (lane !== "BULK") return [[lane, payload]];
    const copy = payload.slice();
    copy[40] ^= 0x80;
    return [[lane, copy]];
  };
  await pair.pump();
  assert.deepEqual(pair.b.of(FileCompleted), []);
  assert.ok(pair.b.of(FileFailed).length && pair.a.of(FileFailed).length);
  assert.equal(pair.b.receivedBytes(fid).length, 0);
  assert.deepEqual(pair.b.of(SessionFailed), []);
  assert.ok(pair.a.session.established && pair.b.session.established);

  const data = random(6 * CHUNK_SIZE);
  const next = await pair.sendFile("A", data);
  await pair.pump();
  await pair.b.session.acceptFile(next);
  let dropped = false;
  pair.middle = (_s, packet) => {
    if (packet[0] === "BULK" && !dropped && readU64(packet[1], 8) === 2n) {
      dropped = true;
      return [];
    }
    return [packet];
  };
  await pair.pump();
  assert.deepEqual(pair.b.receivedBytes(next), data);
  assert.deepEqual(pair.a.of(FileDelivered).map((e) => e.fileId), [next]);
});

test("garbage control payloads never throw", async () => {
  const pair = await Pair.make();
  await pair.connect();
  for (const payload of [[], [9], [1], [2, 97, 98, 99], [3, ...new Uint8Array(100)], [4, ...new Uint8Array(50)]]) {
    await pair.a.session.receiveControl(Uint8Array.from(payload));
    await pair.b.session.receiveControl(Uint8Array.from(payload));
  }
  await pair.a.session.receiveBulk(new Uint8Array(3));
  await pair.pump();
  assert.ok(pair.a.of(SessionFailed).length && pair.b.of(SessionFailed).length);
  // A backs off after repeated failures; once time passes the two meet again.
  await pair.a.session.sendText("alive");
  for (let now = 31; !pair.a.session.established && now < 300; now += 31) {
    await pair.tick(now);
    await pair.pump();
  }
  assert.deepEqual(texts(pair.b), ["alive"]);
});

test("misuse by this side is a LocalProtocolError", async () => {
  const pair = await Pair.make();
  const a = pair.a.session;
  assert.throws(() => a.offerFile("", 1n), LocalProtocolError);
  assert.throws(() => a.offerFile("f", -1n), LocalProtocolError);
  assert.throws(() => a.offerFile("f".repeat(1025), 1n), LocalProtocolError);
  assert.throws(() => a.offerFile("f", /** @type {any} */ (1)), LocalProtocolError);
  await assert.rejects(a.encryptChunk(123n, 0n, new Uint8Array(0)), LocalProtocolError);
  await assert.rejects(a.acceptFile(5n), LocalProtocolError);
  await assert.rejects(a.rejectFile(5n, FileCode.DECLINED), LocalProtocolError);
  await assert.rejects(a.cancelFile(5n), LocalProtocolError);
  assert.throws(() => a.fileChunks(5n), LocalProtocolError);
  // The queue keeps running after a rejected call.
  await a.sendText("fine");
  const common = { seat: /** @type {const} */ ("A"), keys: new MemoryKeyStore(), wordlist: WORDLIST };
  await assert.rejects(Session.create({ ...common, roomId: random(15), secret: random(32) }), /room id/);
  await assert.rejects(Session.create({ ...common, roomId: random(16), secret: random(31) }), /room secret/);
  await assert.rejects(Session.create({ ...common, roomId: random(16), secret: random(32), maxText: 0 }), /max_text/);
});

test("the handshake times out and A retries at once, then backs off", async () => {
  const pair = await Pair.make();
  const a = pair.a.session;
  await a.peerOnline(0);
  assert.deepEqual(a.dataToSend().map((p) => p[0]), [Envelope.HS1]);
  await a.tick(10);
  assert.deepEqual(a.events(), []);
  await a.tick(31);
  assert.ok(a.events().some((e) => e instanceof SessionFailed && /timed out/.test(e.reason)));
  assert.deepEqual(a.dataToSend().map((p) => p[0]), [Envelope.HS1]); // the first retry is immediate
  await a.tick(62);
  a.events();
  assert.deepEqual(a.dataToSend(), [], "the second failure backs off");
  await a.tick(64);
  assert.deepEqual(a.dataToSend().map((p) => p[0]), [Envelope.HS1]);
  assert.deepEqual(await a.safetyWords(), []);
});

test("a RESET naming another handshake is ignored", async () => {
  const pair = await Pair.make();
  await pair.connect();
  await pair.a.session.receiveControl(Uint8Array.of(Envelope.RESET, 0xde, 0xad, 0xbe, 0xef, 1));
  assert.deepEqual(pair.a.session.events(), []);
  assert.ok(pair.a.session.established);
});

test("handshake envelopes sent to the wrong seat are failures", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const { a, b } = { a: pair.a.session, b: pair.b.session };
  await a.receiveControl(concat(Uint8Array.of(Envelope.HS1), new Uint8Array(40)));
  await b.receiveControl(concat(Uint8Array.of(Envelope.HS2), new Uint8Array(40)));
  await b.receiveControl(concat(Uint8Array.of(Envelope.HS3), new Uint8Array(40)));
  await b.receiveControl(concat(Uint8Array.of(Envelope.RESET), new Uint8Array(5)));
  await a.receiveControl(concat(Uint8Array.of(Envelope.RESET), new Uint8Array(4)));
  await a.receiveControl(concat(Uint8Array.of(Envelope.HS2), new Uint8Array(2)));
  const reasons = [...a.events(), ...b.events()].filter((e) => e instanceof SessionFailed).map((e) => /** @type {SessionFailed} */ (e).reason);
  for (const pattern of [/initiator/, /responder/, /bad length/, /too short/]) {
    assert.ok(reasons.some((r) => pattern.test(r)), String(pattern));
  }
});

// -- a peer that breaks the rules ------------------------------------------------------

test("malformed records from an authenticated peer end the session, which recovers", async () => {
  const cases = /** @type {[number, Uint8Array, string][]} */ ([
    [RecordType.TEXT, new Uint8Array(3), "too short"],
    [RecordType.ACK, new Uint8Array(3), "bad length"],
    [RecordType.FILE_OFFER, new Uint8Array(10), "too short"],
    [RecordType.FILE_REJECT, new Uint8Array(3), "too short"],
    [RecordType.FILE_ACCEPT, new Uint8Array(15), "bad length"],
    [RecordType.HELLO, new Uint8Array(8), "unexpected HELLO"],
    [0x7f, new Uint8Array(0), "unknown control record"],
  ]);
  for (const [type, body, reason] of cases) {
    const peer = await ScriptedPeer.against();
    await peer.connect();
    await peer.send(type, body);
    const failures = peer.of(SessionFailed).map((e) => e.reason);
    assert.ok(failures.length && failures[0].includes(reason), `${type}: ${failures[0]}`);
    assert.ok(peer.resets.length, "B tells A at once");
    assert.ok(peer.session.established, "and it recovered by itself");
    assert.equal(peer.handshakes, 2);
  }
});

test("malformed offers end the session", async () => {
  /** @param {Uint8Array} name @param {number} [length] */
  const offer = (name, length = name.length) =>
    concat(u64(7n), u64(3n), new Uint8Array(64), Uint8Array.of(length >> 8, length & 0xff), name);
  for (const [body, reason] of /** @type {[Uint8Array, string][]} */ ([
    [offer(enc.encode("x"), 5), "bad name length"],
    [offer(Uint8Array.of(0xff, 0xfe)), "not valid UTF-8"],
  ])) {
    const peer = await ScriptedPeer.against();
    await peer.connect();
    await peer.send(RecordType.FILE_OFFER, body);
    assert.match(peer.of(SessionFailed)[0].reason, new RegExp(reason));
  }
});

test("interleaved parts and a sequence gap are failures, and nothing is acknowledged", async () => {
  const peer = await ScriptedPeer.against({ maxText: 100 });
  await peer.connect();
  await peer.send(RecordType.TEXT, concat(u64(1n), Uint8Array.of(0), enc.encode("part")));
  await peer.send(RecordType.TEXT, concat(u64(2n), Uint8Array.of(1), enc.encode("other")));
  assert.match(peer.of(SessionFailed)[0].reason, /interleaved/);
  peer.events.length = 0;
  assert.ok(peer.session.established);
  await peer.send(RecordType.TEXT, concat(u64(9n), Uint8Array.of(1), enc.encode("after a gap")));
  assert.match(peer.of(SessionFailed)[0].reason, /sequence gap/);
  assert.deepEqual(texts(peer), []);
  assert.deepEqual(peer.records(RecordType.ACK), []);
});

test("a text the receiver cannot show fails alone, with TEXT_REFUSED, also for its copies", async () => {
  const peer = await ScriptedPeer.against({ maxText: 100 });
  await peer.connect();
  await peer.sendText(1n, Uint8Array.of(0xff, 0xfe));
  await peer.sendText(2n, enc.encode("y".repeat(101)));
  await peer.sendText(1n, Uint8Array.of(0xff, 0xfe)); // a re-sent copy
  await peer.sendText(3n, enc.encode("fine"));
  assert.deepEqual(peer.of(TextRefused).map((e) => [e.seq, e.reason]), [
    [1n, "a text that is not valid UTF-8"],
    [2n, "a text of 101 bytes, over the 100-byte cap"],
  ]);
  assert.deepEqual(texts(peer), ["fine"]);
  assert.deepEqual(peer.records(RecordType.TEXT_REFUSED).map((b) => readU64(b)), [1n, 2n, 1n]);
  assert.deepEqual(peer.records(RecordType.ACK).map((b) => readU64(b)), [3n]);
  assert.deepEqual(peer.of(SessionFailed), []);
});

test("an accept past the end is a failure; one for an unknown file is answered FILE_CANCEL", async () => {
  const peer = await ScriptedPeer.against();
  await peer.connect();
  const fid = await peer.session.offerFile("abc.txt", 3n);
  await peer.take();
  assert.deepEqual(peer.records(RecordType.FILE_OFFER).map((b) => decodeOffer(b).fileId), [fid]);
  await peer.send(RecordType.FILE_ACCEPT, concat(u64(999n), u64(0n)));
  assert.deepEqual([peer.of(SessionFailed), peer.resets], [[], []]);
  assert.deepEqual(peer.records(RecordType.FILE_CANCEL).map((b) => [decodeReason(b).fileId, decodeReason(b).code]), [
    [999n, FileCode.CANCELLED],
  ]);
  await peer.send(RecordType.FILE_ACCEPT, concat(u64(fid), u64(50n)));
  assert.match(peer.of(SessionFailed)[0].reason, /past the end/);
});

test("another session version is named on both sides", async () => {
  for (const [payload, said] of /** @type {[Uint8Array, string][]} */ ([
    [Uint8Array.of(0), "session protocol 1, this one 3"],
    [Uint8Array.of(0, 2), "session protocol 2"],
  ])) {
    const pair = await Pair.make();
    const b = pair.b.session;
    await b.peerOnline(0);
    // Message 1 needs no secret (the psk enters in message 3): any will do.
    const old = await initiatorHandshake(b.roomId, random(32));
    await b.receiveControl(concat(Uint8Array.of(Envelope.HS1), u32(7), await old.writeMessage(payload)));
    const failed = b.events().filter((e) => e instanceof SessionFailed).map((e) => /** @type {SessionFailed} */ (e).reason);
    assert.equal(failed.length, 1);
    assert.ok(failed[0].includes(said), failed[0]);
    const reset = b.dataToSend().filter((p) => p[0] === Envelope.RESET);
    assert.deepEqual(reset, [Uint8Array.of(Envelope.RESET, 0, 0, 0, 7, 2)]);
    const a = pair.a.session;
    await a.peerOnline(0);
    const hsId = readU32(a.dataToSend()[0], 1);
    await a.receiveControl(concat(Uint8Array.of(Envelope.RESET), u32(hsId), Uint8Array.of(2)));
    assert.ok(a.events().some((e) => e instanceof SessionFailed && /another version/.test(e.reason)));
  }
});
