// m42d/web/ui/qr.js: a Link B fits the QR sizes docs/protocol.md promises.
// (tests/test_web_qr.py compares the matrices with segno's.)

import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_LINK_LENGTH } from "../../m42d/web/lib/link.js";
import { QUIET_ZONE, qrMatrix, qrPathData } from "../../m42d/web/ui/qr.js";
import { publishedVectors } from "./support.js";

const kat = publishedVectors("links.json").known_answer;

test("a link without a pin (155 characters) is version 9, with a pin (199) version 10", () => {
  // The published links: wss://relay.example.org, seat B without a pin, seat A with one
  // (a Link B with a pin has the same length).
  assert.equal(kat.link_b_no_pin.length, 155);
  assert.equal(kat.link_a.length, 199);
  const plain = qrMatrix(kat.link_b_no_pin);
  assert.equal(plain.version, 9);
  assert.equal(plain.size, 53);
  assert.equal(qrMatrix(kat.link_a).version, 10);
  assert.equal(qrMatrix("w".repeat(213)).version, 10); // version 10-M holds 213 bytes
  assert.equal(qrMatrix("w".repeat(214)).version, 11);
});

test("the longest link a parser accepts still encodes", () => {
  assert.ok(qrMatrix("w".repeat(MAX_LINK_LENGTH)).version <= 40);
});

test("non-ASCII text is encoded as UTF-8 bytes", () => {
  // 70 x "é" = 140 bytes: version 7 at M holds 122 bytes, version 8 holds 152.
  assert.equal(qrMatrix("é".repeat(70)).version, 8);
});

test("the path covers exactly the dark modules, inside the quiet zone", () => {
  const matrix = qrMatrix("https://relay.example.org#m42.1.B.test");
  const d = qrPathData(matrix);
  const dark = new Set();
  for (const [, x, y, w] of d.matchAll(/M(\d+) (\d+)h(\d+)v1h-\d+z/g)) {
    for (let i = 0; i < Number(w); i++) dark.add(`${Number(x) + i - QUIET_ZONE},${Number(y) - QUIET_ZONE}`);
  }
  let expected = 0;
  for (let y = 0; y < matrix.size; y++) {
    for (let x = 0; x < matrix.size; x++) {
      if (matrix.dark[y][x]) {
        expected++;
        assert.ok(dark.has(`${x},${y}`), `${x},${y}`);
      }
    }
  }
  assert.equal(dark.size, expected);
});
