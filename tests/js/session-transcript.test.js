// docs/vectors/session-transcript.json (made by m42d.session) checked as far
// as the protocol cores reach; the session machine itself is not ported yet.
//
// From the transcript's inputs and its deterministic "random" values this
// re-derives the psk, prologue and static keys, replays the three handshake
// messages byte for byte (both roles, with the engine writing them), checks
// the SAS from the handshake hash, and opens every CONTROL DATA record in
// order with the transport keys and Rekey after each, checking the record
// framing. What the records mean (acks, the file offer) and the BULK chunks
// belong to the session machine and are left to its port.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { ascii, concat, fromHex, isAllZero, readU16, readU32, readU64, toHex, u64 } from "../../m42d/web/lib/bytes.js";
import { HandshakeState, PROTOCOL_NAME, keyPairFromPrivate } from "../../m42d/web/lib/noise.js";
import { Wordlist, safetyWords } from "../../m42d/web/lib/sas.js";
import { WORDLIST_PATH, publishedVectors } from "./support.js";

const transcript = publishedVectors("session-transcript.json");

/**
 * The transcript's random source: SHA-256(seed || u64be counter) blocks; each
 * draw takes whole blocks and drops what it does not use (as the Python does).
 * @param {string} seed
 */
function drbg(seed) {
  let counter = 0n;
  return (/** @type {number} */ n) => {
    let out = new Uint8Array(0);
    while (out.length < n) {
      out = concat(out, createHash("sha256").update(concat(ascii(seed), u64(counter))).digest());
      counter += 1n;
    }
    return out.slice(0, n);
  };
}

/**
 * A control record before sealing: type:u8 | length:u16 | body | zero padding to 256.
 * @param {number} type
 * @param {Uint8Array} body
 */
function record(type, body) {
  const raw = concat(Uint8Array.of(type), Uint8Array.of(body.length >> 8, body.length & 0xff), body);
  return concat(raw, new Uint8Array(Math.ceil(raw.length / 256) * 256 - raw.length));
}

/** @param {Uint8Array} plaintext */
function decodeRecord(plaintext) {
  assert.ok(plaintext.length >= 3 && plaintext.length % 256 === 0, "record length");
  const length = readU16(plaintext, 1);
  assert.ok(3 + length <= plaintext.length && isAllZero(plaintext.subarray(3 + length)), "record padding");
  return { type: plaintext[0], body: plaintext.subarray(3, 3 + length) };
}

test("the session transcript's handshake, SAS and sealed records", async () => {
  const roomId = fromHex(transcript.room_id);
  const secret = fromHex(transcript.room_secret);

  // psk = HKDF-SHA256(ikm = R, salt = room_id, info = "m42 psk v1", L = 32)
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  const psk = new Uint8Array(
    await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: roomId, info: ascii("m42 psk v1") }, ikm, 256),
  );
  assert.equal(toHex(psk), transcript.psk);
  const prologue = concat(ascii("m42d/2"), roomId);
  assert.equal(toHex(prologue), transcript.prologue);

  // Draw order: static key, instance, then per handshake the ephemeral and (A) hs_id.
  const drawA = drbg("seat A");
  const drawB = drbg("seat B");
  const staticA = await keyPairFromPrivate(drawA(32));
  const staticB = await keyPairFromPrivate(drawB(32));
  assert.equal(toHex(staticA.publicKey), transcript.static_public_a);
  assert.equal(toHex(staticB.publicKey), transcript.static_public_b);
  const instanceA = drawA(8);
  const instanceB = drawB(8);
  const a = await HandshakeState.create(PROTOCOL_NAME, {
    initiator: true, prologue, s: staticA, e: await keyPairFromPrivate(drawA(32)), psks: [psk],
  });
  const hsId = drawA(4);
  const b = await HandshakeState.create(PROTOCOL_NAME, {
    initiator: false, prologue, s: staticB, e: await keyPairFromPrivate(drawB(32)), psks: [psk],
  });

  const control = transcript.messages.filter((/** @type {any} */ m) => m.lane === "CONTROL");
  const [hs1, hs2, hs3] = control.slice(0, 3).map((/** @type {any} */ m) => fromHex(m.payload));
  assert.deepEqual(control.slice(0, 3).map((/** @type {any} */ m) => m.from), ["A", "B", "A"]);
  const envelope = (/** @type {number} */ kind, /** @type {Uint8Array} */ message) =>
    concat(Uint8Array.of(kind), hsId, message);

  // HS1 and HS2 carry two bytes each: 0x00 (a fresh handshake), session version 2.
  const fresh = Uint8Array.of(0, 2);
  assert.equal(toHex(envelope(1, await a.writeMessage(fresh))), toHex(hs1));
  assert.deepEqual(await b.readMessage(hs1.subarray(5)), fresh);
  assert.equal(toHex(envelope(2, await b.writeMessage(fresh))), toHex(hs2));
  assert.deepEqual(await a.readMessage(hs2.subarray(5)), fresh);
  // HS3 carries A's HELLO: instance, old_count 0, first unacked seq 1.
  const helloA = record(1, concat(instanceA, u64(0n), u64(1n)));
  assert.equal(toHex(envelope(3, await a.writeMessage(helloA))), toHex(hs3));
  assert.deepEqual(await b.readMessage(hs3.subarray(5)), helloA);
  assert.equal(readU32(hs1, 1), readU32(hsId));

  const wordlist = Wordlist.parse(readFileSync(WORDLIST_PATH, "utf8"));
  assert.deepEqual(a.handshakeHash, b.handshakeHash);
  assert.deepEqual(
    await safetyWords(roomId, staticA.publicKey, staticB.publicKey, wordlist),
    transcript.safety_words,
  );

  // Every DATA record opens in order on the receiver's keys, rekeyed after each.
  /** @type {Record<string, number[]>} */
  const types = { A: [], B: [] };
  /** @type {Record<string, Uint8Array[]>} */
  const bodies = { A: [], B: [] };
  for (const message of control.slice(3)) {
    const payload = fromHex(message.payload);
    assert.equal(payload[0], 4, "a DATA envelope");
    const receiver = message.from === "A" ? b : a;
    const { recv } = receiver.split();
    const { type, body } = decodeRecord(await recv.decryptWithAd(new Uint8Array(0), payload.subarray(1)));
    await recv.rekey();
    types[message.from].push(type);
    bodies[message.from].push(body);
  }
  // B's first record on the new keys is its HELLO (key confirmation).
  assert.equal(types.B[0], 1);
  assert.equal(toHex(bodies.B[0]), toHex(concat(instanceB, u64(0n), u64(1n))));
  // A's text, seq 1, final part.
  const text = bodies.A[types.A.indexOf(2)];
  assert.equal(readU64(text), 1n);
  assert.equal(text[8], 1);
  assert.equal(new TextDecoder().decode(text.subarray(9)), transcript.text);
  assert.ok(types.A.length + types.B.length >= 5);
});
