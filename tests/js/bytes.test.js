// m42d/web/lib/bytes.js and errors.js: encodings, integers, equality, the error tree.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Base64urlError,
  concat,
  equalBytes,
  fromBase64url,
  fromHex,
  isAllZero,
  readU16,
  readU32,
  readU64,
  toBase64url,
  toHex,
  u16,
  u32,
  u64,
} from "../../m42d/web/lib/bytes.js";
import {
  CryptoError,
  DecryptError,
  HandshakeError,
  LocalProtocolError,
  M42Error,
  RemoteProtocolError,
  StreamError,
} from "../../m42d/web/lib/errors.js";
import {
  HandshakeAuthError,
  LowOrderPointError,
  NonceExhaustedError,
} from "../../m42d/web/lib/noise.js";

test("base64url round trips every length and matches Node's encoder", () => {
  for (let n = 0; n < 70; n++) {
    const data = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
    const text = toBase64url(data);
    assert.equal(text, Buffer.from(data).toString("base64url"));
    assert.deepEqual(fromBase64url(text), data);
  }
});

test("base64url accepts exactly one spelling", () => {
  /** @type {Array<[string, string]>} */
  const cases = [
    ["AQ==", "padding"],
    ["A=", "padding"],
    ["AQ+/", "alphabet"],
    ["AQ E", "alphabet"],
    ["A", "alphabet"],
    ["AQEAE", "alphabet"],
    ["AQ\u00e9A", "alphabet"],
    ["\u{1f600}AA", "alphabet"],
    ["AR", "trailing-bits"], // 0x01 is "AQ"; "AR" sets an unused bit
    ["AQF", "trailing-bits"],
    ["y_ui9owqc_1LNzX681Ir7h", "trailing-bits"],
  ];
  for (const [text, reason] of cases) {
    assert.throws(
      () => fromBase64url(text, "seat token"),
      (/** @type {any} */ exc) => exc instanceof Base64urlError && exc.reason === reason,
      text,
    );
  }
  assert.throws(() => fromBase64url("AQ=", "ticket"), {
    message: "ticket must be base64url without '=' padding",
  });
  assert.throws(() => fromBase64url("!", "ticket"), { message: "ticket is not valid base64url" });
  assert.throws(() => fromBase64url("AR", "ticket"), {
    message: "ticket is not valid base64url (non-zero trailing bits)",
  });
  assert.deepEqual(fromBase64url(""), new Uint8Array(0));
});

test("hex round trips and refuses odd or non-hex text", () => {
  const data = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(toHex(data), Buffer.from(data).toString("hex"));
  assert.deepEqual(fromHex(toHex(data)), data);
  assert.deepEqual(fromHex("ABcd"), Uint8Array.of(0xab, 0xcd));
  for (const bad of ["a", "zz", "0x00", "00 "]) assert.throws(() => fromHex(bad), RangeError);
});

test("big-endian integers, u64 as BigInt", () => {
  assert.deepEqual(u16(0x0102), Uint8Array.of(1, 2));
  assert.deepEqual(u32(0xdeadbeef), Uint8Array.of(0xde, 0xad, 0xbe, 0xef));
  assert.deepEqual(u64(0x0102030405060708n), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
  assert.deepEqual(u64(1n, 11), Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1));
  const max = (1n << 64n) - 1n;
  assert.equal(readU64(u64(max)), max);
  assert.equal(readU64(u64(2n ** 53n + 1n)), 2n ** 53n + 1n); // no rounding through Number
  assert.equal(readU16(Uint8Array.of(9, 1, 2), 1), 0x0102);
  assert.equal(readU32(u32(4294967295)), 4294967295);
  assert.throws(() => u16(65536), RangeError);
  assert.throws(() => u32(-1), RangeError);
  assert.throws(() => u32(1.5), RangeError);
  assert.throws(() => u64(1n << 64n), RangeError);
  assert.throws(() => u64(-1n), RangeError);
  assert.throws(() => u64(/** @type {any} */ (5)), RangeError);
  assert.throws(() => readU64(new Uint8Array(7)), RangeError);
  assert.throws(() => readU16(new Uint8Array(2), 1), RangeError);
});

test("concat, equality and zero checks", () => {
  assert.deepEqual(concat(Uint8Array.of(1), new Uint8Array(0), Uint8Array.of(2, 3)), Uint8Array.of(1, 2, 3));
  assert.ok(equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2)));
  assert.ok(!equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 3)));
  assert.ok(!equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 0)));
  assert.ok(isAllZero(new Uint8Array(32)));
  const one = new Uint8Array(32);
  one[31] = 1;
  assert.ok(!isAllZero(one));
});

test("instanceof follows the Python hierarchy: one parent per class", () => {
  const auth = new HandshakeAuthError("x");
  assert.ok(auth instanceof HandshakeAuthError);
  assert.ok(auth instanceof HandshakeError);
  assert.ok(!(auth instanceof DecryptError), "a HandshakeError only, as in the twin");
  assert.ok(auth instanceof CryptoError);
  assert.ok(auth instanceof RemoteProtocolError);
  assert.ok(auth instanceof M42Error);
  assert.ok(auth instanceof Error);
  assert.ok(!(auth instanceof LocalProtocolError));
  assert.ok(!(auth instanceof StreamError));
  assert.ok(!(new LowOrderPointError("x") instanceof DecryptError));
  assert.ok(new LowOrderPointError("x") instanceof RemoteProtocolError);
  const nonce = new NonceExhaustedError("x");
  assert.ok(nonce instanceof LocalProtocolError);
  assert.ok(!(nonce instanceof CryptoError), "a caller's bug, not something that arrived");
  assert.ok(!(nonce instanceof RemoteProtocolError));
  assert.ok(new StreamError("x") instanceof RemoteProtocolError);
  assert.ok(!(new DecryptError("x") instanceof HandshakeError));
  assert.ok(!(new Error("x") instanceof M42Error));
  assert.ok(!(/** @type {unknown} */ (null) instanceof M42Error));
  assert.equal(auth.name, "HandshakeAuthError");
  assert.equal(new DecryptError("m", { cause: auth }).cause, auth);
});
