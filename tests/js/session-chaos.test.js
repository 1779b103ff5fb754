// The JS session machine under lossy and hostile relays: random schedules of
// texts, drops, duplicates, replays, reconnects and time (with fixed seeds),
// and one test per failure mode of tests/test_session_chaos.py and the file
// cases of tests/test_session.py (saving, lying senders).
//
// The property a relay must never break: once the network is clean again,
// every text either side sent is shown exactly once, in order, none is left
// unacknowledged, and none was reported delivered that was never shown.

import assert from "node:assert/strict";
import { test } from "node:test";

import { concat, readU64, u16, u64 } from "../../m42d/web/lib/bytes.js";
import { LocalProtocolError } from "../../m42d/web/lib/errors.js";
import {
  BULK_HEADER,
  Envelope,
  FileChunk,
  FileCode,
  FileCompleted,
  FileDelivered,
  FileFailed,
  FileOffered,
  FileProgress,
  HandshakeComplete,
  RecordType,
  SessionError,
  SessionFailed,
  TextDelivered,
  TextReceived,
} from "../../m42d/web/lib/session/index.js";
import { Offer, decodeHello, decodeReason } from "../../m42d/web/lib/session/records.js";
import { CHUNK_SIZE, FileKey, StreamEncryptor } from "../../m42d/web/lib/stream.js";
import { Pair, other } from "./session-harness.js";
import { ScriptedPeer, initiatorHandshake } from "./session-peer.js";

/** @typedef {import("./session-harness.js").Packet} Packet */
/** @typedef {import("./session-harness.js").Seat} Seat */
/** @typedef {import("./session-harness.js").Middle} Middle */

/** @param {Pair} pair @param {Seat} seat */
const texts = (pair, seat) => pair.side(seat).of(TextReceived).map((e) => e.text);
/** @param {number} n */
const random = (n) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
};

/** A seeded PRNG (mulberry32), so that a failing schedule can be replayed. */
function prng(/** @type {number} */ seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  /** @template T @param {ReadonlyArray<T>} items @returns {T} */
  const choice = (items) => items[Math.floor(next() * items.length)];
  return { next, choice };
}

/** Let every timer fire on a clean network. @param {Pair} pair */
async function settle(pair, rounds = 10, step = 31) {
  for (let i = 0; i < rounds; i++) {
    await pair.tick(pair.now + step);
    await pair.pump();
  }
}

/**
 * @param {number} seed
 * @param {{renew: boolean, kinds: ReadonlyArray<string>, reconnect: boolean}} options
 */
async function runSchedule(seed, { renew, kinds, reconnect }) {
  const rng = prng(seed);
  const options = renew
    ? { rehandshakeRecords: rng.choice([3, 5, 10_000]), rehandshakeSeconds: rng.choice([50, 3600]) }
    : { rehandshakeRecords: 1e9, rehandshakeSeconds: 1e12 };
  const pair = await Pair.make({ options });
  /** @type {Record<Seat, string[]>} */
  const sent = { A: [], B: [] };
  /** @type {Packet[]} */
  const history = [];
  let noise = 0;
  pair.middle = (_seat, packet) => {
    history.push(packet);
    if (rng.next() >= noise) return [packet];
    const kind = rng.choice(kinds);
    if (kind === "drop") return [];
    if (kind === "dup") return [packet, packet];
    const old = rng.choice(history); // replay
    return old[0] === packet[0] ? [packet, old] : [packet];
  };
  let connected = false;
  for (let step = 0; step < 40; step++) {
    const action = rng.choice(["textA", "textB", "textA", "textB", "pump", "disc", "conn", "tick", "tick"]);
    noise = rng.next() < 0.3 ? 0.3 : 0;
    if (action.startsWith("text")) {
      const seat = /** @type {Seat} */ (action.slice(4));
      const text = `${seat}${sent[seat].length}`;
      await pair.side(seat).session.sendText(text);
      sent[seat].push(text);
      await pair.pump();
    } else if (action === "pump") {
      await pair.pump();
    } else if (action === "disc") {
      await pair.disconnect();
      connected = false;
    } else if (action === "conn") {
      await pair.connect();
      connected = true;
    } else {
      await pair.tick(pair.now + rng.choice([1, 5, 31, 61]));
      await pair.pump();
    }
  }
  noise = 0;
  if (reconnect || !connected) {
    await pair.disconnect();
    await pair.connect();
  }
  await settle(pair);
  const errors = [];
  for (const src of /** @type {Seat[]} */ (["A", "B"])) {
    const receiver = pair.side(other(src));
    const shown = receiver.of(TextReceived);
    if (JSON.stringify(shown.map((e) => e.text)) !== JSON.stringify(sent[src])) {
      errors.push(`${src}: sent ${sent[src]} shown ${shown.map((e) => e.text)}`);
    }
    if (pair.side(src).session.unackedTexts) errors.push(`${src}: ${pair.side(src).session.unackedTexts} unacked`);
    const seen = new Set(shown.map((e) => e.seq));
    if (pair.side(src).of(TextDelivered).some((e) => !seen.has(e.seq))) errors.push(`${src}: delivered but never shown`);
  }
  return errors;
}

// 12 seeds by default; M42_SEEDS=300 runs as many as the Python slow test.
test("random schedules lose and duplicate nothing", async () => {
  /** @type {Record<string, string[]>} */
  const bad = {};
  for (let seed = 1; seed <= Number(process.env.M42_SEEDS ?? 12); seed++) {
    const options = {
      renew: seed % 2 === 0,
      kinds: seed % 3 === 0 ? ["drop"] : ["drop", "dup", "replay"],
      reconnect: seed % 4 === 0,
    };
    const errors = await runSchedule(seed, options);
    if (errors.length) bad[`seed ${seed} ${JSON.stringify(options)}`] = errors;
  }
  assert.deepEqual(bad, {});
});

/**
 * A middle that drops the next DATA from `src` once armed.
 * @param {Seat} src
 * @returns {[{on: boolean}, Middle]}
 */
function dropNextData(src) {
  const armed = { on: false };
  /** @type {Middle} */
  const middle = (seat, packet) => {
    if (armed.on && seat === src && packet[0] === "CONTROL" && packet[1][0] === Envelope.DATA) {
      armed.on = false;
      return [];
    }
    return [packet];
  };
  return [armed, middle];
}

test("a record dropped at a renewal is detected, not acknowledged", async () => {
  for (const src of /** @type {Seat[]} */ (["A", "B"])) {
    const pair = await Pair.make({ options: { rehandshakeSeconds: 100 } });
    await pair.connect();
    const [armed, middle] = dropNextData(src);
    pair.middle = middle;
    const sender = pair.side(src).session;
    if (src === "A") {
      armed.on = true;
      await sender.sendText("t1");
      await pair.pump();
      pair.now = 200;
      await pair.a.session.tick(pair.now); // A renews
    } else {
      pair.now = 200;
      await pair.a.session.tick(pair.now);
      for (const payload of pair.a.session.dataToSend()) await pair.b.session.receiveControl(payload); // only HS1
      armed.on = true;
      await sender.sendText("t1"); // on the old keys, dropped
    }
    await pair.pump();
    await sender.sendText("t2");
    await pair.pump();
    await settle(pair);
    assert.deepEqual(texts(pair, other(src)), ["t1", "t2"], src);
    assert.equal(sender.unackedTexts, 0);
    assert.ok(pair.a.of(SessionFailed).length + pair.b.of(SessionFailed).length, "the loss must be noticed");
  }
});

test("records B sealed on the old keys during a renewal are kept", async () => {
  const pair = await Pair.make({ options: { rehandshakeSeconds: 100 } });
  await pair.connect();
  pair.now = 200;
  await pair.a.session.tick(pair.now); // A sends HS1 (renew)
  for (const payload of pair.a.session.dataToSend()) await pair.b.session.receiveControl(payload);
  await pair.b.session.sendText("sent on the old keys"); // B is still established
  await pair.pump();
  assert.deepEqual(texts(pair, "A"), ["sent on the old keys"]);
  assert.deepEqual(pair.a.of(SessionFailed), []);
  assert.equal(pair.b.session.unackedTexts, 0);
  assert.equal(pair.a.of(HandshakeComplete).length, 2);
});

test("a renewal answered fresh (B had lost its session) re-sends", async () => {
  const pair = await Pair.make({ options: { rehandshakeSeconds: 100 } });
  await pair.connect();
  let on = true;
  pair.middle = (seat, [lane, payload]) => {
    if (on && seat === "A" && payload[0] === Envelope.DATA) {
      const copy = payload.slice();
      copy[copy.length - 1] ^= 1; // B fails ...
      return [[lane, copy]];
    }
    if (on && seat === "B" && payload[0] === Envelope.RESET) {
      on = false; // ... and its RESET is lost
      return [];
    }
    return [[lane, payload]];
  };
  await pair.a.session.sendText("t1");
  await pair.pump();
  assert.ok(!pair.b.session.established);
  pair.now = 150;
  await pair.a.session.tick(pair.now); // A renews; B has no session: fresh
  await pair.pump();
  assert.deepEqual(texts(pair, "B"), ["t1"]);
  assert.equal(pair.a.session.unackedTexts, 0);
});

test("a forged HS1 neither ends nor stalls an established responder", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const forger = (await Pair.make({ roomId: pair.a.session.roomId })).a.session;
  await forger.peerOnline(0);
  await pair.b.session.receiveControl(forger.dataToSend()[0]); // the relay injects it
  pair.b.session.dataToSend(); // B's HS2 goes to the forger, not to A
  await pair.a.session.sendText("still flowing");
  await pair.pump();
  assert.deepEqual(texts(pair, "B"), ["still flowing"]);
  assert.equal(pair.a.session.unackedTexts, 0);
  await settle(pair, 2);
  assert.ok(pair.b.session.established);

  // Garbage HS1s are ignored while established, refused while not.
  const b = pair.b.session;
  await b.receiveControl(concat(Uint8Array.of(Envelope.HS1, 0, 0, 0, 7), new TextEncoder().encode("junk")));
  const forged = await initiatorHandshake(b.roomId, random(32)); // message 1 needs no secret
  await b.receiveControl(concat(Uint8Array.of(Envelope.HS1, 0, 0, 0, 8), await forged.writeMessage(Uint8Array.of(7))));
  assert.ok(b.established);
  assert.deepEqual(b.events(), []);
  const fresh = (await Pair.make({ roomId: b.roomId })).b.session;
  await fresh.peerOnline(0);
  const again = await initiatorHandshake(b.roomId, random(32));
  await fresh.receiveControl(concat(Uint8Array.of(Envelope.HS1, 0, 0, 0, 9), await again.writeMessage(Uint8Array.of(7))));
  assert.ok(fresh.events().some((e) => e instanceof SessionFailed && /bad payload/.test(e.reason)));
});

test("a lost RESET is repeated", async () => {
  const pair = await Pair.make();
  await pair.connect();
  let mode = "tamper";
  pair.middle = (seat, [lane, payload]) => {
    if (mode === "tamper" && seat === "A" && payload[0] === Envelope.DATA) {
      mode = "drop-reset";
      const copy = payload.slice();
      copy[copy.length - 1] ^= 1;
      return [[lane, copy]];
    }
    if (mode === "drop-reset" && seat === "B" && payload[0] === Envelope.RESET) {
      mode = "clean";
      return [];
    }
    return [[lane, payload]];
  };
  await pair.a.session.sendText("m1");
  await pair.pump();
  assert.ok(pair.b.of(SessionFailed).length);
  await settle(pair);
  assert.deepEqual(texts(pair, "B"), ["m1"]);
  assert.equal(pair.a.session.unackedTexts, 0);
});

test("a dropped last record (a text, or its ACK) is recovered by the probe", async () => {
  for (const victim of ["text", "ack"]) {
    const pair = await Pair.make();
    await pair.connect();
    const [armed, middle] = dropNextData(victim === "text" ? "A" : "B");
    pair.middle = middle;
    armed.on = true;
    await pair.a.session.sendText("hello");
    await pair.pump();
    assert.equal(pair.a.session.unackedTexts, 1);
    await settle(pair);
    assert.deepEqual(texts(pair, "B"), ["hello"], victim);
    assert.equal(pair.a.session.unackedTexts, 0);
  }
});

test("an unanswered PING ends the session", async () => {
  const pair = await Pair.make();
  await pair.connect();
  pair.middle = (seat, packet) => (seat === "B" ? [] : [packet]);
  await pair.a.session.sendText("anyone?");
  await pair.pump();
  for (const now of [16, 32]) {
    pair.now = now;
    await pair.a.session.tick(now);
    await pair.pump();
  }
  assert.ok(pair.a.of(SessionFailed).some((e) => /stopped answering/.test(e.reason)));
});

test("dropped and tampered chunks are asked for again", async () => {
  for (const [index, times, tamper] of /** @type {[bigint, number, boolean][]} */ ([[5n, 1, false], [2n, 2, false], [0n, 1, true]])) {
    const pair = await Pair.make();
    await pair.connect();
    const data = random(5 * CHUNK_SIZE + 10); // 6 chunks, the last is index 5
    const fid = await pair.sendFile("A", data);
    await pair.pump();
    let left = times;
    pair.middle = (_seat, [lane, payload]) => {
      if (lane === "BULK" && left && readU64(payload, 8) === index) {
        left -= 1;
        if (!tamper) return [];
        const copy = payload.slice();
        copy[40] ^= 1;
        return [[lane, copy]];
      }
      return [[lane, payload]];
    };
    await pair.b.session.acceptFile(fid);
    await pair.pump();
    await settle(pair, 4);
    assert.deepEqual(pair.b.receivedBytes(fid), data, `chunk ${index}`);
    assert.ok(pair.b.of(FileCompleted).length && pair.a.of(FileDelivered).length);
  }
});

test("a lost cancel is answered when the receiver asks", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const fid = await pair.sendFile("A", new TextEncoder().encode("abc"));
  await pair.pump();
  const [armed, middle] = dropNextData("A");
  pair.middle = middle;
  armed.on = true;
  await pair.a.session.cancelFile(fid);
  await pair.pump();
  assert.deepEqual(pair.b.of(FileFailed), []);
  await pair.b.session.acceptFile(fid);
  await pair.pump();
  await settle(pair);
  assert.deepEqual(pair.b.of(FileFailed).map((e) => e.code), [FileCode.CANCELLED]);
});

test("an unknown file code from the peer is reported and echoed, never fatal", async () => {
  const peer = await ScriptedPeer.against();
  await peer.connect();
  const offer = new Offer(7n, 3n, random(32), random(32), "abc.txt");
  await peer.send(RecordType.FILE_OFFER, offer.encode());
  await peer.send(RecordType.FILE_CANCEL, concat(u64(7n), u16(999)));
  assert.deepEqual(peer.of(FileFailed).map((e) => [e.fileId, e.code]), [[7n, 999]]);
  await peer.send(RecordType.FILE_OFFER, offer.encode()); // a re-offer: the code is echoed
  assert.deepEqual(peer.records(RecordType.FILE_REJECT).map((b) => [decodeReason(b).fileId, decodeReason(b).code]), [[7n, 999]]);
  const fid = await peer.session.offerFile("mine.txt", 3n);
  await peer.take();
  await peer.send(RecordType.FILE_REJECT, concat(u64(fid), u16(999)));
  assert.deepEqual(peer.of(FileFailed).slice(1).map((e) => [e.fileId, e.outgoing, e.code, e.reason]), [
    [fid, true, 999, "code 999"],
  ]);
  assert.deepEqual([peer.of(SessionFailed), peer.resets], [[], []]);
});

test("more than 64 open offers are declined", async () => {
  const pair = await Pair.make();
  await pair.connect();
  for (let i = 0; i < 70; i++) await pair.sendFile("A", Uint8Array.of(120), `f${i}`);
  await pair.pump();
  assert.equal(pair.b.of(FileOffered).length, 64);
  assert.equal(pair.a.of(FileFailed).length, 6);
});

test("FILE_DONE waits until the receiver saved the file; a failed save is reported", async () => {
  const pair = await Pair.make({ autoSave: false });
  await pair.connect();
  const data = random(CHUNK_SIZE + 7);
  const fid = await pair.sendFile("A", data);
  await pair.pump();
  await pair.b.session.acceptFile(fid);
  await pair.pump();
  assert.ok(pair.b.of(FileCompleted).length);
  assert.deepEqual(pair.a.of(FileDelivered), []); // not "delivered" while B still stores it
  await pair.disconnect();
  await pair.connect(); // a re-offer while saving is answered by neither DONE nor REJECT
  assert.deepEqual([pair.a.of(FileDelivered), pair.a.of(FileFailed)], [[], []]);
  await pair.b.session.confirmSaved(fid);
  await pair.pump();
  assert.deepEqual(pair.a.of(FileDelivered).map((e) => e.fileId), [fid]);
  await assert.rejects(pair.b.session.confirmSaved(fid), LocalProtocolError);

  const other = await pair.sendFile("A", new TextEncoder().encode("some bytes"));
  await pair.pump();
  await pair.b.session.acceptFile(other);
  await pair.pump();
  await pair.b.session.rejectFile(other, FileCode.NO_SPACE, "disk full");
  await pair.pump();
  assert.deepEqual(pair.a.of(FileFailed).map((e) => [e.fileId, e.outgoing, e.code, e.reason]), [
    [other, true, FileCode.NO_SPACE, "disk full"],
  ]);
});

test("a re-offer of a finished file is answered DONE, of a refused one REJECT", async () => {
  const pair = await Pair.make();
  await pair.connect();
  const fid = await pair.sendFile("A", new Uint8Array(100).fill(122));
  await pair.pump();
  await pair.b.session.acceptFile(fid);
  await pair.pump();
  const rejected = await pair.sendFile("A", new TextEncoder().encode("no"));
  await pair.pump();
  await pair.b.session.rejectFile(rejected, FileCode.DECLINED);
  await pair.pump();
  await pair.disconnect();
  await pair.connect();
  assert.equal(pair.b.of(FileCompleted).length, 1);
  assert.deepEqual(pair.a.of(FileFailed).map((e) => e.code), [FileCode.DECLINED]);
});

test("data past the offered size is refused at the first byte", async () => {
  for (const [offered, chunks, finalAt] of /** @type {[bigint, number, number | null][]} */ ([
    [1n, 40, null], // offers 1 byte, streams without end
    [0n, 3, null], // an empty file that keeps going
    [BigInt(CHUNK_SIZE), 3, null], // the one chunk it offered says more follow
    [BigInt(CHUNK_SIZE + 1), 3, 2], // a third chunk where two were offered
  ])) {
    const peer = await ScriptedPeer.against();
    await peer.connect();
    const key = new FileKey(random(32), random(32));
    await peer.send(RecordType.FILE_OFFER, new Offer(7n, offered, key.key, key.salt, "tiny.txt").encode());
    assert.equal(peer.of(FileOffered).length, 1);
    await peer.session.acceptFile(7n);
    await peer.take();
    const sealer = await StreamEncryptor.create(key);
    for (let i = 0; i < chunks; i++) {
      const chunk = await sealer.encryptChunk(BigInt(i), new Uint8Array(CHUNK_SIZE), { last: i === finalAt });
      await peer.sendBulk(concat(u64(7n), u64(BigInt(i)), chunk));
    }
    const kept = peer.of(FileChunk).reduce((n, c) => n + BigInt(c.data.length), 0n);
    assert.ok(kept <= offered, `${offered}: ${kept} bytes passed on`);
    assert.deepEqual(peer.of(FileCompleted), []);
    assert.ok(peer.of(FileProgress).every((p) => p.done <= offered));
    const [failed] = peer.of(FileFailed);
    assert.equal(failed.code, FileCode.MISMATCH);
    assert.ok(failed.reason.includes(`more than the ${offered} bytes offered`), failed.reason);
    assert.deepEqual(peer.records(RecordType.FILE_REJECT).map((b) => decodeReason(b).code), [FileCode.MISMATCH]);
    assert.deepEqual([peer.of(SessionFailed), peer.resets], [[], []]);
    await peer.sendText(1n, new TextEncoder().encode("still here"));
    assert.deepEqual(peer.of(TextReceived).map((e) => e.text), ["still here"]);
  }
  assert.equal(BULK_HEADER, 16);
});

test("HELLO parsing", () => {
  assert.throws(() => decodeHello(new Uint8Array(5)), (exc) => exc instanceof SessionError && /bad length/.test(exc.message));
  assert.throws(() => decodeHello(concat(u64(1n), u64(0n), u64(0n))), /seq 0/);
});
