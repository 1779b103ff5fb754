// m42d/web/lib/stream.js against docs/vectors/stream.json (made by
// m42d/crypto/stream.py): the same chunks sealed, the same verdicts and
// messages for every attack scenario.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { concat, fromHex, toBytes, toHex, u64 } from "../../m42d/web/lib/bytes.js";
import { LocalProtocolError, RemoteProtocolError, StreamError } from "../../m42d/web/lib/errors.js";
import {
  CHUNK_SIZE,
  ENCRYPTED_CHUNK_SIZE,
  FileKey,
  MAX_CHUNKS,
  StreamDecryptor,
  StreamEncryptor,
  chunkCount,
  decryptChunk,
  encryptedSize,
} from "../../m42d/web/lib/stream.js";
import { publishedVectors } from "./support.js";

const vectors = publishedVectors("stream.json");

/** @param {Uint8Array} data */
const sha256 = (data) => createHash("sha256").update(data).digest("hex");

/**
 * Byte j is (j + offset) mod 251, as in the vectors.
 * @param {number} size
 * @param {number} [offset]
 */
function pattern(size, offset = 0) {
  return Uint8Array.from({ length: size }, (_, j) => (j + offset) % 251);
}

/** @param {{key: string, salt: string}} json */
const fileKey = (json) => new FileKey(fromHex(json.key), fromHex(json.salt));

/**
 * @param {Uint8Array} sealed
 * @param {{hex?: string, size?: number, sha256?: string}} expected
 */
function assertChunk(sealed, expected, label = "") {
  if (expected.hex !== undefined) assert.equal(toHex(sealed), expected.hex, label);
  else assert.deepEqual([sealed.length, sha256(sealed)], [expected.size, expected.sha256], label);
}

/**
 * A file's chunks as the encryptor makes them.
 * @param {FileKey} key
 * @param {number} size
 */
async function fileChunks(key, size) {
  const enc = await StreamEncryptor.create(key);
  const data = pattern(size);
  const n = Number(chunkCount(BigInt(size)));
  const chunks = [];
  for (let i = 0; i < n; i++) {
    const part = data.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE);
    chunks.push(await enc.encryptChunk(BigInt(i), part, { last: i === n - 1 }));
  }
  return chunks;
}

/**
 * Seal without the encryptor's framing checks (to forge bad framings): HKDF
 * and AES-GCM written out here, independently of the module.
 * @param {FileKey} key
 * @param {bigint} index
 * @param {Uint8Array} plaintext
 * @param {boolean} last
 */
async function forge(key, index, plaintext, last) {
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey("raw", key.key, "HKDF", false, ["deriveBits"]);
  const info = new TextEncoder().encode("m42 file stream v1");
  const raw = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: key.salt, info }, ikm, 256);
  const aes = await subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
  const iv = concat(u64(index, 11), Uint8Array.of(last ? 1 : 0));
  return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv }, aes, toBytes(plaintext)));
}

test("known answers from docs/protocol.md", async () => {
  const kat = vectors.known_answer;
  const key = fileKey(kat);
  const enc = await StreamEncryptor.create(key);
  const hello = await enc.encryptChunk(0n, new TextEncoder().encode("hello"), { last: true });
  assert.equal(toHex(hello), kat.hello);
  assert.equal(toHex(hello), "d2775a7e17bd778cd9b4144f4f291b91066664c863");
  assert.equal(toHex(await enc.encryptChunk(0n, new Uint8Array(0), { last: true })), kat.empty);
  const [c0, c1] = await fileChunks(key, kat.two_chunks.size);
  assertChunk(c0, kat.two_chunks.chunk0);
  assert.equal(toHex(c0.subarray(-16)), kat.two_chunks.chunk0_tag);
  assert.equal(toHex(c1), kat.two_chunks.chunk1);
  // The chunk key itself, through an independent HKDF-then-seal.
  assert.deepEqual(await forge(key, 0n, new TextEncoder().encode("hello"), true), hello);
});

test("sealing: the same bytes as m42d/crypto/stream.py, and they open again", async () => {
  for (const c of vectors.seal) {
    const key = fileKey(c);
    const index = BigInt(c.index);
    const plaintext = pattern(c.plaintext.size, c.plaintext.offset);
    const sealed = await (await StreamEncryptor.create(key)).encryptChunk(index, plaintext, { last: c.last });
    assertChunk(sealed, c.sealed, c.index);
    assert.equal(toHex(sealed.subarray(-16)), c.tag);
    assert.deepEqual(await decryptChunk(key, index, sealed), [plaintext, c.last]);
  }
});

test("files: chunk counts, sizes and every chunk", async () => {
  for (const group of vectors.files) {
    const key = fileKey(group);
    for (const file of group.files) {
      const size = BigInt(file.size);
      assert.equal(chunkCount(size), BigInt(file.chunk_count));
      assert.equal(encryptedSize(size), BigInt(file.encrypted_size));
      const chunks = await fileChunks(key, Number(size));
      assert.equal(chunks.length, file.chunks.length);
      chunks.forEach((chunk, i) => assertChunk(chunk, file.chunks[i], `${file.size}/${i}`));
      const dec = await StreamDecryptor.create(key);
      const out = [];
      for (const chunk of chunks) out.push(await dec.decryptNext(chunk));
      await dec.finish();
      assert.deepEqual(concat(...out), pattern(Number(size)));
    }
  }
});

test("decryption scenarios: the same verdicts and messages as the twin", async () => {
  const { scenarios } = vectors.decrypt;
  const key = fileKey(vectors.decrypt);
  const other = fileKey(vectors.decrypt.other);
  assert.ok(scenarios.length >= 20);
  for (const s of scenarios) {
    const own = await fileChunks(key, s.size);
    const theirs = await fileChunks(other, s.size);
    const dec = await StreamDecryptor.create(key, { start: BigInt(s.start) });
    const results = [];
    for (const op of s.feed) {
      let chunk;
      if ("zeros" in op) chunk = new Uint8Array(op.zeros);
      else if ("forge" in op) chunk = await forge(key, BigInt(op.forge.index), pattern(op.forge.size), op.forge.last);
      else {
        chunk = (op.other ? theirs : own)[op.chunk].slice();
        if ("flip" in op) chunk[op.flip] ^= 0x80;
        if ("cut" in op) chunk = chunk.subarray(0, op.cut);
      }
      try {
        results.push({ plaintext_sha256: sha256(await dec.decryptNext(chunk)), done: dec.done });
      } catch (exc) {
        assert.ok(exc instanceof StreamError && exc instanceof RemoteProtocolError, String(exc));
        results.push({ error: exc.message });
      }
    }
    assert.deepEqual(results, s.results, s.name);
    assert.equal(String(dec.nextIndex), s.next_index, s.name);
    let finish = null;
    try {
      await dec.finish();
    } catch (exc) {
      assert.ok(exc instanceof StreamError);
      finish = exc.message;
    }
    assert.equal(finish, s.finish_error, s.name);
  }
});

test("the encryptor refuses bad framings as a local error", async () => {
  const enc = await StreamEncryptor.create(FileKey.generate());
  /** @type {Array<[bigint, number, boolean, RegExp]>} */
  const cases = [
    [0n, CHUNK_SIZE + 1, true, /more than 262144/],
    [0n, CHUNK_SIZE - 1, false, /must hold exactly 262144/],
    [0n, 0, false, /must hold exactly 262144/],
    [1n, 0, true, /^chunk 1 would be an empty final chunk; make chunk 0 final$/],
    [-1n, 1, true, /outside \[0, 2\*\*64\)/],
    [MAX_CHUNKS, 1, true, /outside/],
    [2n ** 88n, 1, true, /outside/],
  ];
  for (const [index, size, last, message] of cases) {
    await assert.rejects(enc.encryptChunk(index, new Uint8Array(size), { last }), (/** @type {any} */ exc) =>
      exc instanceof LocalProtocolError && message.test(exc.message));
  }
  await assert.rejects(enc.encryptChunk(/** @type {any} */ (0), new Uint8Array(1), { last: true }), LocalProtocolError);
  await assert.rejects(StreamDecryptor.create(FileKey.generate(), { start: -1n }), LocalProtocolError);
  await assert.rejects(decryptChunk(FileKey.generate(), MAX_CHUNKS, new Uint8Array(17)), LocalProtocolError);
  assert.throws(() => chunkCount(-1n), /negative/);
});

test("file keys: lengths checked, random, never shown", () => {
  assert.throws(() => new FileKey(new Uint8Array(31), new Uint8Array(32)), {
    message: "file stream key must be 32 bytes, got 31",
  });
  assert.throws(() => new FileKey(new Uint8Array(32), new Uint8Array(33)), StreamError);
  const [a, b] = [FileKey.generate(), FileKey.generate()];
  assert.notDeepEqual(a.key, b.key);
  assert.notDeepEqual(a.key, a.salt);
  const key = new FileKey(new Uint8Array(32).fill(0xab), new Uint8Array(32).fill(0xcd));
  for (const text of [String(key), JSON.stringify(key), JSON.stringify({ key })]) {
    assert.ok(!text.includes("abab") && !text.includes("cdcd") && !text.includes("171"), text);
  }
});

test("decryptNext calls that are not awaited still open chunks in order", async () => {
  const key = FileKey.generate();
  const chunks = await fileChunks(key, 3 * CHUNK_SIZE + 1);
  const dec = await StreamDecryptor.create(key);
  const parts = await Promise.all(chunks.map((c) => dec.decryptNext(c)));
  await dec.finish();
  assert.deepEqual(concat(...parts), pattern(3 * CHUNK_SIZE + 1));
  assert.equal(chunks[0].length, ENCRYPTED_CHUNK_SIZE);
});
