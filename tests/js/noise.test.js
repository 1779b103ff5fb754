// m42d/web/lib/noise.js: every *_25519_AESGCM_SHA256 vector the Python engine
// runs (../shared/vectors/, third-party: skipped when absent, fatal under CI),
// then the engine's own rules: turns, failures, low-order points, nonces, keys.

import assert from "node:assert/strict";
import { test } from "node:test";

import { fromHex, toHex } from "../../m42d/web/lib/bytes.js";
import { DecryptError, HandshakeError, LocalProtocolError } from "../../m42d/web/lib/errors.js";
import {
  BASE_PATTERNS,
  CipherState,
  HandshakeAuthError,
  HandshakeState,
  LowOrderPointError,
  MAX_MESSAGE,
  MAX_NONCE,
  NonceExhaustedError,
  PROTOCOL_NAME,
  UnsupportedProtocolError,
  dh,
  generateKeyPair,
  handshakePattern,
  keyPairFromPrivate,
} from "../../m42d/web/lib/noise.js";
import { noiseVectors } from "./support.js";

const SUITE_SUFFIX = "_25519_AESGCM_SHA256";
/** Counts of our suite's vectors in each file (see ../shared/vectors/README.md). */
const EXPECTED_MINIMUM = { "cacophony.txt": 59, "snow.txt": 51 };

const loaded = noiseVectors();
const skip = "skip" in loaded ? loaded.skip : false;

/**
 * @param {string} file
 * @returns {any[]}
 */
function suiteVectors(file) {
  if (!("files" in loaded)) return [];
  return loaded.files[file].filter((/** @type {any} */ v) => v.protocol_name.endsWith(SUITE_SUFFIX));
}

/**
 * @param {any} vector
 * @param {string} prefix
 * @param {boolean} initiator
 */
async function side(vector, prefix, initiator) {
  const key = async (/** @type {string} */ name) =>
    vector[name] ? keyPairFromPrivate(fromHex(vector[name])) : null;
  return HandshakeState.create(vector.protocol_name, {
    initiator,
    prologue: fromHex(vector[`${prefix}_prologue`] ?? ""),
    s: await key(`${prefix}_static`),
    e: await key(`${prefix}_ephemeral`),
    rs: vector[`${prefix}_remote_static`] ? fromHex(vector[`${prefix}_remote_static`]) : null,
    psks: (vector[`${prefix}_psks`] ?? []).map(fromHex),
  });
}

/**
 * Replay one vector; throw AssertionError on the first difference.
 * @param {any} vector
 */
async function runVector(vector) {
  const init = await side(vector, "init", true);
  const resp = await side(vector, "resp", false);
  const messages = vector.messages;
  let index = 0;
  while (!(init.complete && resp.complete)) {
    const [sender, receiver] = index % 2 === 0 ? [init, resp] : [resp, init];
    assert.ok(sender.isMyTurn(), `message ${index}: sender is not due to write`);
    assert.ok(!receiver.isMyTurn());
    const payload = fromHex(messages[index].payload);
    const ciphertext = await sender.writeMessage(payload);
    assert.equal(toHex(ciphertext), messages[index].ciphertext, `handshake message ${index}`);
    assert.deepEqual(await receiver.readMessage(ciphertext), payload, `handshake message ${index}`);
    index += 1;
  }
  assert.deepEqual(init.handshakeHash, resp.handshakeHash);
  if (vector.handshake_hash) assert.equal(toHex(init.handshakeHash), vector.handshake_hash);
  if (vector.resp_static && init.remoteStatic !== null) {
    assert.deepEqual(init.remoteStatic, (await keyPairFromPrivate(fromHex(vector.resp_static))).publicKey);
  }
  if (vector.init_static && resp.remoteStatic !== null) {
    assert.deepEqual(resp.remoteStatic, (await keyPairFromPrivate(fromHex(vector.init_static))).publicKey);
  }
  // Transport: the same alternation continues; one-way patterns only send forwards.
  const oneWay = handshakePattern(vector.protocol_name.split("_")[1]).oneWay;
  const pairs = [init.split(), resp.split()];
  for (let position = index; position < messages.length; position++) {
    const fromInitiator = oneWay || position % 2 === 0;
    const [sending, receiving] = fromInitiator ? pairs : [pairs[1], pairs[0]];
    const payload = fromHex(messages[position].payload);
    const ciphertext = await sending.send.encryptWithAd(new Uint8Array(0), payload);
    assert.equal(toHex(ciphertext), messages[position].ciphertext, `transport ${position}`);
    assert.deepEqual(await receiving.recv.decryptWithAd(new Uint8Array(0), ciphertext), payload);
  }
}

test("every *_25519_AESGCM_SHA256 vector of cacophony and snow", { skip }, async () => {
  /** @type {string[]} */
  const failures = [];
  /** @type {Record<string, number>} */
  const ran = {};
  for (const [file, minimum] of Object.entries(EXPECTED_MINIMUM)) {
    ran[file] = 0;
    for (const vector of suiteVectors(file)) {
      try {
        await runVector(vector);
      } catch (exc) {
        failures.push(`${file}: ${vector.protocol_name}: ${exc}`);
      }
      ran[file] += 1;
    }
    assert.ok(ran[file] >= minimum, `${file}: ran only ${ran[file]} vectors`);
  }
  assert.deepEqual(failures, []);
  assert.ok(ran["cacophony.txt"] + ran["snow.txt"] >= 110);
});

test("the pattern table covers every vector pattern (none skipped)", { skip }, () => {
  const names = new Set(
    Object.keys(EXPECTED_MINIMUM).flatMap((file) =>
      suiteVectors(file).map((v) => v.protocol_name.split("_")[1]),
    ),
  );
  const bases = new Set([...names].map((name) => handshakePattern(name).name.split("psk")[0]));
  assert.deepEqual([...bases].sort(), [...BASE_PATTERNS.keys()].sort());
});

test("the replay itself can fail: a changed expected ciphertext is caught", { skip }, async () => {
  for (const file of Object.keys(EXPECTED_MINIMUM)) {
    const vector = structuredClone(suiteVectors(file)[0]);
    const last = vector.messages[vector.messages.length - 1];
    last.ciphertext = (last.ciphertext.slice(0, 2) !== "00" ? "00" : "01") + last.ciphertext.slice(2);
    await assert.rejects(runVector(vector), (/** @type {any} */ exc) => /transport/.test(exc.message));
  }
});

// ------------------------------------------------------------------ keys

test("X25519 known answer (RFC 7748 6.1) through PKCS#8 and the base point", async () => {
  const alice = await keyPairFromPrivate(fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  assert.equal(toHex(alice.publicKey), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  const shared = await dh(alice, fromHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
  assert.equal(toHex(shared), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  assert.equal(alice.privateKey.extractable, false);
  await assert.rejects(globalThis.crypto.subtle.exportKey("pkcs8", alice.privateKey));
  await assert.rejects(keyPairFromPrivate(new Uint8Array(31)), LocalProtocolError);
});

/** @param {Uint8Array} [psk] @param {Uint8Array} [prologue] */
async function xxpsk3(psk = new Uint8Array(32).fill(7), prologue = new Uint8Array([1, 2])) {
  const [sa, sb] = [await generateKeyPair(), await generateKeyPair()];
  const a = await HandshakeState.create(PROTOCOL_NAME, { initiator: true, prologue, s: sa, psks: [psk] });
  const b = await HandshakeState.create(PROTOCOL_NAME, { initiator: false, prologue, s: sb, psks: [psk] });
  return { a, b, sa, sb };
}

test("XXpsk3 with non-extractable static keys: keys learnt, hashes agree", async () => {
  const { a, b, sa, sb } = await xxpsk3();
  assert.equal(sa.privateKey.extractable, false);
  assert.deepEqual(await b.readMessage(await a.writeMessage(Uint8Array.of(0))), Uint8Array.of(0));
  assert.deepEqual(await a.readMessage(await b.writeMessage(Uint8Array.of(1))), Uint8Array.of(1));
  const hello = new Uint8Array(256).fill(9);
  assert.deepEqual(await b.readMessage(await a.writeMessage(hello)), hello);
  assert.ok(a.complete && b.complete);
  assert.deepEqual(a.remoteStatic, sb.publicKey);
  assert.deepEqual(b.remoteStatic, sa.publicKey);
  assert.deepEqual(a.handshakeHash, b.handshakeHash);
  assert.equal(a.split(), a.split());
  const { send } = a.split();
  const { recv } = b.split();
  for (let i = 0; i < 3; i++) {
    const text = new TextEncoder().encode(`record ${i}`);
    const sealed = await send.encryptWithAd(new Uint8Array(0), text);
    assert.deepEqual(await recv.decryptWithAd(new Uint8Array(0), sealed), text);
    await send.rekey();
    await recv.rekey();
  }
  assert.equal(send.nonce, 3n);
  await assert.rejects(a.writeMessage(), { message: "cannot write: the handshake is complete; use split()" });
});

test("a wrong psk or prologue fails authentication and kills the handshake", async () => {
  /** @param {Promise<unknown>} reading */
  const authFails = (reading) =>
    assert.rejects(reading, (/** @type {any} */ exc) => {
      assert.ok(exc instanceof HandshakeAuthError && exc instanceof HandshakeError && !(exc instanceof DecryptError));
      assert.equal(exc.message, "handshake authentication failed: wrong room secret or tampered message");
      return true;
    });
  // The psk enters only in message 3 (psk3): messages 1 and 2 still pass.
  const { a } = await xxpsk3();
  const { b } = await xxpsk3(new Uint8Array(32).fill(8));
  await b.readMessage(await a.writeMessage());
  await a.readMessage(await b.writeMessage());
  await authFails(b.readMessage(await a.writeMessage()));
  assert.ok(b.failed);
  await assert.rejects(b.writeMessage(), { message: "cannot write: this handshake failed earlier; start a new one" });
  // The prologue is in h from the start, which message 1's tag covers.
  const other = await xxpsk3(undefined, Uint8Array.of(9));
  const first = await xxpsk3();
  await authFails(other.b.readMessage(await first.a.writeMessage()));
  assert.ok(other.b.failed);
});

test("turns, sizes and a refused oversized payload", async () => {
  const { a, b } = await xxpsk3();
  await assert.rejects(a.readMessage(new Uint8Array(48)), {
    message: "cannot read handshake message 1: it is this side's turn to write",
  });
  await assert.rejects(b.writeMessage(), {
    message: "cannot write handshake message 1: it is this side's turn to read",
  });
  await assert.rejects(a.writeMessage(new Uint8Array(MAX_MESSAGE - 47)), LocalProtocolError);
  assert.ok(!a.failed && a.isMyTurn()); // refused before any state changed
  const m1 = await a.writeMessage(new Uint8Array(MAX_MESSAGE - 48));
  assert.equal(m1.length, MAX_MESSAGE);
  await b.readMessage(m1);
  const m2 = await b.writeMessage();
  await assert.rejects(a.readMessage(m2.subarray(0, 95)), {
    message: "handshake message 2 too short: 95 < 96 bytes",
  });
  assert.ok(a.failed);
  const fresh = await xxpsk3();
  await assert.rejects(fresh.b.readMessage(new Uint8Array(MAX_MESSAGE + 1)), HandshakeError);
  await assert.rejects(HandshakeState.create(PROTOCOL_NAME, { initiator: true, psks: [new Uint8Array(32)] }), {
    message: "pattern XXpsk3 needs this side's static key (s)",
  });
  await assert.rejects(
    HandshakeState.create(PROTOCOL_NAME, { initiator: true, s: await generateKeyPair(), psks: [] }),
    { message: "pattern XXpsk3 needs 1 psk(s), got 0" },
  );
  assert.throws(() => fresh.a.handshakeHash, LocalProtocolError);
  assert.throws(() => fresh.a.split(), LocalProtocolError);
});

test("low-order points are refused as soon as they are read", async () => {
  const lowOrder = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  ];
  for (const point of lowOrder) {
    const { b } = await xxpsk3();
    const m1 = new Uint8Array(48);
    m1.set(fromHex(point));
    await assert.rejects(b.readMessage(m1), LowOrderPointError, point);
    assert.ok(b.failed);
    await assert.rejects(dh(await generateKeyPair(), fromHex(point)), LowOrderPointError);
    await assert.rejects(
      HandshakeState.create("Noise_NK_25519_AESGCM_SHA256", { initiator: true, rs: fromHex(point) }),
      LowOrderPointError,
    );
  }
});

test("protocol names outside the suite are refused with the twin's messages", async () => {
  /** @type {Array<[string, string]>} */
  const cases = [
    ["Noise_XX_448_AESGCM_SHA256", "unsupported DH function '448' in 'Noise_XX_448_AESGCM_SHA256' (supported: 25519)"],
    ["Noise_XX_25519_ChaChaPoly_SHA256", "unsupported cipher function 'ChaChaPoly' in 'Noise_XX_25519_ChaChaPoly_SHA256' (supported: AESGCM)"],
    ["Noise_XX_25519_AESGCM_BLAKE2s", "unsupported hash function 'BLAKE2s' in 'Noise_XX_25519_AESGCM_BLAKE2s' (supported: SHA256)"],
    ["Noise_QQ_25519_AESGCM_SHA256", "unknown handshake pattern 'QQ'"],
    ["Noise_XXfallback_25519_AESGCM_SHA256", "unsupported pattern modifier 'fallback' in 'XXfallback' (only pskN)"],
    ["Noise_XXpsk1+psk1_25519_AESGCM_SHA256", "repeated modifier 'psk1' in 'XXpsk1+psk1'"],
    ["Noise_NNpsk3_25519_AESGCM_SHA256", "'psk3' in 'NNpsk3': pattern has only 2 messages"],
    ["Noise_XX_25519_AESGCM", "malformed Noise protocol name 'Noise_XX_25519_AESGCM' (want Noise_<pattern>_<dh>_<cipher>_<hash>)"],
  ];
  for (const [name, message] of cases) {
    await assert.rejects(HandshakeState.create(name, { initiator: true }), (/** @type {any} */ exc) => {
      assert.ok(exc instanceof UnsupportedProtocolError && exc instanceof LocalProtocolError);
      assert.equal(exc.message, message);
      return true;
    });
  }
  assert.deepEqual(handshakePattern("XXpsk0+psk3").messages.map((m) => m.tokens.join(",")), [
    "psk,e",
    "e,ee,s,es",
    "s,se,psk",
  ]);
});

// ------------------------------------------------------------------ CipherState

test("CipherState: nonces advance only on success, 2^64-1 is reserved", async () => {
  const key = new Uint8Array(32).fill(1);
  const sender = await CipherState.create(key);
  const receiver = await CipherState.create(key);
  const ad = Uint8Array.of(1);
  const sealed = await sender.encryptWithAd(ad, Uint8Array.of(42));
  const tampered = sealed.slice();
  tampered[0] ^= 1;
  await assert.rejects(receiver.decryptWithAd(ad, tampered), (/** @type {any} */ exc) =>
    exc instanceof DecryptError && exc.message === "message authentication failed (wrong key or tampered)");
  await assert.rejects(receiver.decryptWithAd(Uint8Array.of(2), sealed), DecryptError);
  await assert.rejects(receiver.decryptWithAd(ad, new Uint8Array(15)), DecryptError);
  assert.equal(receiver.nonce, 0n);
  assert.deepEqual(await receiver.decryptWithAd(ad, sealed), Uint8Array.of(42));
  assert.equal(receiver.nonce, 1n);
  await assert.rejects(receiver.decryptWithAd(ad, new Uint8Array(MAX_MESSAGE + 1)), DecryptError);
  await assert.rejects(sender.encryptWithAd(ad, new Uint8Array(MAX_MESSAGE - 15)), LocalProtocolError);
  await sender.setNonce(MAX_NONCE);
  await assert.rejects(sender.encryptWithAd(ad, Uint8Array.of(1)), NonceExhaustedError);
  await receiver.setNonce(MAX_NONCE);
  await assert.rejects(receiver.decryptWithAd(ad, sealed), NonceExhaustedError);
  await assert.rejects(sender.setNonce(MAX_NONCE + 1n), LocalProtocolError);
  await sender.rekey(); // Rekey uses 2^64-1 itself and keeps the nonce
  assert.equal(sender.nonce, MAX_NONCE);
  const empty = await CipherState.create();
  assert.deepEqual(await empty.encryptWithAd(ad, Uint8Array.of(5)), Uint8Array.of(5));
  await assert.rejects(empty.rekey(), LocalProtocolError);
  await assert.rejects(CipherState.create(new Uint8Array(16)), LocalProtocolError);
});

test("CipherState: rekey is k' = ENCRYPT(k, 2^64-1, '', 0^32)[0:32]", async () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const aes = await globalThis.crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"]);
  const iv = fromHex("00000000ffffffffffffffff");
  const next = new Uint8Array(await globalThis.crypto.subtle.encrypt({ name: "AES-GCM", iv }, aes, new Uint8Array(32))).subarray(0, 32);
  const cs = await CipherState.create(key);
  await cs.rekey();
  const expected = await (await CipherState.create(next)).encryptWithAd(new Uint8Array(0), Uint8Array.of(1, 2, 3));
  assert.deepEqual(await cs.encryptWithAd(new Uint8Array(0), Uint8Array.of(1, 2, 3)), expected);
});

test("calls that are not awaited still run in call order", async () => {
  const key = new Uint8Array(32).fill(3);
  const sender = await CipherState.create(key);
  const receiver = await CipherState.create(key);
  const ad = new Uint8Array(0);
  const texts = [1, 2, 3, 4].map((n) => Uint8Array.of(n));
  const sealed = await Promise.all(texts.flatMap((t) => [sender.encryptWithAd(ad, t), sender.rekey()]));
  const records = sealed.filter((x) => x instanceof Uint8Array);
  const opened = await Promise.all(records.flatMap((r) => [receiver.decryptWithAd(ad, r), receiver.rekey()]));
  assert.deepEqual(opened.filter((x) => x instanceof Uint8Array), texts);
  assert.equal(receiver.nonce, 4n);
  // A handshake driven without awaits: each step still sees the one before.
  const { a, b } = await xxpsk3();
  const m1 = a.writeMessage();
  const wrongTurn = a.writeMessage();
  await assert.rejects(wrongTurn, LocalProtocolError);
  await b.readMessage(await m1);
  assert.ok(!a.failed);
});

test("an all-zero X25519 result is refused even where WebCrypto returns it", async () => {
  // Node and Chromium throw for it; engines that do not would hand back zeros.
  const subtle = /** @type {any} */ (globalThis.crypto.subtle);
  const pair = await generateKeyPair();
  const peer = (await generateKeyPair()).publicKey;
  subtle.deriveBits = async () => new ArrayBuffer(32);
  try {
    await assert.rejects(dh(pair, peer), LowOrderPointError);
  } finally {
    delete subtle.deriveBits;
  }
  assert.equal((await dh(pair, peer)).length, 32);
});
