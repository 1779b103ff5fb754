// m42d/web/lib/sink.js where Node can run it: the memory sink and the
// chooser's refusals. The disk sinks run in Chromium (tests/test_web_page.py).

import assert from "node:assert/strict";
import { test } from "node:test";

import { MEMORY_SINK_CAP, SinkError, SinkRefused, chooseSink, memorySink } from "../../m42d/web/lib/sink.js";

/**
 * @param {import("../../m42d/web/lib/sink.js").FileSink} sink
 * @returns {Promise<number[]>}
 */
async function contents(sink) {
  const file = await sink.close();
  assert.ok(file instanceof File);
  return [...new Uint8Array(await file.arrayBuffer())];
}

test("memory: writes in order make the file", async () => {
  const sink = memorySink("a.bin");
  await sink.write(0, Uint8Array.of(1, 2, 3));
  await sink.write(3, Uint8Array.of(4, 5));
  const file = /** @type {File} */ (await sink.close());
  assert.equal(file.name, "a.bin");
  assert.deepEqual([...new Uint8Array(await file.arrayBuffer())], [1, 2, 3, 4, 5]);
});

test("memory: a resumed transfer overwrites from an earlier offset", async () => {
  const sink = memorySink("a.bin");
  await sink.write(0, Uint8Array.of(1, 2, 3));
  await sink.write(3, Uint8Array.of(4, 5, 6));
  await sink.write(3, Uint8Array.of(7)); // resumed at 3: what followed is gone
  await sink.write(4, Uint8Array.of(8, 9));
  assert.deepEqual(await contents(sink), [1, 2, 3, 7, 8, 9]);
});

test("memory: resuming inside a part keeps its head", async () => {
  const sink = memorySink("a.bin");
  await sink.write(0, Uint8Array.of(1, 2, 3, 4));
  await sink.write(2, Uint8Array.of(9));
  assert.deepEqual(await contents(sink), [1, 2, 9]);
});

test("memory: the written bytes are copied (the engine may reuse its buffer)", async () => {
  const sink = memorySink("a.bin");
  const buffer = Uint8Array.of(1, 2);
  await sink.write(0, buffer);
  buffer[0] = 99;
  assert.deepEqual(await contents(sink), [1, 2]);
});

test("memory: a gap, a write past the cap, a write after close are refused", async () => {
  const sink = memorySink("a.bin", 4);
  await assert.rejects(sink.write(1, Uint8Array.of(1)), SinkError);
  await sink.write(0, Uint8Array.of(1, 2, 3));
  await assert.rejects(sink.write(3, Uint8Array.of(4, 5)), (exc) => exc instanceof SinkError && exc.code === 2);
  await sink.close();
  await assert.rejects(sink.write(3, Uint8Array.of(4)), SinkError);
});

test("memory: abort drops everything", async () => {
  const sink = memorySink("a.bin");
  await sink.write(0, Uint8Array.of(1));
  await sink.abort();
  await assert.rejects(sink.write(1, Uint8Array.of(2)), SinkError);
});

test("chooser: memory when nothing writes to disk, if the file fits", async () => {
  const choice = await chooseSink({ name: "a", size: 10 }, { picker: null, opfs: false });
  assert.equal(choice?.kind, "memory");
});

test("chooser: above the memory cap with no disk, refused before accepting", async () => {
  await assert.rejects(
    chooseSink({ name: "a", size: MEMORY_SINK_CAP + 1 }, { picker: null, opfs: false }),
    (exc) =>
      exc instanceof SinkRefused &&
      exc.code === 2 &&
      exc.message.includes("256 MiB") &&
      exc.message.includes("m42 command line tool"),
  );
  const exact = await chooseSink({ name: "a", size: MEMORY_SINK_CAP }, { picker: null, opfs: false });
  assert.equal(exact?.kind, "memory");
});

test("chooser: a closed save picker means no choice, not a refusal", async () => {
  const picker = {
    async showSaveFilePicker() {
      throw new DOMException("The user aborted a request.", "AbortError");
    },
  };
  assert.equal(await chooseSink({ name: "a", size: 10 }, { picker, opfs: false }), null);
});

test("chooser: a picker refused for want of a click falls back", async () => {
  const picker = {
    async showSaveFilePicker() {
      throw new DOMException("Must be handling a user gesture.", "SecurityError");
    },
  };
  const choice = await chooseSink({ name: "a", size: 10 }, { picker, opfs: false });
  assert.equal(choice?.kind, "memory");
});
