// m42d/web/ui/format.js: the figures the page shows (sizes as the CLI shows them).

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  formatAgo,
  formatEta,
  formatRate,
  formatSize,
  percent,
  progressLine,
  utf8Length,
} from "../../m42d/web/ui/format.js";

test("sizes use the CLI's binary units and precision", () => {
  assert.equal(formatSize(0), "0 B");
  assert.equal(formatSize(1023), "1023 B");
  assert.equal(formatSize(1024), "1.0 KiB");
  assert.equal(formatSize(1536), "1.5 KiB");
  assert.equal(formatSize(12.34 * 1024 * 1024), "12.3 MiB");
  assert.equal(formatSize(2 ** 30), "1.0 GiB");
  assert.equal(formatSize(5 * 2 ** 40), "5.0 TiB");
  // Never "1024.0 KiB": the next unit.
  assert.equal(formatSize(1024 * 1024 - 1), "1.0 MiB");
  assert.equal(formatSize(-1), "?");
  assert.equal(formatSize(Number.NaN), "?");
});

test("rates", () => {
  assert.equal(formatRate(2.1 * 1024 * 1024), "2.1 MiB/s");
  assert.equal(formatRate(0), "0 B/s");
});

test("time left rounds up and reads naturally", () => {
  assert.equal(formatEta(null), "");
  assert.equal(formatEta(Number.POSITIVE_INFINITY), "");
  assert.equal(formatEta(-3), "");
  assert.equal(formatEta(0), "1 s left");
  assert.equal(formatEta(0.2), "1 s left");
  assert.equal(formatEta(14.1), "15 s left");
  assert.equal(formatEta(60), "1 min left");
  assert.equal(formatEta(125), "2 min 5 s left");
  assert.equal(formatEta(3600), "1 h left");
  assert.equal(formatEta(3600 + 180), "1 h 3 min left");
  assert.equal(formatEta(5 * 86400), "5 days left");
});

test("percent reaches 100 only when done", () => {
  assert.equal(percent(0, 100), 0);
  assert.equal(percent(999, 1000), 99);
  assert.equal(percent(1000, 1000), 100);
  assert.equal(percent(0, 0), 100);
});

test("a progress line in the CLI's order", () => {
  assert.equal(
    progressLine({ done: 3 * 2 ** 20, size: 10 * 2 ** 20, rate: 2 ** 20, eta: 7 }),
    "3.0 MiB of 10.0 MiB (30%), 1.0 MiB/s, 7 s left",
  );
  assert.equal(
    progressLine({ done: 5, size: 10, rate: 1, eta: null }),
    "5 B of 10 B (50%), 1 B/s",
  );
  assert.equal(progressLine({ done: 10, size: 10, rate: 1, eta: 0 }), "10 B of 10 B (100%)");
});

test("how long ago", () => {
  const now = Date.UTC(2026, 0, 10, 12);
  assert.equal(formatAgo(now - 5_000, now), "just now");
  assert.equal(formatAgo(now - 60_000, now), "1 minute ago");
  assert.equal(formatAgo(now - 59 * 60_000, now), "59 minutes ago");
  assert.equal(formatAgo(now - 3600_000, now), "1 hour ago");
  assert.equal(formatAgo(now - 86400_000, now), "yesterday");
  assert.equal(formatAgo(now - 12 * 86400_000, now), "12 days ago");
});

test("UTF-8 length matches TextEncoder, lone surrogates included", () => {
  const encoder = new TextEncoder();
  for (const text of ["", "abc", "é", "€", "😀", "a😀b", "\ud800", "x\udc00y", "\ud800\ud800", "日本語", "\u0000"]) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
  const big = "é".repeat(600_000);
  assert.equal(utf8Length(big), 1_200_000);
});
