// m42d/web/lib/keystore.js: the memory store (Node has no IndexedDB) and the
// IndexedDB store over a small fake (tests/js/fake-idb.js). The real
// IndexedDB runs in Chromium (tests/test_browser_serve.py).

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  IndexedDBKeyStore,
  KeyStoreError,
  MemoryKeyStore,
  RECORD_VERSION,
  openKeyStore,
  recordKey,
} from "../../m42d/web/lib/keystore.js";
import { dh, generateKeyPair, keyPairFromPrivate } from "../../m42d/web/lib/noise.js";
import { FakeIDBFactory } from "./fake-idb.js";

const ROOM = Uint8Array.from({ length: 16 }, (_, i) => i);
const OTHER_ROOM = Uint8Array.from({ length: 16 }, (_, i) => 255 - i);

/** @param {FakeIDBFactory} fake */
const asFactory = (fake) => /** @type {IDBFactory} */ (/** @type {unknown} */ (fake));

/**
 * Whether `pair` is the key pair `expected`, by what DH with a third key gives.
 * @param {import("../../m42d/web/lib/noise.js").KeyPair} pair
 * @param {import("../../m42d/web/lib/noise.js").KeyPair} expected
 */
async function assertSameKey(pair, expected) {
  const third = await generateKeyPair();
  assert.deepEqual(pair.publicKey, expected.publicKey);
  assert.deepEqual(await dh(pair, third.publicKey), await dh(third, expected.publicKey));
}

/** @type {[string, () => Promise<MemoryKeyStore | IndexedDBKeyStore>][]} */
const STORES = [
  ["memory", async () => new MemoryKeyStore()],
  ["indexeddb", async () => openKeyStore({ indexedDB: asFactory(new FakeIDBFactory()) })],
];

for (const [kind, make] of STORES) {
  test(`${kind}: first use has nothing; a static key pair comes back usable and unexportable`, async () => {
    const store = await make();
    assert.equal(await store.loadStatic(ROOM, "A"), null);
    assert.equal(await store.loadPeer(ROOM, "A"), null);
    assert.equal(await store.loadComparedAt(ROOM, "A"), null);
    const pair = await generateKeyPair();
    await store.saveStatic(ROOM, "A", pair);
    const loaded = /** @type {import("../../m42d/web/lib/noise.js").KeyPair} */ (await store.loadStatic(ROOM, "A"));
    assert.ok(Object.isFrozen(loaded));
    assert.equal(loaded.privateKey.extractable, false);
    await assertSameKey(loaded, pair);
    await assert.rejects(crypto.subtle.exportKey("pkcs8", loaded.privateKey));
    // Seats and rooms are kept apart.
    assert.equal(await store.loadStatic(ROOM, "B"), null);
    assert.equal(await store.loadStatic(OTHER_ROOM, "A"), null);
  });

  test(`${kind}: an extractable or foreign key is refused`, async () => {
    const store = await make();
    const extractable = await keyPairFromPrivate(new Uint8Array(32).fill(7), { extractable: true });
    await assert.rejects(store.saveStatic(ROOM, "A", extractable), KeyStoreError);
    const aes = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt"]);
    const foreign = { privateKey: aes, publicKey: new Uint8Array(32) };
    await assert.rejects(store.saveStatic(ROOM, "A", foreign), KeyStoreError);
    assert.equal(await store.loadStatic(ROOM, "A"), null);
  });

  test(`${kind}: a stored static key is never replaced, except after forget()`, async () => {
    const store = await make();
    const first = await generateKeyPair();
    await store.saveStatic(ROOM, "A", first);
    await store.saveStatic(ROOM, "A", first); // the same key again: fine
    await assert.rejects(store.saveStatic(ROOM, "A", await generateKeyPair()), /already has a static key/);
    await assertSameKey(/** @type {any} */ (await store.loadStatic(ROOM, "A")), first);
    await store.forget(ROOM, "A");
    assert.equal(await store.loadStatic(ROOM, "A"), null);
    const second = await generateKeyPair();
    await store.saveStatic(ROOM, "A", second);
    await assertSameKey(/** @type {any} */ (await store.loadStatic(ROOM, "A")), second);
  });

  test(`${kind}: the peer's pin and comparedAt; a new pin clears the comparison`, async () => {
    const store = await make();
    await assert.rejects(store.markCompared(ROOM, "B"), /no peer key/);
    const peer = (await generateKeyPair()).publicKey;
    await store.savePeer(ROOM, "B", peer);
    const pinned = /** @type {Uint8Array} */ (await store.loadPeer(ROOM, "B"));
    assert.deepEqual(pinned, peer);
    pinned[0] ^= 1; // a copy: changing it changes nothing stored
    assert.deepEqual(await store.loadPeer(ROOM, "B"), peer);
    await store.markCompared(ROOM, "B", 1_700_000_000_000);
    assert.equal(await store.loadComparedAt(ROOM, "B"), 1_700_000_000_000);
    await store.savePeer(ROOM, "B", peer.slice()); // the same key: the comparison stands
    assert.equal(await store.loadComparedAt(ROOM, "B"), 1_700_000_000_000);
    const changed = (await generateKeyPair()).publicKey;
    await store.savePeer(ROOM, "B", changed);
    assert.deepEqual(await store.loadPeer(ROOM, "B"), changed);
    assert.equal(await store.loadComparedAt(ROOM, "B"), null);
    await assert.rejects(store.savePeer(ROOM, "B", new Uint8Array(31)), KeyStoreError);
  });

  test(`${kind}: bad room ids and seats are refused`, async () => {
    const store = await make();
    await assert.rejects(store.loadStatic(new Uint8Array(15), "A"), KeyStoreError);
    await assert.rejects(store.loadPeer(ROOM, /** @type {any} */ ("C")), KeyStoreError);
  });
}

test("without IndexedDB the store is memory-only and says so", async () => {
  const store = await openKeyStore({ indexedDB: undefined });
  assert.ok(store instanceof MemoryKeyStore);
  assert.equal(store.persistent, false);
  assert.match(/** @type {string} */ (store.reason), /private window/);
  // Node has no indexedDB of its own: the default is the same fallback.
  assert.equal((await openKeyStore()).persistent, false);
});

test("indexeddb: the keys outlive the page (a second open reads them)", async () => {
  const fake = new FakeIDBFactory();
  const first = await openKeyStore({ indexedDB: asFactory(fake) });
  assert.ok(first instanceof IndexedDBKeyStore);
  assert.equal(first.persistent, true);
  assert.equal(first.reason, null);
  const pair = await generateKeyPair();
  const peer = (await generateKeyPair()).publicKey;
  await first.saveStatic(ROOM, "A", pair);
  await first.savePeer(ROOM, "A", peer);
  await first.markCompared(ROOM, "A", 42);
  first.close();

  const again = await openKeyStore({ indexedDB: asFactory(fake) });
  await assertSameKey(/** @type {any} */ (await again.loadStatic(ROOM, "A")), pair);
  assert.deepEqual(await again.loadPeer(ROOM, "A"), peer);
  assert.equal(await again.loadComparedAt(ROOM, "A"), 42);
  // What is stored: the record of the module's header, the key as a CryptoKey.
  const record = fake.peek(recordKey(ROOM, "A"));
  assert.equal(record.version, RECORD_VERSION);
  assert.ok(record.privateKey instanceof CryptoKey);
  assert.equal(record.privateKey.extractable, false);
  assert.deepEqual(Object.keys(record).sort(), ["comparedAt", "peer", "privateKey", "publicKey", "version"]);
  // The open-time probe left nothing behind.
  assert.equal(fake.peek("probe"), undefined);
});

test("indexeddb: a damaged record is an error, never replaced", async () => {
  const fake = new FakeIDBFactory();
  const store = await openKeyStore({ indexedDB: asFactory(fake) });
  const key = recordKey(ROOM, "A");
  fake.poke(key, { version: RECORD_VERSION, privateKey: null, publicKey: new Uint8Array(3), peer: null, comparedAt: null });
  await assert.rejects(store.loadStatic(ROOM, "A"), /damaged/);
  await assert.rejects(store.saveStatic(ROOM, "A", await generateKeyPair()), /damaged/);
  await assert.rejects(store.savePeer(ROOM, "A", new Uint8Array(32)), /damaged/);
  assert.deepEqual(fake.peek(key).publicKey, new Uint8Array(3));
  await store.forget(ROOM, "A"); // the way out, after a burn
  assert.equal(await store.loadStatic(ROOM, "A"), null);
});

test("indexeddb: a refused change leaves the record as it was", async () => {
  const fake = new FakeIDBFactory();
  const store = await openKeyStore({ indexedDB: asFactory(fake) });
  const pair = await generateKeyPair();
  await store.saveStatic(ROOM, "A", pair);
  const before = fake.peek(recordKey(ROOM, "A"));
  await assert.rejects(store.saveStatic(ROOM, "A", await generateKeyPair()), KeyStoreError);
  assert.deepEqual(fake.peek(recordKey(ROOM, "A")).publicKey, before.publicKey);
});

test("storage that refuses, cannot keep a CryptoKey, or never answers: memory, with the reason", async () => {
  const refusing = new FakeIDBFactory();
  refusing.failOpen = true;
  const a = await openKeyStore({ indexedDB: asFactory(refusing) });
  assert.ok(a instanceof MemoryKeyStore);
  assert.match(/** @type {string} */ (a.reason), /refused/);

  const noClone = new FakeIDBFactory();
  noClone.refuseCryptoKeys = true;
  const b = await openKeyStore({ indexedDB: asFactory(noClone) });
  assert.ok(b instanceof MemoryKeyStore);
  assert.match(/** @type {string} */ (b.reason), /cannot keep keys/);
  assert.ok(noClone.connections.every((db) => db.closed));

  const hanging = new FakeIDBFactory();
  hanging.hangOpen = true;
  const c = await openKeyStore({ indexedDB: asFactory(hanging), timeoutMs: 20 });
  assert.ok(c instanceof MemoryKeyStore);
  assert.match(/** @type {string} */ (c.reason), /did not answer/);
  // The fallback works like any store.
  const pair = await generateKeyPair();
  await c.saveStatic(ROOM, "B", pair);
  await assertSameKey(/** @type {any} */ (await c.loadStatic(ROOM, "B")), pair);
});
