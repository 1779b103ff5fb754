// m42d/web/lib/names.js makes of every name in names-cases.json what its
// Python twin (m42d/client/names.py safe_file_name) makes of it.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { FALLBACK_NAME, MAX_NAME_BYTES, safeFileName } from "../../m42d/web/lib/names.js";
import { ROOT } from "./support.js";

/** @type {{cases: {name: string, safe: string}[]}} */
const shared = JSON.parse(readFileSync(path.join(ROOT, "tests", "js", "names-cases.json"), "utf8"));

test("the shared cases: the same name as the Python twin", () => {
  assert.ok(shared.cases.length > 20);
  for (const { name, safe } of shared.cases) assert.equal(safeFileName(name), safe, JSON.stringify(name));
});

test("whatever the peer sends, the result is one short, visible component", () => {
  const hostile = ["../x", "a/../../b", "\u202e", "/", "\\\\server\\share\\", ".", "x".repeat(5000), "\u0000".repeat(9)];
  for (const name of hostile) {
    const safe = safeFileName(name);
    assert.ok(safe.length > 0);
    assert.ok(!/[/\\\u0000-\u001f\u202e]/.test(safe), safe);
    assert.ok(!safe.startsWith("."), safe);
    assert.ok(new TextEncoder().encode(safe).length <= MAX_NAME_BYTES);
  }
  assert.equal(safeFileName("/"), FALLBACK_NAME);
});
