// m42d/web/lib/sas.js against docs/vectors/sas.json (made by m42d/crypto/sas.py),
// with the word list the Python package ships.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { fromHex } from "../../m42d/web/lib/bytes.js";
import { CryptoError, LocalProtocolError } from "../../m42d/web/lib/errors.js";
import { Wordlist, WordlistError, formatSas, sasWords } from "../../m42d/web/lib/sas.js";
import { WORDLIST_PATH, publishedVectors } from "./support.js";

const vectors = publishedVectors("sas.json");
const wordlistBytes = readFileSync(WORDLIST_PATH);
const wordlist = Wordlist.parse(wordlistBytes.toString("utf8"));

test("the shipped word list is the one the vectors were made with", () => {
  assert.equal(createHash("sha256").update(wordlistBytes).digest("hex"), vectors.wordlist.sha256);
  assert.equal(wordlist.words.length, vectors.wordlist.size);
  assert.equal(wordlist.words[0], vectors.wordlist.first);
  assert.equal(wordlist.words.at(-1), vectors.wordlist.last);
  assert.ok(Object.isFrozen(wordlist.words));
});

test("the same words as m42d/crypto/sas.py for every published hash", async () => {
  assert.ok(vectors.cases.length >= 60);
  for (const c of vectors.cases) {
    const words = await sasWords(fromHex(c.hash), wordlist);
    assert.deepEqual(words, c.words, c.hash);
    assert.deepEqual(words, c.indexes.map((/** @type {number} */ i) => wordlist.words[i]), c.hash);
  }
});

test("the known answers of docs/protocol.md", async () => {
  assert.equal(formatSas(await sasWords(new Uint8Array(32), wordlist)), "unengaged startling parched unawake boundless");
  const counting = Uint8Array.from({ length: 32 }, (_, i) => i);
  assert.equal(formatSas(await sasWords(counting, wordlist)), "flashy coyness pampered graceless dial");
  assert.equal(formatSas([]), "");
});

test("a handshake hash of another length, or an unchecked list, is a caller error", async () => {
  for (const size of [0, 31, 33, 64]) {
    await assert.rejects(sasWords(new Uint8Array(size), wordlist), (/** @type {any} */ exc) =>
      exc instanceof LocalProtocolError && exc.message === `handshake hash must be 32 bytes, got ${size}`);
  }
  await assert.rejects(sasWords(new Uint8Array(32), /** @type {any} */ ([...wordlist.words])), LocalProtocolError);
});

test("a damaged word list is refused as the twin refuses it", () => {
  const words = (/** @type {number} */ n) => Array.from({ length: n }, (_, i) => `w${i}`);
  /** @type {Array<[string, RegExp]>} */
  const cases = [
    ["abacus\n".repeat(10), /has 10 lines, expected 7776/],
    [Array(7776).fill("abacus").join("\n"), /duplicate/],
    [[...words(7775), " pad"].join("\n"), /empty or padded/],
    [[...words(7775), "two words"].join("\n"), /empty or padded/],
    [[...words(7775), "tab\t"].join("\n"), /empty or padded/],
    [[...words(7775), ""].join("\n") + "\n\n", /empty or padded|7776/],
    ["", /has 0 lines/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => Wordlist.parse(text), (/** @type {any} */ exc) =>
      exc instanceof WordlistError && !(exc instanceof CryptoError) && message.test(exc.message));
  }
  // Line breaks are Python's splitlines(): \r\n is one, a final one adds no line.
  assert.equal(Wordlist.parse(words(7776).join("\r\n") + "\r\n").words.length, 7776);
  assert.throws(() => Wordlist.parse(words(7775).join("\n") + "\n\u2028"), /7776|padded/);
});
